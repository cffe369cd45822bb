"""A job's progress, rates and ETA from its counters and timestamps (pure arithmetic, no I/O)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from service.statuses import ALL_STATUSES, FINISHED_STATUSES

# "starting": running, no item committed yet (a worker loads the teacher, then writes its first
# chunk); "generating": items are being committed. Finished jobs take their status.
JobPhase = Literal["queued", "starting", "generating", "succeeded", "failed", "cancelled"]


@dataclass(frozen=True)
class Progress:
    items_done: int
    items_total: int
    fraction: float
    samples_written: int
    tokens_in: int
    tokens_out: int
    elapsed_seconds: float | None
    items_per_second: float | None
    tokens_out_per_second: float | None
    eta_seconds: float | None
    phase: JobPhase


def compute_progress(
    *,
    status: str,
    items_done: int,
    items_total: int,
    samples_written: int,
    tokens_in: int,
    tokens_out: int,
    started_at: datetime | None,
    finished_at: datetime | None,
    now: datetime,
) -> Progress:
    """Rates average over the time since the job started (until it finished); the ETA assumes the
    remaining items go at that rate. Unknown (None) before the first item is done, and for a job
    that failed or was cancelled (it will not finish); 0 once it succeeded."""
    fraction = (
        min(items_done / items_total, 1.0) if items_total > 0 else (1.0 if status == "succeeded" else 0.0)
    )
    elapsed = max(((finished_at or now) - started_at).total_seconds(), 0.0) if started_at else None
    items_rate = tokens_rate = eta = None
    if elapsed is not None and elapsed > 0 and items_done > 0:
        items_rate = items_done / elapsed
        tokens_rate = tokens_out / elapsed
    if status == "succeeded":
        eta = 0.0
    elif status in FINISHED_STATUSES:  # failed or cancelled: it will not finish
        eta = None
    elif items_rate:
        eta = max(items_total - items_done, 0) / items_rate
    return Progress(
        items_done=items_done,
        items_total=items_total,
        fraction=fraction,
        samples_written=samples_written,
        tokens_in=tokens_in,
        tokens_out=tokens_out,
        elapsed_seconds=elapsed,
        items_per_second=items_rate,
        tokens_out_per_second=tokens_rate,
        eta_seconds=eta,
        phase=_phase(status, items_done),
    )


def _phase(status: str, items_done: int) -> JobPhase:
    if status == "running":
        return "generating" if items_done > 0 else "starting"
    assert status in ALL_STATUSES, status
    return status  # type: ignore[return-value]  # the job statuses above are phases too
