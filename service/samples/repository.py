"""Sample rows: keyset pages and single rows."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import ColumnElement, select, text
from sqlalchemy.orm import Session, defer

from service.db.models import Sample


def list_samples_after(
    session: Session, conditions: Sequence[ColumnElement[bool]], after_id: int, limit: int
) -> list[Sample]:
    """Up to `limit` samples with id > after_id matching every condition, by id.

    Keyset on the primary key: a page never repeats or skips a row that existed when paging
    started, whatever is inserted meanwhile (new rows get larger ids).
    """
    query = (
        select(Sample)
        .where(Sample.id > after_id, *conditions)
        .order_by(Sample.id)
        .limit(limit)
        # Lists never show these; raiseload turns an accidental per-row load into an error.
        .options(
            defer(Sample.search, raiseload=True),
            defer(Sample.inputs, raiseload=True),
            defer(Sample.provenance, raiseload=True),
        )
    )
    # psycopg prepares repeated statements; Postgres may then reuse one generic plan for every cursor
    # and filter value, which for rare conditions (a tag) scans all matches of the whole table per
    # page (~700 ms at 1M samples, bench/curation.py). Plan each page for its own values.
    session.execute(text("SET LOCAL plan_cache_mode = force_custom_plan"))
    return list(session.scalars(query))


def get_sample(session: Session, sample_id: int) -> Sample | None:
    return session.get(Sample, sample_id, options=[defer(Sample.search, raiseload=True)])
