"""A training run's progress and ETA from its row and its latest logged steps (pure arithmetic, no I/O)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from pydantic import BaseModel, Field

from service.statuses import FINISHED_STATUSES

# A run's task cursor says which phase it is in, so a reclaimed run resumes at the right one.
CURSOR_TRAINING, CURSOR_EVALUATING, CURSOR_DONE = 0, 1, 2


def phase_of(task_status: str | None, cursor: int) -> str | None:
    """The phase a run's task is in: queued, training or evaluating (None without a task)."""
    if task_status is None:
        return None
    if task_status == "queued":
        return "queued"
    return "training" if cursor <= CURSOR_TRAINING else "evaluating"


# Logged steps the step rate is measured over (the most recent ones of the current attempt).
RATE_WINDOW = 10


class TrainingProgress(BaseModel):
    """Where a run stands; the rate and ETA are null until two steps were logged in this attempt."""

    phase: str | None = Field(description="queued, training, evaluating, or the final status.")
    step: int
    total_steps: int | None
    fraction: float = Field(description="step / total_steps (0..1).")
    elapsed_seconds: float | None
    steps_per_second: float | None
    tokens_per_second: float | None
    eta_seconds: float | None = Field(description="Time left for the training steps (not the evaluation).")


def step_rate(recent_steps: Sequence[tuple[int, float]], since: float | None = None) -> float | None:
    """Steps per second over the newest logged steps, given (step, unix time) pairs.

    A resumed run re-logs the steps after its checkpoint, so older rows may come from an earlier
    attempt: only rows logged since `since` (the current attempt's claim) count, which keeps the
    pause between attempts out of the rate.
    """
    rows = sorted(row for row in recent_steps if since is None or row[1] >= since)[-RATE_WINDOW:]
    if len(rows) < 2:
        return None
    (step0, time0), (step1, time1) = rows[0], rows[-1]
    if step1 <= step0 or time1 <= time0:
        return None
    return (step1 - step0) / (time1 - time0)


def compute_progress(
    *,
    status: str,
    phase: str | None,
    step: int,
    total_steps: int | None,
    tokens_per_second: float | None,
    started_at: datetime | None,
    finished_at: datetime | None,
    recent_steps: Sequence[tuple[int, float]],
    attempt_started_at: datetime | None = None,
    now: datetime,
) -> TrainingProgress:
    if status in FINISHED_STATUSES:
        phase = status
    elif status == "queued":
        phase = "queued"
    total = total_steps if total_steps and total_steps > 0 else None
    fraction = min(step / total, 1.0) if total else (1.0 if status == "succeeded" else 0.0)
    elapsed = max(((finished_at or now) - started_at).total_seconds(), 0.0) if started_at else None
    since = attempt_started_at.timestamp() if attempt_started_at else None
    rate = step_rate(recent_steps, since) if status == "running" else None
    if rate is None and phase == "training" and step > 0 and attempt_started_at is not None:
        # Fewer than two steps logged yet: the attempt's average so far (start-up included, so
        # the first ETA is pessimistic) beats no ETA at all.
        running_for = (now - attempt_started_at).total_seconds()
        rate = step / running_for if running_for > 0 else None
    if status in FINISHED_STATUSES:
        eta: float | None = 0.0
    elif phase == "evaluating":
        eta = None  # training is over; scoring time depends on the models, not on steps
    elif rate and total:
        eta = max(total - step, 0) / rate
    else:
        eta = None
    return TrainingProgress(
        phase=phase,
        step=step,
        total_steps=total_steps,
        fraction=fraction,
        elapsed_seconds=elapsed,
        steps_per_second=rate,
        tokens_per_second=tokens_per_second,
        eta_seconds=eta,
    )
