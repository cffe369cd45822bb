"""Claiming queue rows: `FOR UPDATE SKIP LOCKED`, so concurrent workers never take the same task."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from service.events import record_event
from service.queue.owners import mark_owners_running, owner_ids

# The DESIGN.md claim: pick the best queued rows nobody holds, and take them in the same statement.
# Each claim bumps lease_token: the fencing token every later write of this holder must present.
CLAIM_SQL = text(
    """
    WITH next AS (
        SELECT id FROM task
        WHERE status = 'queued' AND kind = ANY(:kinds) AND run_after <= now()
        ORDER BY priority DESC, id
        LIMIT :n
        FOR UPDATE SKIP LOCKED
    )
    UPDATE task t
    SET status = 'running',
        worker_id = :worker_id,
        attempts = t.attempts + 1,
        lease_token = t.lease_token + 1,
        lease_expires_at = now() + make_interval(secs => :lease_seconds),
        started_at = coalesce(t.started_at, now()),
        finished_at = NULL
    FROM next
    WHERE t.id = next.id
    RETURNING t.id, t.kind, t.job_id, t.filter_run_id, t.training_run_id, t.dataset_id, t.payload, t.cursor,
              t.attempts, t.max_attempts, t.lease_token, t.priority
    """
)


@dataclass(frozen=True)
class ClaimedTask:
    """A task this worker holds, with the fencing token of its claim."""

    id: int
    kind: str
    job_id: int | None
    filter_run_id: int | None
    training_run_id: int | None
    dataset_id: int | None
    payload: dict[str, Any]
    cursor: int
    attempts: int
    max_attempts: int
    lease_token: int
    priority: int = 0


def claim_tasks(
    session: Session, worker_id: str, kinds: Sequence[str], n: int, lease_seconds: float
) -> list[ClaimedTask]:
    """Claim up to ``n`` runnable tasks of ``kinds`` for ``worker_id`` (the caller's transaction commits).

    Also marks their jobs/runs running and records a "claimed" event per task.
    """
    if n <= 0 or not kinds:
        return []
    rows = session.execute(
        CLAIM_SQL,
        {"kinds": list(kinds), "n": n, "worker_id": worker_id, "lease_seconds": float(lease_seconds)},
    ).mappings()
    claimed = sorted((ClaimedTask(**dict(row)) for row in rows), key=lambda t: (-t.priority, t.id))
    mark_owners_running(session, claimed)
    for task in claimed:
        record_event(
            session,
            "claimed",
            f"task {task.id} claimed by worker {worker_id} (attempt {task.attempts} of {task.max_attempts})",
            task_id=task.id,
            data={"worker_id": worker_id, "attempt": task.attempts, "cursor": task.cursor},
            **owner_ids(task),
        )
    return claimed
