"""Leases and fencing: every write of a task's holder first proves it still holds the task.

A claim returns a fencing token (``task.lease_token``, bumped on every claim). Each transaction a
worker makes for a task starts with a fenced UPDATE of the task row (``WHERE id AND lease_token AND
status = 'running'``): zero rows means the lease was lost — expired and reclaimed by another
worker, requeued by the reaper, or the task was cancelled — and the worker stops without writing.
The fenced UPDATE also locks the task row until commit, so a cancel or a reaper waits for the
chunk in flight and then wins.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.orm import Session

from service.events import record_event
from service.queue.claims import ClaimedTask
from service.queue.owners import fail_owner, finish_owner_if_done, owner_ids

MAX_BACKOFF_SECONDS = 600.0

FENCE_SQL = text(
    """
    UPDATE task SET lease_expires_at = now() + make_interval(secs => :lease_seconds)
    WHERE id = :id AND lease_token = :token AND status = 'running'
    RETURNING cursor
    """
)


class LeaseLost(Exception):
    """The task is no longer held by this claim: stop working on it, write nothing more."""

    def __init__(self, task_id: int, reason: str) -> None:
        super().__init__(f"lease of task {task_id} lost: {reason}")
        self.task_id = task_id
        self.reason = reason

    @property
    def cancelled(self) -> bool:
        return self.reason == "cancelled"


def backoff_seconds(base: float, attempts: int) -> float:
    """Delay before a task that failed its ``attempts``-th claim may run again (exponential, capped)."""
    return float(min(base * 2 ** max(attempts - 1, 0), MAX_BACKOFF_SECONDS))


def fence_task(session: Session, task: ClaimedTask, lease_seconds: float) -> int:
    """Prove ``task`` is still held (and extend its lease); returns its committed cursor.

    Raises:
        LeaseLost: the task was reclaimed, requeued, cancelled or finished meanwhile.
    """
    cursor = session.execute(
        FENCE_SQL, {"id": task.id, "token": task.lease_token, "lease_seconds": float(lease_seconds)}
    ).scalar_one_or_none()
    if cursor is None:
        raise LeaseLost(task.id, _why_lost(session, task))
    return int(cursor)


def _why_lost(session: Session, task: ClaimedTask) -> str:
    row = session.execute(
        text("SELECT status, lease_token, worker_id FROM task WHERE id = :id"), {"id": task.id}
    ).first()
    if row is None:
        return "the task was deleted"
    status, token, worker = row
    if status == "cancelled":
        return "cancelled"
    if token != task.lease_token:
        return f"reclaimed by worker {worker} (token {token})" if worker else f"requeued (token {token})"
    return f"the task is now {status}"


@dataclass(frozen=True)
class HeldLease:
    task_id: int
    lease_token: int


def extend_leases(
    session: Session, worker_id: str, held: Sequence[HeldLease], lease_seconds: float
) -> set[int]:
    """Heartbeat: extend the leases of the tasks this worker holds; returns the ids still held.

    Also refreshes the worker row's ``heartbeat_at``.
    """
    session.execute(text("UPDATE worker SET heartbeat_at = now() WHERE id = :id"), {"id": worker_id})
    if not held:
        return set()
    rows = session.execute(
        text(
            """
            UPDATE task t SET lease_expires_at = now() + make_interval(secs => :lease_seconds)
            FROM unnest(CAST(:ids AS bigint[]), CAST(:tokens AS bigint[])) AS h(id, token)
            WHERE t.id = h.id AND t.lease_token = h.token AND t.status = 'running'
            RETURNING t.id
            """
        ),
        {
            "ids": [h.task_id for h in held],
            "tokens": [h.lease_token for h in held],
            "lease_seconds": float(lease_seconds),
        },
    )
    return {int(r[0]) for r in rows}


def complete_task(session: Session, task: ClaimedTask, lease_seconds: float, worker_id: str) -> bool:
    """Fenced: the task succeeded; its owner succeeds when it was the last one. Returns the latter."""
    fence_task(session, task, lease_seconds)
    session.execute(
        text(
            "UPDATE task SET status = 'succeeded', finished_at = now(), lease_expires_at = NULL, "
            "last_error = NULL WHERE id = :id"
        ),
        {"id": task.id},
    )
    record_event(
        session,
        "task_succeeded",
        f"task {task.id} finished by worker {worker_id}",
        task_id=task.id,
        data={"worker_id": worker_id},
        **owner_ids(task),
    )
    finished = finish_owner_if_done(session, task)
    if finished:
        record_event(session, "finished", "all tasks succeeded", task_id=task.id, **owner_ids(task))
    return finished


def release_task(session: Session, task: ClaimedTask, lease_seconds: float, worker_id: str) -> None:
    """Fenced: hand the task back (a graceful stop, or a shard to resume at its committed cursor) —
    queued, claimable at once, the attempt not counted."""
    cursor = fence_task(session, task, lease_seconds)
    session.execute(
        text(
            "UPDATE task SET status = 'queued', worker_id = NULL, lease_expires_at = NULL, "
            "run_after = now(), attempts = greatest(attempts - 1, 0) WHERE id = :id"
        ),
        {"id": task.id},
    )
    record_event(
        session,
        "released",
        f"task {task.id} released by worker {worker_id} at item {cursor} of its shard",
        task_id=task.id,
        data={"worker_id": worker_id, "cursor": cursor},
        **owner_ids(task),
    )


def retry_or_fail_task(
    session: Session,
    task: ClaimedTask,
    error: str,
    *,
    permanent: bool,
    lease_seconds: float,
    backoff_base: float,
    worker_id: str,
) -> str:
    """Fenced: after an error, requeue the task with backoff, or fail it (and its owner) for good.

    A permanent error (bad config) or a task out of attempts fails at once. Returns the new status.
    """
    fence_task(session, task, lease_seconds)
    if permanent or task.attempts >= task.max_attempts:
        session.execute(
            text(
                "UPDATE task SET status = 'failed', last_error = :error, finished_at = now(), "
                "lease_expires_at = NULL WHERE id = :id"
            ),
            {"id": task.id, "error": error},
        )
        reason = "permanent error" if permanent else f"attempt {task.attempts} of {task.max_attempts}"
        record_event(
            session,
            "failed",
            f"task {task.id} failed ({reason}): {error}",
            task_id=task.id,
            data={"worker_id": worker_id, "attempt": task.attempts, "permanent": permanent},
            **owner_ids(task),
        )
        fail_owner(session, task, f"task {task.id} failed: {error}")
        return "failed"
    delay = backoff_seconds(backoff_base, task.attempts)
    session.execute(
        text(
            "UPDATE task SET status = 'queued', worker_id = NULL, lease_expires_at = NULL, "
            "last_error = :error, run_after = now() + make_interval(secs => :delay) WHERE id = :id"
        ),
        {"id": task.id, "error": error, "delay": delay},
    )
    record_event(
        session,
        "retry",
        f"task {task.id} will be retried in {delay:.0f}s (attempt {task.attempts} of "
        f"{task.max_attempts} failed): {error}",
        task_id=task.id,
        data={"worker_id": worker_id, "attempt": task.attempts, "delay_seconds": delay},
        **owner_ids(task),
    )
    return "queued"
