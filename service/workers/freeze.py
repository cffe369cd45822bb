"""The `freeze` task: copy a queued dataset version's rows and set its counts, digest and lineage.

The whole freeze is one transaction (see service.datasets.service.freeze_version): a worker killed
mid-freeze leaves no row behind, and the next claim redoes it from the start, so rows are never
duplicated. The transaction's fence comes last, right before commit: a fence at the start would
lock the task row for the whole copy and hold up the heartbeat that extends its lease; fenced last,
a worker whose lease was lost meanwhile still commits nothing. Progress (rows copied of the total)
is written after each chunk in short transactions of its own, so clients see it while the copy
runs; those writes are fenced too (they change nothing once the lease is gone).
"""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.orm import Session

from service.datasets.service import freeze_version
from service.db.models import DatasetVersion
from service.db.session import transaction
from service.errors import ValidationProblem
from service.events import record_event
from service.queue.leases import fence_task
from service.workers.context import PermanentTaskError, TaskContext, TaskOutcome

PROGRESS_SQL = text(
    """
    UPDATE dataset_version SET rows_done = :done, rows_total = :total
    WHERE id = :id AND EXISTS (
        SELECT 1 FROM task WHERE task.id = :task_id AND lease_token = :token AND status = 'running')
    """
)


class _FreezeInterrupted(Exception):
    """Raised between chunks to roll the freeze back when the worker is asked to stop."""


def run_freeze_task(ctx: TaskContext) -> TaskOutcome:
    """Handler of `freeze` tasks (see the module docstring)."""
    task = ctx.task
    if task.dataset_id is None:
        raise PermanentTaskError(f"task {task.id} has no dataset version")
    dataset_id = task.dataset_id

    def report(rows_done: int, rows_total: int) -> None:
        if ctx.stop_requested:
            raise _FreezeInterrupted
        ctx.check_lease()
        with transaction(ctx.database_url) as session:
            session.execute(
                PROGRESS_SQL,
                {
                    "done": rows_done,
                    "total": rows_total,
                    "id": dataset_id,
                    "task_id": task.id,
                    "token": task.lease_token,
                },
            )

    def freeze(session: Session) -> None:
        version = session.get(DatasetVersion, dataset_id)
        if version is None:
            raise PermanentTaskError(f"dataset version {dataset_id} does not exist")
        if version.digest:  # an earlier attempt committed the rows; only its completion was lost
            fence_task(session, task, ctx.settings.lease_seconds)
            return
        try:
            freeze_version(session, version, task.payload, progress=report)
        except ValidationProblem as exc:
            raise PermanentTaskError(exc.detail) from exc
        fence_task(session, task, ctx.settings.lease_seconds)
        counts = version.row_counts
        record_event(
            session,
            "frozen",
            f"{version.name} v{version.version} frozen: {counts['total']:,} rows "
            f"({counts['train']:,} train, {counts['test']:,} test)",
            dataset_id=dataset_id,
            task_id=task.id,
            data={"row_counts": counts, "digest": version.digest},
        )

    try:
        ctx.with_retry(freeze)
    except _FreezeInterrupted:
        ctx.logger.info("task %s: freeze of dataset version %s rolled back to stop", task.id, dataset_id)
        return TaskOutcome.STOPPED
    return TaskOutcome.DONE
