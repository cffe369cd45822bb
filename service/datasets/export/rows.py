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
    """The split's rows in row order, `batch_rows` at a time, from a server-side cursor."""
    query = (
        select(DatasetRow.question, DatasetRow.answer, DatasetRow.system)
        .where(DatasetRow.dataset_id == dataset_id, DatasetRow.split == split)
        .order_by(DatasetRow.row_index)
    )
    with engine.connect() as conn:
        result = conn.execution_options(stream_results=True, yield_per=batch_rows).execute(query)
        for part in result.partitions():
            questions, answers, systems = zip(*part, strict=True)
            yield pa.RecordBatch.from_arrays(
                [
                    pa.array(questions, pa.string()),
                    pa.array(answers, pa.string()),
                    pa.array(systems, pa.string()),
                ],
                schema=FLAT_SCHEMA,
            )
