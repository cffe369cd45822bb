"""SQL for sample aggregates: one statement over a bounded selection, planner estimates, counts.

Every statement reads at most a bounded number of rows: a selection is either cut at a row limit
or drawn from a block sample (`TABLESAMPLE SYSTEM`) of the table, so a chart costs the same at a
million samples as at a thousand.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Integer,
    Select,
    case,
    cast,
    func,
    literal,
    select,
    tablesample,
    text,
    true,
)
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session
from sqlalchemy.sql.util import ClauseAdapter

from service.datasets.repository import split_samples
from service.db.models import FilterVerdict, Sample

SAMPLE_TABLE = Sample.__table__
# Same seed every time: a chart over an unchanged table does not flicker between reloads.
SAMPLE_SEED = 0
QUERY_CANCELED = "57014"


class TimedOut(Exception):
    """A statement ran past its time limit (and was cancelled by Postgres)."""


@contextmanager
def time_limited(session: Session, timeout_ms: int) -> Iterator[None]:
    """Run the block in a savepoint with a statement timeout; TimedOut when it fires.

    The previous timeout is restored afterwards, and a cancelled statement loses nothing else of
    the request's transaction (only the savepoint is rolled back).
    """
    previous = session.scalar(text("SELECT current_setting('statement_timeout')"))
    try:
        with session.begin_nested():
            session.execute(
                text("SELECT set_config('statement_timeout', :ms, true)"), {"ms": str(timeout_ms)}
            )
            yield
    except DBAPIError as exc:
        if getattr(exc.orig, "sqlstate", None) == QUERY_CANCELED:
            raise TimedOut from exc
        raise
    session.execute(text("SELECT set_config('statement_timeout', :value, true)"), {"value": previous})


@dataclass(frozen=True)
class Aggregates:
    """Raw aggregates of one selection; histogram keys are bucket numbers (see `bucket_width`)."""

    rows: int
    chars_lo: int | None
    chars_hi: int | None
    scored: int
    score_lo: float | None
    score_hi: float | None
    score_integral: bool
    review: dict[str, int]
    stages: dict[str, int]
    chars_buckets: dict[int, int]
    score_buckets: dict[int, int]
    filters: dict[tuple[str, bool], int]


def chars_bucket_width(lo: int, hi: int, buckets: int) -> int:
    """Integer width so that `buckets` bars of it cover lo..hi (the SQL below uses the same)."""
    return max(1, -(-(hi - lo + 1) // buckets))


def count_at_most(session: Session, conditions: Sequence[ColumnElement[bool]], cap: int) -> int:
    """min(matching rows, cap): stops reading after `cap` rows."""
    capped = select(literal(1)).select_from(SAMPLE_TABLE).where(*conditions).limit(cap).subquery()
    return int(session.scalar(select(func.count()).select_from(capped)) or 0)


def _explain_rows(session: Session, query: Select[Any]) -> int:
    compiled = query.compile(dialect=session.get_bind().dialect, compile_kwargs={"render_postcompile": True})
    plan = session.connection().exec_driver_sql("EXPLAIN (FORMAT JSON) " + str(compiled), compiled.params)
    document = plan.scalar_one()
    if isinstance(document, str):
        document = json.loads(document)
    return int(document[0]["Plan"]["Plan Rows"])


def estimate_matching(session: Session, conditions: Sequence[ColumnElement[bool]]) -> int:
    """The planner's estimate of the rows matching `conditions` (no rows are read)."""
    return _explain_rows(session, select(literal(1)).select_from(SAMPLE_TABLE).where(*conditions))


def estimate_table_rows(session: Session) -> int:
    """pg_class.reltuples of the sample table (-1 before the first ANALYZE → 0)."""
    rows = session.scalar(text("SELECT reltuples::bigint FROM pg_class WHERE oid = 'sample'::regclass"))
    return max(int(rows or 0), 0)


def count_within(session: Session, conditions: Sequence[ColumnElement[bool]], timeout_ms: int) -> int | None:
    """The exact count, or None when counting takes longer than `timeout_ms`."""
    try:
        with time_limited(session, timeout_ms):
            count = session.scalar(select(func.count()).select_from(SAMPLE_TABLE).where(*conditions))
    except TimedOut:
        return None
    return int(count or 0)


def aggregate(
    session: Session,
    conditions: Sequence[ColumnElement[bool]],
    *,
    row_limit: int,
    buckets: int,
    sample_percent: float | None = None,
) -> Aggregates:
    """Every aggregate of the selection in one statement, read once (a materialized CTE).

    Args:
        conditions: AND-ed conditions on the sample table (from `sample_conditions`).
        row_limit: read at most this many matching rows.
        buckets: bars per histogram.
        sample_percent: when given, select from a `TABLESAMPLE SYSTEM (p) REPEATABLE` block sample
            of the table instead of all of it (the conditions are rewritten onto the sample).
    """
    source: Any = SAMPLE_TABLE
    if sample_percent is not None:
        source = tablesample(
            SAMPLE_TABLE, func.system(sample_percent), name="sampled", seed=literal(SAMPLE_SEED)
        )
        adapter = ClauseAdapter(source)
        conditions = [adapter.traverse(condition) for condition in conditions]
    columns = source.c
    answer_chars = func.length(func.coalesce(columns.edited_answer, columns.answer, columns.raw_text))
    sel = (
        select(
            columns.id,
            answer_chars.label("chars"),
            columns.score,
            columns.review_status,
            columns.stage,
        )
        .select_from(source)
        .where(*conditions)
        .limit(row_limit)
        .cte("sel")
        .prefix_with("MATERIALIZED")
    )
    bounds = select(
        func.count().label("n"),
        func.min(sel.c.chars).label("lo"),
        func.max(sel.c.chars).label("hi"),
        func.count(sel.c.score).label("ns"),
        func.min(sel.c.score).label("slo"),
        func.max(sel.c.score).label("shi"),
        func.bool_and(sel.c.score == func.floor(sel.c.score)).label("sint"),
    ).cte("bounds")

    def grouped_json(key: ColumnElement[Any], *where: ColumnElement[bool]) -> Any:
        grouped = (
            select(key.label("k"), func.count().label("c"))
            .select_from(sel)
            .join(bounds, true())
            .where(*where)
            .group_by(text("1"))
            .subquery()
        )
        pairs = func.json_agg(func.json_build_array(grouped.c.k, grouped.c.c))
        return select(func.coalesce(pairs, text("'[]'::json"))).scalar_subquery()

    # Integer bars for lengths; scores split their observed range in `buckets` equal bars.
    width = cast(func.greatest(1, func.ceil((bounds.c.hi - bounds.c.lo + 1) / float(buckets))), Integer)
    chars_key = (sel.c.chars - bounds.c.lo) // width
    # Whole-number scores (a 1–10 judge) get one bar per value; others split the range evenly.
    integral_bars = bounds.c.sint & (bounds.c.shi - bounds.c.slo < buckets)
    even_bar = func.least(
        cast(
            func.floor((sel.c.score - bounds.c.slo) / func.nullif(bounds.c.shi - bounds.c.slo, 0) * buckets),
            Integer,
        ),
        buckets - 1,
    )
    score_key = func.coalesce(
        case((integral_bars, cast(sel.c.score - bounds.c.slo, Integer)), else_=even_bar), 0
    )
    # `sample_id = ANY(ARRAY(...))` probes the verdicts' primary key once per selected sample; a
    # join lets the planner hash the whole verdict table instead (a second per million rows).
    verdicts = (
        select(FilterVerdict.filter_name, FilterVerdict.passed, func.count().label("c"))
        .where(FilterVerdict.sample_id == func.any(func.array(select(sel.c.id).scalar_subquery())))
        .group_by(FilterVerdict.filter_name, FilterVerdict.passed)
        .subquery()
    )
    verdict_rows = func.json_agg(
        func.json_build_array(verdicts.c.filter_name, verdicts.c.passed, verdicts.c.c)
    )
    statement = select(
        bounds.c.n,
        bounds.c.lo,
        bounds.c.hi,
        bounds.c.ns,
        bounds.c.slo,
        bounds.c.shi,
        bounds.c.sint,
        grouped_json(sel.c.review_status),
        grouped_json(sel.c.stage),
        grouped_json(chars_key),
        grouped_json(score_key, sel.c.score.is_not(None)),
        select(func.coalesce(verdict_rows, text("'[]'::json"))).scalar_subquery(),
    ).select_from(bounds)
    row = session.execute(statement).one()
    n, lo, hi, ns, slo, shi, sint, review, stages, chars, scores, filters = row
    return Aggregates(
        rows=int(n),
        chars_lo=lo,
        chars_hi=hi,
        scored=int(ns),
        score_lo=slo,
        score_hi=shi,
        score_integral=bool(sint),
        review={str(k): int(c) for k, c in review},
        stages={str(k): int(c) for k, c in stages},
        chars_buckets={int(k): int(c) for k, c in chars if k is not None},
        score_buckets={int(k or 0): int(c) for k, c in scores},
        filters={(str(name), bool(passed)): int(c) for name, passed, c in filters},
    )


def rows_per_job(
    session: Session,
    conditions: Sequence[ColumnElement[bool]],
    *,
    limit: int | None,
    test_fraction: float,
    split_seed: int,
    stratify_by_job: bool,
    timeout_ms: int,
) -> tuple[dict[int, int], int] | None:
    """Rows per job of a dataset query and its test-split size, from the freeze's own split statement;
    None when it takes longer than `timeout_ms`."""
    split = split_samples(
        conditions,
        limit=limit,
        test_fraction=test_fraction,
        split_seed=split_seed,
        stratify_by_job=stratify_by_job,
    )
    query = (
        select(split.c.job_id, func.count(), func.count().filter(split.c.split == "test"))
        .group_by(split.c.job_id)
        .order_by(split.c.job_id)
    )
    try:
        with time_limited(session, timeout_ms):
            rows = session.execute(query).all()
    except TimedOut:
        return None
    return {int(job_id): int(n) for job_id, n, _ in rows}, sum(int(t) for _, _, t in rows)
