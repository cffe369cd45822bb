"""Reading samples: filtered keyset pages and single samples."""

from __future__ import annotations

from sqlalchemy.orm import Session

from service.db.models import Sample
from service.errors import NotFoundError
from service.pagination import decode_cursor, encode_cursor
from service.samples import repository
from service.samples.query import SampleQuery, sample_conditions


def list_samples(
    session: Session, query: SampleQuery, *, cursor: str | None, limit: int
) -> tuple[list[Sample], str | None]:
    """One page of samples matching `query`, and the cursor of the next page (None at the end)."""
    after_id = decode_cursor(cursor) if cursor else 0
    rows = repository.list_samples_after(session, sample_conditions(query), after_id, limit + 1)
    if len(rows) > limit:
        rows = rows[:limit]
        return rows, encode_cursor(rows[-1].id)
    return rows, None


def get_sample(session: Session, sample_id: int) -> Sample:
    sample = repository.get_sample(session, sample_id)
    if sample is None:
        raise NotFoundError(f"sample {sample_id} does not exist")
    return sample
