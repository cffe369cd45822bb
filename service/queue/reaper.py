"""The reaper: tasks whose holder stopped heartbeating go back to the queue, or fail for good.

Any worker runs it every ``reaper_seconds``; ``SKIP LOCKED`` lets several do so at once, and a task
whose holder is in the middle of a fenced write (row locked) is simply skipped this round.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.orm import Session

from service.events import record_event
from service.queue.leases import MAX_BACKOFF_SECONDS
from service.queue.owners import fail_owner, owner_ids

REAP_SQL = text(
    """
    WITH expired AS (
        SELECT id, worker_id AS lost_worker FROM task
        WHERE status = 'running' AND lease_expires_at < now()
          AND worker_id IS DISTINCT FROM :exclude_worker
        ORDER BY id
        LIMIT :limit
        FOR UPDATE SKIP LOCKED
    )
    UPDATE task t
    SET status = CASE WHEN t.attempts >= t.max_attempts THEN 'failed' ELSE 'queued' END,
        run_after = now() + make_interval(
            secs => least(:backoff_base * power(2, greatest(t.attempts - 1, 0)), :backoff_cap)),
        worker_id = CASE WHEN t.attempts >= t.max_attempts THEN t.worker_id END,
        lease_expires_at = NULL,
        finished_at = CASE WHEN t.attempts >= t.max_attempts THEN now() END,
        last_error = 'lease expired: worker ' || coalesce(expired.lost_worker, '?')
            || ' stopped heartbeating during attempt ' || t.attempts || ' of ' || t.max_attempts
    FROM expired
    WHERE t.id = expired.id
    RETURNING t.id, t.status, t.attempts, t.max_attempts, t.job_id, t.filter_run_id, t.training_run_id,
              t.dataset_id,
              t.last_error, t.run_after, expired.lost_worker
    """
)


@dataclass(frozen=True)
class ReapedTask:
    id: int
    status: str  # "queued" (will be retried) or "failed" (out of attempts)
    attempts: int
    max_attempts: int
    job_id: int | None
    filter_run_id: int | None
    training_run_id: int | None
    dataset_id: int | None
    last_error: str
    lost_worker: str | None


def reap_expired_tasks(
    session: Session, *, backoff_base: float, limit: int = 100, exclude_worker: str | None = None
) -> list[ReapedTask]:
    """Requeue (with exponential backoff) or fail the tasks whose lease expired; the caller commits.

    Args:
        session: the caller's transaction.
        backoff_base: seconds before a first retry; doubled for each further attempt (capped).
        limit: most tasks reaped in one call.
        exclude_worker: a worker never reaps its own tasks: if it is alive enough to reap, its
            heartbeat is alive too and only lagged (a long GIL hold, a starved CPU).
    """
    rows = session.execute(
        REAP_SQL,
        {
            "limit": limit,
            "backoff_base": float(backoff_base),
            "backoff_cap": MAX_BACKOFF_SECONDS,
            "exclude_worker": exclude_worker,
        },
    ).mappings()
    reaped = [
        ReapedTask(
            id=row["id"],
            status=row["status"],
            attempts=row["attempts"],
            max_attempts=row["max_attempts"],
            job_id=row["job_id"],
            filter_run_id=row["filter_run_id"],
            training_run_id=row["training_run_id"],
            dataset_id=row["dataset_id"],
            last_error=row["last_error"],
            lost_worker=row["lost_worker"],
        )
        for row in rows
    ]
    for task in reaped:
        if task.status == "failed":
            record_event(
                session,
                "failed",
                f"task {task.id} failed: {task.last_error}; no attempts left",
                task_id=task.id,
                data={"worker_id": task.lost_worker, "attempt": task.attempts},
                **owner_ids(task),
            )
            fail_owner(session, task, f"task {task.id} failed: {task.last_error}")
        else:
            record_event(
                session,
                "requeued",
                f"task {task.id} requeued: {task.last_error}",
                task_id=task.id,
                data={"worker_id": task.lost_worker, "attempt": task.attempts},
                **owner_ids(task),
            )
    return reaped
