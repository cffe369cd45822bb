"""Owner moves take the workers' lock order (task, then owner): cancel of a filter run or training
run, and a task failing for good while a sibling shard writes a chunk, wait for that write and
never deadlock with it. On committed rows of a real Postgres (see test_queue_leases for jobs)."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.orm import Session

from service.auth import Principal
from service.db.models import DatasetVersion, FilterRun, Task, TrainingRun
from service.db.session import get_engine, transaction
from service.queue.claims import claim_tasks
from service.queue.leases import retry_or_fail_task
from service.queue.owners import cancel_owner, requeue_owner
from tests.service.queue.queue_factories import create_job, job_row, task_row

ADMIN = Principal(token_id=0, name="admin", role="admin")
DEADLOCK_WAIT = 1.5  # longer than Postgres's deadlock_timeout (1s): a deadlock would be detected


@pytest.fixture
def owners_db(clean_queue: str) -> Iterator[str]:
    """The queue database; filter runs, training runs and dataset versions are emptied too."""
    yield clean_queue
    with transaction(clean_queue) as session:
        session.execute(text("TRUNCATE filter_run, training_run, dataset_version RESTART IDENTITY CASCADE"))


def running_filter_run(url: str) -> tuple[int, int]:
    """A committed running filter run and its running task: (run id, task id)."""
    with transaction(url) as session:
        run = FilterRun(spec={"filters": []}, items_total=4, counts={}, status="running")
        session.add(run)
        session.flush()
        task = Task(kind="filter", filter_run_id=run.id, status="running", payload={})
        session.add(task)
        session.flush()
        return run.id, task.id


def running_training_run(url: str) -> tuple[int, int]:
    """A committed running training run (on a frozen version) and its running task."""
    with transaction(url) as session:
        version = DatasetVersion(
            name=f"d-{uuid.uuid4().hex[:8]}", version=1, query={}, digest=uuid.uuid4().hex, status="succeeded"
        )
        session.add(version)
        session.flush()
        run = TrainingRun(
            dataset_id=version.id, student={"model": "fake"}, method="full", config={}, status="running"
        )
        session.add(run)
        session.flush()
        task = Task(kind="train", training_run_id=run.id, status="running", payload={})
        session.add(task)
        session.flush()
        return run.id, task.id


def cancel_filter_run(session: Session, run_id: int) -> str:
    from service.filters.service import cancel_filter_run

    return cancel_filter_run(session, run_id, principal=ADMIN).status


def cancel_training_run(session: Session, run_id: int) -> str:
    from service.training.service import cancel_run

    return cancel_run(session, run_id, principal=ADMIN).run.status


class ChunkWriter:
    """A worker's fenced write, slowed down between its two locks: its task row, then ``owner_sql``."""

    def __init__(self, url: str, task_id: int, owner_sql: str, owner_id: int) -> None:
        self.task_locked, self.go_on = threading.Event(), threading.Event()
        self.failures: list[BaseException] = []
        self._args = (url, task_id, owner_sql, owner_id)
        self._thread = threading.Thread(target=self._write)

    def _write(self) -> None:
        url, task_id, owner_sql, owner_id = self._args
        try:
            with transaction(url) as session:
                session.execute(text("UPDATE task SET cursor = 2 WHERE id = :id"), {"id": task_id})
                self.task_locked.set()
                self.go_on.wait(10)
                session.execute(text("SELECT pg_sleep(:s)"), {"s": DEADLOCK_WAIT})
                session.execute(text(owner_sql), {"id": owner_id})
        except BaseException as exc:
            self.failures.append(exc)

    def __enter__(self) -> ChunkWriter:
        self._thread.start()
        assert self.task_locked.wait(10)
        # By then the owner move is blocked on the task, or (wrong order) has locked the owner row.
        threading.Timer(0.2, self.go_on.set).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.go_on.set()
        self._thread.join(10)
        assert not self._thread.is_alive()


def owner_value(url: str, table: str, column: str, owner_id: int) -> Any:
    with Session(get_engine(url)) as session:
        return session.execute(
            text(f"SELECT {column} FROM {table} WHERE id = :id"), {"id": owner_id}
        ).scalar_one()


@pytest.mark.parametrize(
    ("make", "table", "write_sql", "cancel"),
    [
        pytest.param(
            running_filter_run,
            "filter_run",
            "UPDATE filter_run SET items_done = 2 WHERE id = :id",
            cancel_filter_run,
            id="filter-run",
        ),
        pytest.param(
            running_training_run,
            "training_run",
            "UPDATE training_run SET step = 2 WHERE id = :id",
            cancel_training_run,
            id="training-run",
        ),
    ],
)
def test_api_cancel_waits_for_a_write_in_flight_and_never_deadlocks_with_it(
    owners_db: str,
    make: Callable[[str], tuple[int, int]],
    table: str,
    write_sql: str,
    cancel: Callable[[Session, int], str],
) -> None:
    """The worker's write locks its task, then the run; cancel must take them in the same order."""
    url = owners_db
    run_id, task_id = make(url)
    with ChunkWriter(url, task_id, write_sql, run_id) as writer, transaction(url) as session:
        status = cancel(session, run_id)
    assert writer.failures == []  # the worker's write was not chosen as a deadlock victim
    assert status == "cancelled"
    progress = "items_done" if table == "filter_run" else "step"
    assert owner_value(url, table, progress, run_id) == 2  # the write in flight stays
    assert owner_value(url, table, "status", run_id) == "cancelled"
    task = task_row(url, task_id)
    assert (task.status, task.cursor, task.lease_expires_at) == ("cancelled", 2, None)


def test_cancel_of_a_finished_owner_changes_nothing(owners_db: str) -> None:
    url = owners_db
    run_id, task_id = running_training_run(url)
    with transaction(url) as session:
        session.execute(text("UPDATE training_run SET status = 'failed' WHERE id = :id"), {"id": run_id})
    with transaction(url) as session:
        assert cancel_owner(session, "training_run_id", run_id) is None
    assert owner_value(url, "training_run", "status", run_id) == "failed"
    assert task_row(url, task_id).status == "running"  # left alone: the owner was not moved


def test_requeue_moves_only_a_failed_or_cancelled_owner(owners_db: str) -> None:
    url = owners_db
    run_id, task_id = running_training_run(url)
    with transaction(url) as session:
        assert requeue_owner(session, "training_run_id", run_id) is None  # running: left alone
    assert (owner_value(url, "training_run", "status", run_id), task_row(url, task_id).status) == (
        "running",
        "running",
    )
    with transaction(url) as session:
        session.execute(
            text(
                "UPDATE training_run SET status = 'failed', error = 'oom', finished_at = now() WHERE id = :id"
            ),
            {"id": run_id},
        )
        session.execute(
            text(
                "UPDATE task SET status = 'failed', attempts = 3, cursor = 1, last_error = 'oom' "
                "WHERE id = :id"
            ),
            {"id": task_id},
        )
    with transaction(url) as session:
        assert requeue_owner(session, "training_run_id", run_id) == task_id
    assert owner_value(url, "training_run", "status", run_id) == "queued"
    assert owner_value(url, "training_run", "error", run_id) is None
    task = task_row(url, task_id)
    assert (task.status, task.attempts, task.cursor, task.last_error) == ("queued", 0, 1, None)


def test_a_task_failing_for_good_waits_for_a_sibling_chunk_and_never_deadlocks_with_it(
    clean_queue: str,
) -> None:
    """Failing the job cancels its other shards: those are locked before the job row."""
    url = clean_queue
    job_id, (failing_id, writing_id) = create_job(url, items=2, shard_size=1)
    with transaction(url) as session:
        claimed = {t.id: t for t in claim_tasks(session, "w", ["generate"], 2, 30.0)}
    write_sql = "UPDATE job SET items_done = items_done + 1 WHERE id = :id"
    with ChunkWriter(url, writing_id, write_sql, job_id) as writer, transaction(url) as session:
        status = retry_or_fail_task(
            session,
            claimed[failing_id],
            "boom",
            permanent=True,
            lease_seconds=30.0,
            backoff_base=0.0,
            worker_id="w",
        )
    assert writer.failures == []
    assert status == "failed"
    job = job_row(url, job_id)
    assert (job.status, job.items_done) == ("failed", 1)
    sibling = task_row(url, writing_id)
    assert (sibling.status, sibling.cursor) == ("cancelled", 2)
    assert sibling.last_error == f"cancelled: task {failing_id} failed"
