"""What a task belongs to — a job, a filter run, a training run or a dataset version (its freeze) —
and how its status follows the tasks.

The four owner tables share ``status``, ``error``, ``started_at`` and ``finished_at``, so the queue
moves them the same way: running on the first claim, succeeded when every task succeeded, failed
(with the error) when a task failed for good. An owner that is already finished or cancelled is
never moved again.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol, TypedDict

from sqlalchemy import text
from sqlalchemy.orm import Session

# Foreign-key column on task → owner table. Table names come only from this mapping.
OWNER_TABLES: dict[str, str] = {
    "job_id": "job",
    "filter_run_id": "filter_run",
    "training_run_id": "training_run",
    "dataset_id": "dataset_version",
}


class TaskRef(Protocol):
    @property
    def id(self) -> int: ...
    @property
    def job_id(self) -> int | None: ...
    @property
    def filter_run_id(self) -> int | None: ...
    @property
    def training_run_id(self) -> int | None: ...
    @property
    def dataset_id(self) -> int | None: ...


class OwnerIds(TypedDict):
    job_id: int | None
    filter_run_id: int | None
    training_run_id: int | None
    dataset_id: int | None


def owner_ids(task: TaskRef) -> OwnerIds:
    """Keyword arguments for record_event: the task's owner ids."""
    return {
        "job_id": task.job_id,
        "filter_run_id": task.filter_run_id,
        "training_run_id": task.training_run_id,
        "dataset_id": task.dataset_id,
    }


def owner_of(task: TaskRef) -> tuple[str, str, int] | None:
    """(task column, owner table, owner id), or None for a task without an owner."""
    for column, table in OWNER_TABLES.items():
        value = getattr(task, column)
        if value is not None:
            return column, table, int(value)
    return None


def mark_owners_running(session: Session, tasks: Iterable[TaskRef]) -> None:
    """Queued owners of freshly claimed tasks become running (started_at set once)."""
    by_table: dict[str, set[int]] = {}
    for task in tasks:
        owner = owner_of(task)
        if owner is not None:
            by_table.setdefault(owner[1], set()).add(owner[2])
    for table, ids in by_table.items():
        session.execute(
            text(
                f"UPDATE {table} SET status = 'running', started_at = coalesce(started_at, now()) "
                "WHERE id = ANY(:ids) AND status = 'queued'"
            ),
            {"ids": sorted(ids)},
        )


def finish_owner_if_done(session: Session, task: TaskRef) -> bool:
    """After ``task`` succeeded: mark its owner succeeded when all its tasks have. Returns whether it did.

    The owner row is locked first, so two workers finishing the last two tasks at once serialise
    here and the second one sees the first one's committed task. NO KEY UPDATE (what an UPDATE of
    the row takes anyway) does not conflict with the key-share locks of rows inserted with a
    foreign key to it (events, samples) in those same transactions.
    """
    owner = owner_of(task)
    if owner is None:
        return False
    column, table, owner_id = owner
    status = session.execute(
        text(f"SELECT status FROM {table} WHERE id = :id FOR NO KEY UPDATE"), {"id": owner_id}
    ).scalar_one_or_none()
    if status not in ("queued", "running"):
        return False
    unfinished = session.execute(
        text(f"SELECT count(*) FROM task WHERE {column} = :id AND status <> 'succeeded'"), {"id": owner_id}
    ).scalar_one()
    if unfinished:
        return False
    session.execute(
        text(
            f"UPDATE {table} SET status = 'succeeded', finished_at = now(), "
            "started_at = coalesce(started_at, now()) WHERE id = :id"
        ),
        {"id": owner_id},
    )
    return True


def fail_owner(session: Session, task: TaskRef, error: str) -> bool:
    """A task failed for good: fail its owner with the error and cancel its other unfinished tasks.

    What was already written stays. Returns whether the owner was moved (False when it had already
    finished, failed or been cancelled).
    """
    owner = owner_of(task)
    if owner is None:
        return False
    column, table, owner_id = owner
    moved = session.execute(
        text(
            f"UPDATE {table} SET status = 'failed', error = :error, finished_at = now() "
            "WHERE id = :id AND status IN ('queued', 'running') RETURNING id"
        ),
        {"id": owner_id, "error": error},
    ).first()
    if moved is None:
        return False
    session.execute(
        text(
            f"UPDATE task SET status = 'cancelled', finished_at = now(), lease_expires_at = NULL, "
            f"last_error = coalesce(last_error, :why) "
            f"WHERE {column} = :id AND id <> :task_id AND status IN ('queued', 'running')"
        ),
        {"id": owner_id, "task_id": task.id, "why": f"cancelled: task {task.id} failed"},
    )
    return True
