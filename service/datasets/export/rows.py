"""Reading a version's rows from Postgres as flat Arrow batches (COPY as CSV, bounded memory)."""

from __future__ import annotations

import io
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

import pyarrow as pa
from psycopg import sql
from sqlalchemy import Connection, Engine, exists, func, select

from service.datasets.export.formats import FLAT_SCHEMA, PROVENANCE_SCHEMA
from service.datasets.export.soft_labels import SOURCE_COLUMN as SOFT_LABEL_SOURCE
from service.db.models import DatasetRow

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer, WriteableBuffer

# Arrow batches of about this many bytes of CSV (tens of thousands of typical rows).
DEFAULT_BATCH_BYTES = 8 << 20
# SQL: the longest teacher model name of any job (how long a provenance row's teacher column can be).
LONGEST_TEACHER_MODEL = (
    "coalesce((SELECT max(octet_length(t->>'model')) FROM job, jsonb_array_elements(job.teachers) t), 0)"
)


def split_sizes(conn: Connection, dataset_id: int) -> dict[str, int]:
    """Rows per split, in the order exports write them (train first)."""
    rows = conn.execute(
        select(DatasetRow.split, func.count())
        .where(DatasetRow.dataset_id == dataset_id)
        .group_by(DatasetRow.split)
    ).all()
    sizes = {split: int(n) for split, n in rows}
    return {split: sizes[split] for split in ("train", "test") if sizes.get(split)}


def has_system(conn: Connection, dataset_id: int) -> bool:
    return bool(
        conn.scalar(
            select(exists().where(DatasetRow.dataset_id == dataset_id, DatasetRow.system.is_not(None)))
        )
    )


class CopyStream(io.RawIOBase):
    """A read-only file over the chunks of a `COPY … TO STDOUT`, for pyarrow's streaming CSV reader."""

    def __init__(self, chunks: Iterator[ReadableBuffer]) -> None:
        self._chunks = chunks
        self._pending = memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer) -> int:
        view = memoryview(buffer).cast("B")
        filled = 0
        while filled < len(view):
            if not self._pending:
                chunk = next(self._chunks, None)
                if chunk is None:
                    break
                self._pending = memoryview(bytes(chunk))  # the driver may reuse its buffer
            n = min(len(view) - filled, len(self._pending))
            view[filled : filled + n] = self._pending[:n]
            self._pending = self._pending[n:]
            filled += n
        return filled


def copy_batches(
    engine: Engine,
    query: sql.Composable,
    schema: pa.Schema,
    *,
    longest: sql.Composable,
    setup: Sequence[sql.Composable] = (),
    batch_bytes: int = DEFAULT_BATCH_BYTES,
) -> Iterator[pa.RecordBatch]:
    """`COPY (query) TO STDOUT` in CSV as Arrow batches of `schema`, of about `batch_bytes` of data.

    Parsed by pyarrow's streaming CSV reader: no Python object per row or per value, and memory
    bounded by one batch. In Postgres' CSV a NULL is an unquoted empty field and an empty string a
    quoted one, which is how the reader tells them apart. `setup` statements run first in the same
    (read-only, rolled back) transaction, e.g. to fill a temporary table; `longest` is a query for
    the byte length of the longest row's text.
    """
    import pyarrow.csv as pacsv

    names = schema.names
    pooled = engine.raw_connection()
    try:
        connection = pooled.driver_connection
        assert connection is not None
        with connection.cursor() as cursor:
            for statement in setup:
                cursor.execute(statement)
            # The reader cannot split a row across blocks: a block must hold the longest row, with
            # room for CSV's doubled quotes.
            cursor.execute(longest)
            longest_row = (cursor.fetchone() or (None,))[0] or 0
            block_size = max(batch_bytes, 2 * int(longest_row) + 64 + 32 * len(names))
            copy_query = sql.SQL("COPY ({}) TO STDOUT WITH (FORMAT csv)").format(query)
            with cursor.copy(copy_query) as copy:
                reader = pacsv.open_csv(
                    CopyStream(iter(copy)),
                    read_options=pacsv.ReadOptions(column_names=names, block_size=block_size),
                    parse_options=pacsv.ParseOptions(newlines_in_values=True),
                    convert_options=pacsv.ConvertOptions(
                        column_types={field.name: field.type for field in schema},
                        strings_can_be_null=True,
                        quoted_strings_can_be_null=False,
                        null_values=[""],
                    ),
                )
                for batch in reader:
                    yield pa.RecordBatch.from_arrays(batch.columns, schema=schema)
        connection.rollback()  # read only: end the COPY's transaction
    finally:
        pooled.close()


def flat_batches(
    engine: Engine,
    dataset_id: int,
    split: str,
    batch_bytes: int = DEFAULT_BATCH_BYTES,
    *,
    provenance: bool = False,
    soft_labels: bool = False,
) -> Iterator[pa.RecordBatch]:
    """The split's rows in row order, as FLAT_SCHEMA Arrow batches of about `batch_bytes` of data.

    With `provenance`, also PROVENANCE_SCHEMA's columns: the row's source (teacher |
    ground_truth), sample id, the job id frozen with it, the model of the sample's teacher and its
    item index (null where the sample is gone). A ground-truth row has no sample and no teacher;
    one taken from seed data names the job and item index its reference came from.

    With `soft_labels`, last a `soft_labels` column: the sample's stored top-k bytes as Postgres'
    hex text (null for a row without a sample, without soft labels, or whose answer was edited).
    """
    where = sql.SQL("r.dataset_id = {} AND r.split = {}").format(sql.Literal(dataset_id), sql.Literal(split))
    columns = [sql.SQL("r.question, r.answer, r.system")]
    joins: list[sql.Composable] = []
    fields = list(FLAT_SCHEMA)
    extra_length: list[sql.Composable] = []
    if provenance:
        columns.append(
            sql.SQL(
                "r.source, r.sample_id, CAST(r.extra->>'job_id' AS bigint), "
                "CASE WHEN r.source = 'teacher' "
                "THEN j.teachers -> coalesce(s.teacher_index, 0) ->> 'model' END, "
                "coalesce(s.item_index, CAST(r.extra->>'item_index' AS bigint))"
            )
        )
        joins.append(sql.SQL("LEFT JOIN job j ON j.id = CAST(r.extra->>'job_id' AS bigint)"))
        fields += list(PROVENANCE_SCHEMA)
        extra_length.append(sql.SQL(f" + {LONGEST_TEACHER_MODEL}"))
    if soft_labels:
        columns.append(sql.SQL("CASE WHEN s.edited_answer IS NULL THEN s.soft_labels END"))
        fields.append(pa.field(SOFT_LABEL_SOURCE, pa.string()))
        # In CSV a bytea is "\\x" and two hex digits a byte.
        extra_length.append(
            sql.SQL(
                " + 2 + 2 * coalesce((SELECT max(octet_length(s.soft_labels)) FROM dataset_row r "
                "JOIN sample s ON s.id = r.sample_id WHERE {}), 0)"
            ).format(where)
        )
    if provenance or soft_labels:
        joins.insert(0, sql.SQL("LEFT JOIN sample s ON s.id = r.sample_id"))
    query = sql.SQL("SELECT {} FROM dataset_row r {} WHERE {} ORDER BY r.row_index").format(
        sql.SQL(", ").join(columns), sql.SQL(" ").join(joins), where
    )
    longest = sql.SQL(
        "SELECT max(octet_length(r.question) + coalesce(octet_length(r.answer), 0) "
        "+ coalesce(octet_length(r.system), 0)){} FROM dataset_row r WHERE {}"
    ).format(sql.SQL("").join(extra_length), where)
    return copy_batches(engine, query, pa.schema(fields), longest=longest, batch_bytes=batch_bytes)
