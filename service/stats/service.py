"""Sample aggregates for the review UI's charts and confirmations, at bounded cost at any size.

A selection of up to `EXACT_ROW_LIMIT` samples is aggregated exactly. A larger one is aggregated
from a block sample of the table sized to hold about that many matching rows (and never more than
`MAX_SCANNED_ROWS` table rows), and every count is scaled up by the sampling factor and flagged
as estimated. Nothing here runs a COUNT(*) over the whole table.
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from service.datasets.schemas import DatasetCreate
from service.datasets.service import version_conditions
from service.samples.query import SampleQuery, sample_conditions
from service.samples.stages import resolve_stage
from service.stats import repository
from service.stats.schemas import Bucket, DatasetPreview, PassFail, ReviewTally, SampleCount, SampleStats

EXACT_ROW_LIMIT = 10_000
MAX_SCANNED_ROWS = 400_000
# Above this many times EXACT_ROW_LIMIT, the planner's estimate alone sends a query to sampling.
PLANNER_TRUST_FACTOR = 5
HISTOGRAM_BUCKETS = 20
COUNT_TIMEOUT_MS = 3_000


def sample_stats(session: Session, query: SampleQuery) -> SampleStats:
    """Aggregates over the samples `query` matches (see the module docstring for the cost bound)."""
    conditions = sample_conditions(query)
    estimate = repository.estimate_matching(session, conditions)
    # The planner's estimate decides only when it is far from the limit; near it, counting (up to
    # the limit) does, so a selection the planner misjudges is still aggregated exactly when small.
    exact = estimate <= PLANNER_TRUST_FACTOR * EXACT_ROW_LIMIT and (
        repository.count_at_most(session, conditions, EXACT_ROW_LIMIT + 1) <= EXACT_ROW_LIMIT
    )
    if exact:
        raw = repository.aggregate(
            session, conditions, row_limit=EXACT_ROW_LIMIT + 1, buckets=HISTOGRAM_BUCKETS
        )
        return _stats(raw, scale=1.0, matched=raw.rows, estimated=False)
    percent = sampling_percent(matching_estimate=estimate, table_rows=repository.estimate_table_rows(session))
    raw = repository.aggregate(
        session,
        conditions,
        row_limit=MAX_SCANNED_ROWS,
        buckets=HISTOGRAM_BUCKETS,
        sample_percent=percent,
    )
    scale = 100.0 / percent
    # More than EXACT_ROW_LIMIT rows match (counted, or estimated far above it).
    matched = max(round(raw.rows * scale), EXACT_ROW_LIMIT + 1)
    return _stats(raw, scale=scale, matched=matched, estimated=True)


def sampling_percent(*, matching_estimate: int, table_rows: int) -> float:
    """The block-sample size: about EXACT_ROW_LIMIT matching rows, at most MAX_SCANNED_ROWS read.

    The planner's estimate may be far off (text search, correlated filters); the result then
    carries more sampling noise but never costs more than MAX_SCANNED_ROWS rows.
    """
    wanted = 100.0 * EXACT_ROW_LIMIT / max(matching_estimate, EXACT_ROW_LIMIT + 1)
    affordable = 100.0 * MAX_SCANNED_ROWS / table_rows if table_rows > 0 else 100.0
    return max(min(wanted, affordable, 100.0), 0.001)


def count_samples(session: Session, query: SampleQuery) -> SampleCount:
    """The exact count when it takes under COUNT_TIMEOUT_MS, else the planner's estimate."""
    conditions = sample_conditions(query)
    exact = repository.count_within(session, conditions, COUNT_TIMEOUT_MS)
    if exact is not None:
        return SampleCount(count=exact, exact=True)
    return SampleCount(count=repository.estimate_matching(session, conditions), exact=False)


def _stats(raw: repository.Aggregates, *, scale: float, matched: int, estimated: bool) -> SampleStats:
    def scaled(count: int) -> int:
        return round(count * scale)

    chars: list[Bucket] = []
    if raw.chars_lo is not None and raw.chars_hi is not None:
        width = repository.chars_bucket_width(raw.chars_lo, raw.chars_hi, HISTOGRAM_BUCKETS)
        last = max(raw.chars_buckets, default=0)
        chars = [
            Bucket(
                lo=raw.chars_lo + i * width,
                hi=raw.chars_lo + (i + 1) * width,
                count=scaled(raw.chars_buckets.get(i, 0)),
            )
            for i in range(last + 1)
        ]
    scores: list[Bucket] = []
    if raw.score_lo is not None and raw.score_hi is not None:
        span = raw.score_hi - raw.score_lo
        if raw.score_integral and span < HISTOGRAM_BUCKETS:
            scores = [
                Bucket(
                    lo=raw.score_lo + i, hi=raw.score_lo + i + 1, count=scaled(raw.score_buckets.get(i, 0))
                )
                for i in range(int(span) + 1)
            ]
        elif span == 0:
            scores = [Bucket(lo=raw.score_lo, hi=raw.score_hi, count=scaled(raw.scored))]
        else:
            step = span / HISTOGRAM_BUCKETS
            scores = [
                Bucket(
                    lo=raw.score_lo + i * step,
                    hi=raw.score_lo + (i + 1) * step,
                    count=scaled(raw.score_buckets.get(i, 0)),
                )
                for i in range(HISTOGRAM_BUCKETS)
            ]
    filters: dict[str, PassFail] = {}
    for (name, passed), count in sorted(raw.filters.items()):
        tally = filters.setdefault(name, PassFail())
        if passed:
            tally.passed = scaled(count)
        else:
            tally.failed = scaled(count)
    return SampleStats(
        matched=matched,
        estimated=estimated,
        rows_examined=raw.rows,
        exact_limit=EXACT_ROW_LIMIT,
        stages={stage: scaled(count) for stage, count in sorted(raw.stages.items())},
        review=ReviewTally(
            **{status: scaled(raw.review.get(status, 0)) for status in ("pending", "accepted", "rejected")}
        ),
        filters=filters,
        answer_chars=chars,
        scores=scores,
        scored=scaled(raw.scored),
    )


def dataset_preview(session: Session, payload: DatasetCreate) -> DatasetPreview:
    """Rows and split sizes `POST /v1/datasets` would freeze for `payload`, counted with the datasets
    service's own conditions (so the preview cannot drift from creation)."""
    query = payload.query
    stage = resolve_stage(session, query.job_ids, query.stage, ("body", "query"))
    conditions = version_conditions(session, payload, stage)
    split = payload.split
    counted = repository.rows_per_job(
        session,
        conditions,
        limit=query.limit,
        test_fraction=split.test_fraction if split else 0.0,
        split_seed=split.seed if split else 0,
        stratify_by_job=bool(split and split.stratify_by_job),
        timeout_ms=COUNT_TIMEOUT_MS,
    )
    if counted is None:
        estimate = repository.estimate_matching(session, conditions)
        if query.limit is not None:
            estimate = min(estimate, query.limit)
        test = round(estimate * split.test_fraction) if split else 0
        return DatasetPreview(
            stage=stage, rows=estimate, train=estimate - test, test=test, by_job={}, exact=False
        )
    by_job, test = counted
    rows = sum(by_job.values())
    return DatasetPreview(
        stage=stage,
        rows=rows,
        train=rows - test,
        test=test,
        by_job={str(job_id): n for job_id, n in by_job.items()},
        exact=True,
    )
