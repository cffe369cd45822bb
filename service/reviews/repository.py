"""Review writes and counts in Postgres."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import ColumnElement, String, bindparam, case, cast, func, or_, select, text, update
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Session, defer

from service.db.models import FilterVerdict, Sample, SampleRevision

REVIEW_STATUS_OF = {"accept": "accepted", "reject": "rejected", "reset": "pending"}

# The sample's tags plus `tags_add` minus `tags_remove`, first occurrence order kept, no duplicates.
_TAGS_SQL = (
    "ARRAY(SELECT t FROM unnest(sample.tags || :tags_add) WITH ORDINALITY AS u(t, o) "
    "WHERE t <> ALL(:tags_remove) GROUP BY t ORDER BY min(o))"
)


def lock_sample(session: Session, sample_id: int) -> Sample | None:
    """The sample, locked until commit (concurrent reviews of one sample serialise)."""
    return session.get(
        Sample, sample_id, with_for_update=True, options=[defer(Sample.search, raiseload=True)]
    )


def add_revision(
    session: Session, sample_id: int, field: str, old_text: str | None, new_text: str, edited_by: int
) -> None:
    session.add(
        SampleRevision(
            sample_id=sample_id, field=field, old_text=old_text, new_text=new_text, edited_by=edited_by
        )
    )


def revisions_of_sample(session: Session, sample_id: int) -> list[SampleRevision]:
    return list(
        session.scalars(
            select(SampleRevision).where(SampleRevision.sample_id == sample_id).order_by(SampleRevision.id)
        )
    )


def count_matching(session: Session, conditions: Sequence[ColumnElement[bool]]) -> int:
    return int(session.scalar(select(func.count()).select_from(Sample).where(*conditions)) or 0)


def bulk_review(
    session: Session,
    conditions: Sequence[ColumnElement[bool]],
    *,
    action: str | None,
    tags_add: Sequence[str],
    tags_remove: Sequence[str],
    reviewer: int,
) -> int:
    """One UPDATE over the matching samples that would change; returns how many changed."""
    values: dict[str, Any] = {}
    would_change: list[ColumnElement[bool]] = []
    if action is not None:
        target = REVIEW_STATUS_OF[action]
        differs = Sample.review_status != target
        would_change.append(differs)
        values["review_status"] = target
        if action == "reset":
            values["reviewed_by"] = None
            values["reviewed_at"] = None
        else:  # a sample already in the target status keeps who reviewed it and when
            values["reviewed_by"] = case((differs, reviewer), else_=Sample.reviewed_by)
            values["reviewed_at"] = case((differs, func.now()), else_=Sample.reviewed_at)
    if tags_add or tags_remove:
        tag_array = ARRAY(String(100))
        values["tags"] = text(_TAGS_SQL).bindparams(
            bindparam("tags_add", list(tags_add), type_=tag_array),
            bindparam("tags_remove", list(tags_remove), type_=tag_array),
        )
        if tags_add:
            would_change.append(~Sample.tags.op("@>", is_comparison=True)(cast(list(tags_add), tag_array)))
        if tags_remove:
            would_change.append(Sample.tags.op("&&", is_comparison=True)(cast(list(tags_remove), tag_array)))
    result = session.execute(
        update(Sample)
        .where(*conditions, or_(*would_change))
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


def review_counts(session: Session, conditions: Sequence[ColumnElement[bool]]) -> dict[str, int]:
    rows = session.execute(
        select(Sample.review_status, func.count()).where(*conditions).group_by(Sample.review_status)
    ).all()
    return {status: int(n) for status, n in rows}


def review_counts_by_filter(
    session: Session, conditions: Sequence[ColumnElement[bool]]
) -> list[tuple[str, bool, str, int]]:
    """(filter name, passed, review status, samples) over the matching samples' verdicts."""
    rows = session.execute(
        select(FilterVerdict.filter_name, FilterVerdict.passed, Sample.review_status, func.count())
        .join(Sample, Sample.id == FilterVerdict.sample_id)
        .where(*conditions)
        .group_by(FilterVerdict.filter_name, FilterVerdict.passed, Sample.review_status)
    ).all()
    return [(name, bool(passed), status, int(n)) for name, passed, status, n in rows]
