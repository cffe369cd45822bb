"""Reading a version's rows from Postgres as flat Arrow batches (server-side cursor, bounded memory)."""

from __future__ import annotations

from collections.abc import Iterator

import pyarrow as pa
from sqlalchemy import Connection, Engine, exists, func, select

from service.datasets.export.formats import FLAT_SCHEMA
from service.db.models import DatasetRow

DEFAULT_BATCH_ROWS = 20_000


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


def flat_batches(
    engine: Engine, dataset_id: int, split: str, batch_rows: int = DEFAULT_BATCH_ROWS
) -> Iterator[pa.RecordBatch]:
    """The split's rows in row order, `batch_rows` at a time, from a server-side cursor.

    Straight on the psycopg connection: one `FETCH FORWARD batch_rows` round trip per batch and
    plain tuples, with no per-row result objects in between.
    """
    pooled = engine.raw_connection()
    try:
        connection = pooled.driver_connection
        assert connection is not None
        with connection.cursor(name=f"hardlabel_export_{dataset_id}_{split}") as cursor:
            cursor.execute(
                "SELECT question, answer, system FROM dataset_row "
                "WHERE dataset_id = %s AND split = %s ORDER BY row_index",
                (dataset_id, split),
            )
            while rows := cursor.fetchmany(batch_rows):
                questions, answers, systems = zip(*rows, strict=True)
                yield pa.RecordBatch.from_arrays(
                    [
                        pa.array(questions, pa.string()),
                        pa.array(answers, pa.string()),
                        pa.array(systems, pa.string()),
                    ],
                    schema=FLAT_SCHEMA,
                )
        connection.rollback()  # read only: end the cursor's transaction
    finally:
        pooled.close()
