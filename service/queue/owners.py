"""What a task belongs to — a job, a filter run, a training run or a dataset version (its freeze) —
and how its status follows the tasks.

The four owner tables share ``status``, ``error``, ``started_at`` and ``finished_at``, so the queue
moves them the same way: running on the first claim, succeeded when every task succeeded, failed
(with the error) when a task failed for good, cancelled on request; a failed or cancelled one may be
queued again. Every move is guarded on the owner's status (an owner that is already finished is
never moved again, except by a requeue) and, where a move also touches the owner's *other* tasks,
takes the locks in the workers' order: a worker's fenced write locks its task row and then its
owner's, so those tasks are locked first (by id), then the owner. Taken the other way round, the
move and a worker's chunk in flight would each wait for the other (a deadlock).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal, Protocol, TypedDict

from sqlalchemy import text
from sqlalchemy.orm import Session

from service.statuses import ACTIVE_STATUSES, REQUEUEABLE_STATUSES, WorkStatus

OwnerColumn = Literal["job_id", "filter_run_id", "training_run_id", "dataset_id"]

# Foreign-key column on task → owner table. Table names come only from this mapping.
OWNER_TABLES: dict[OwnerColumn, str] = {
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


def sql_statuses(statuses: Iterable[WorkStatus]) -> str:
    """A status set as an SQL list, e.g. ``('queued', 'running')`` (in a stable order)."""
    return "(" + ", ".join(f"'{status.value}'" for status in sorted(statuses)) + ")"


ACTIVE_SQL = sql_statuses(ACTIVE_STATUSES)
REQUEUEABLE_SQL = sql_statuses(REQUEUEABLE_STATUSES)


def owner_of(task: TaskRef) -> tuple[OwnerColumn, str, int] | None:
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
    if status not in ACTIVE_STATUSES:
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


def lock_active_tasks(
    session: Session, column: OwnerColumn, owner_id: int, *, except_task: int | None = None
) -> list[int]:
    """Lock the owner's queued and running tasks (but ``except_task``) in id order; their ids.

    NO KEY UPDATE, as the UPDATE that follows would take anyway. A task whose worker is writing a
    chunk is waited for; one that worker finished meanwhile is no longer returned.
    """
    rows = session.execute(
        text(
            f"SELECT id FROM task WHERE {column} = :id AND status IN {ACTIVE_SQL} "
            "AND id IS DISTINCT FROM :except_task ORDER BY id FOR NO KEY UPDATE"
        ),
        {"id": owner_id, "except_task": except_task},
    )
    return [int(row[0]) for row in rows]


def fail_owner(session: Session, task: TaskRef, error: str) -> bool:
    """A task failed for good: fail its owner with the error and cancel its other unfinished tasks.

    What was already written stays. Returns whether the owner was moved (False when it had already
    finished, failed or been cancelled).
    """
    owner = owner_of(task)
    if owner is None:
        return False
    column, table, owner_id = owner
    others = lock_active_tasks(session, column, owner_id, except_task=task.id)
    moved = session.execute(
        text(
            f"UPDATE {table} SET status = 'failed', error = :error, finished_at = now() "
            f"WHERE id = :id AND status IN {ACTIVE_SQL} RETURNING id"
        ),
        {"id": owner_id, "error": error},
    ).first()
    if moved is None:
        return False
    if others:
        session.execute(
            text(
                "UPDATE task SET status = 'cancelled', finished_at = now(), lease_expires_at = NULL, "
                "last_error = coalesce(last_error, :why) WHERE id = ANY(:ids)"
            ),
            {"ids": others, "why": f"cancelled: task {task.id} failed"},
        )
    return True


def cancel_owner(session: Session, column: OwnerColumn, owner_id: int) -> int | None:
    """Cancel a queued or running owner and its unfinished tasks (what was written stays).

    Returns how many tasks were cancelled, or None when the owner had already finished — before,
    or while this waited for a worker's chunk in flight — and nothing was changed. The worker's
    next fence then finds its task cancelled and stops.
    """
    table = OWNER_TABLES[column]
    tasks = lock_active_tasks(session, column, owner_id)
    moved = session.execute(
        text(
            f"UPDATE {table} SET status = 'cancelled', finished_at = now() "
            f"WHERE id = :id AND status IN {ACTIVE_SQL} RETURNING id"
        ),
        {"id": owner_id},
    ).first()
    if moved is None:
        return None
    if tasks:
        session.execute(
            text(
                "UPDATE task SET status = 'cancelled', finished_at = now(), lease_expires_at = NULL "
                "WHERE id = ANY(:ids)"
            ),
            {"ids": tasks},
        )
    return len(tasks)


def requeue_owner(session: Session, column: OwnerColumn, owner_id: int) -> int | None:
    """Queue a failed or cancelled owner of one task (a training run) again, with that task.

    The owner's error and finish time are cleared; its task (the latest, should there be more)
    keeps its cursor and restarts its attempts, claimable at once. Returns the task id, or None
    when the owner is not failed or cancelled and nothing was changed.
    """
    table = OWNER_TABLES[column]
    task_id = session.execute(
        text(f"SELECT id FROM task WHERE {column} = :id ORDER BY id DESC LIMIT 1 FOR NO KEY UPDATE"),
        {"id": owner_id},
    ).scalar_one_or_none()
    moved = session.execute(
        text(
            f"UPDATE {table} SET status = 'queued', error = NULL, finished_at = NULL "
            f"WHERE id = :id AND status IN {REQUEUEABLE_SQL} RETURNING id"
        ),
        {"id": owner_id},
    ).first()
    if moved is None:
        return None
    requeued = session.execute(
        text(
            "UPDATE task SET status = 'queued', attempts = 0, run_after = now(), finished_at = NULL, "
            "last_error = NULL, worker_id = NULL, lease_expires_at = NULL WHERE id = :id RETURNING id"
        ),
        {"id": task_id},
    ).scalar_one()
    return int(requeued)
