"""Conditions on samples, for listings, reviews, filters and versions: filter verdicts and review state.

Verdicts and judge scores:

`passed=a,b` keeps samples that passed every listed filter; `failed=a,b` keeps samples that failed
at least one of them (what a reviewer looks at: everything any of those filters rejected). A sample
a filter never judged neither passed nor failed it. Each condition is an EXISTS probe on the
verdict primary key (sample_id, filter_name), so keyset pages by sample id stay index-driven.

Each EXISTS carries `OFFSET 0`: Postgres then keeps it a per-row probe instead of turning it into a
semi-join. As a join, with LIMIT, the planner may merge-join against the verdict index from its
first entry; for a job whose samples have high ids that read ~1M index entries for one page
(600 ms at 1M samples; 3 ms as a probe, measured by bench/curation.py).
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import ColumnElement, String, cast, exists, literal_column, select
from sqlalchemy.dialects.postgresql import ARRAY

from service.db.models import FilterVerdict, Sample

_PROBE_FENCE: ColumnElement[int] = literal_column("0")  # see the module docstring


def passed_conditions(names: Sequence[str], *, probe: bool = True) -> list[ColumnElement[bool]]:
    """One condition per name: the sample's verdict of that filter is a pass.

    Args:
        names: filter names.
        probe: per-row probes (pages of a listing); False lets Postgres join (set-based scans of
            many rows, e.g. freezing a dataset version).
    """
    conditions: list[ColumnElement[bool]] = []
    for name in dict.fromkeys(names):
        verdict = select(FilterVerdict.sample_id).where(
            FilterVerdict.sample_id == Sample.id,
            FilterVerdict.filter_name == name,
            FilterVerdict.passed.is_(True),
        )
        conditions.append(exists(verdict.offset(_PROBE_FENCE) if probe else verdict))
    return conditions


def failed_condition(names: Sequence[str]) -> ColumnElement[bool]:
    """The sample failed at least one of the named filters."""
    unique = list(dict.fromkeys(names))
    name_match = (
        FilterVerdict.filter_name == unique[0] if len(unique) == 1 else FilterVerdict.filter_name.in_(unique)
    )
    return exists(
        select(FilterVerdict.sample_id)
        .where(FilterVerdict.sample_id == Sample.id, name_match, FilterVerdict.passed.is_(False))
        .offset(_PROBE_FENCE)
    )


def passed_all_condition() -> ColumnElement[bool]:
    """Some filter judged the sample and none failed it."""
    judged = exists(select(FilterVerdict.sample_id).where(FilterVerdict.sample_id == Sample.id))
    failed = exists(
        select(FilterVerdict.sample_id).where(
            FilterVerdict.sample_id == Sample.id, FilterVerdict.passed.is_(False)
        )
    )
    return judged & ~failed


def score_conditions(score_min: float | None, score_max: float | None) -> list[ColumnElement[bool]]:
    """Judge score within [score_min, score_max] (an unscored sample matches neither bound)."""
    conditions: list[ColumnElement[bool]] = []
    if score_min is not None:
        conditions.append(Sample.score >= score_min)
    if score_max is not None:
        conditions.append(Sample.score <= score_max)
    return conditions


# --- review state ----------------------------------------------------------------------------


def review_status_condition(statuses: Sequence[str]) -> ColumnElement[bool]:
    unique = list(dict.fromkeys(statuses))
    return Sample.review_status == unique[0] if len(unique) == 1 else Sample.review_status.in_(unique)


def tags_condition(tags: Sequence[str]) -> ColumnElement[bool]:
    """The sample carries every listed tag (array containment: served by the GIN index on tags)."""
    wanted = cast(list(dict.fromkeys(tags)), ARRAY(String(100)))
    return Sample.tags.op("@>", is_comparison=True)(wanted)


def reviewer_condition(token_id: int) -> ColumnElement[bool]:
    """The sample's last review (accept/reject) was made with this token."""
    return Sample.reviewed_by == token_id
