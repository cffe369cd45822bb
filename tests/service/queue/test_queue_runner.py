"""The worker runtime with a fake chunked handler: outcomes, cancel, graceful stop, signals."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from service.db.session import transaction
from service.workers.registry import HANDLERS, register_handler
from service.workers.runner import run_worker
from tests.factories import wait_until
from tests.service.queue import fake_worker
from tests.service.queue.queue_factories import create_job, event_kinds, job_row, queue_settings, task_row

HERE = Path(__file__).resolve().parent
KIND = fake_worker.FAKE_KIND


@pytest.fixture(autouse=True)
def fake_handler() -> Iterator[None]:
    previous = HANDLERS.get(KIND)
    register_handler(KIND, fake_worker.chunked_handler)
    fake_worker.FAILURES.update(transient=0, permanent=False)
    fake_worker.calls.clear()
    yield
    if previous is None:
        HANDLERS.pop(KIND, None)
    else:
        HANDLERS[KIND] = previous


def start_worker_thread(url: str, stop: threading.Event, **kwargs: object) -> threading.Thread:
    thread = threading.Thread(
        target=run_worker, args=(queue_settings(url), [KIND]), kwargs={"stop": stop, **kwargs}, daemon=True
    )
    thread.start()
    return thread


def cursors(url: str, job_id: int) -> int:
    with transaction(url) as session:
        return int(
            session.execute(
                text("SELECT sum(cursor) FROM task WHERE job_id = :j"), {"j": job_id}
            ).scalar_one()
        )


def test_worker_runs_a_job_to_success_and_exits_when_idle(clean_queue: str) -> None:
    url = clean_queue
    job_id, task_ids = create_job(url, items=12, shard_size=4, kind=KIND)
    run_worker(queue_settings(url), [KIND], concurrency=2, exit_when_idle=True)
    job = job_row(url, job_id)
    assert (job.status, job.items_done) == ("succeeded", 12)
    assert all(task_row(url, t).status == "succeeded" for t in task_ids)
    kinds = event_kinds(url, job_id)
    assert kinds.count("claimed") == 3
    assert kinds.count("checkpoint") == 12
    assert kinds[-1] == "finished"
    with transaction(url) as session:
        worker = session.execute(text("SELECT kinds, stopped_at FROM worker")).one()
    assert worker.kinds == [KIND]
    assert worker.stopped_at is not None


def test_max_tasks_stops_after_that_many(clean_queue: str) -> None:
    url = clean_queue
    job_id, _ = create_job(url, items=3, shard_size=1, kind=KIND)
    run_worker(queue_settings(url), [KIND], max_tasks=2)
    assert job_row(url, job_id).items_done == 2


def test_transient_errors_are_retried_then_fail_the_job(clean_queue: str) -> None:
    url = clean_queue
    job_id, (task_id,) = create_job(url, items=1, shard_size=1, kind=KIND, max_attempts=2)
    fake_worker.FAILURES["transient"] = 5
    run_worker(queue_settings(url), [KIND], exit_when_idle=True)
    assert len(fake_worker.calls) == 2  # max_attempts, then failed
    row = task_row(url, task_id)
    assert (row.status, row.attempts, row.last_error) == ("failed", 2, "RuntimeError: flaky")
    job = job_row(url, job_id)
    assert job.status == "failed"
    assert "flaky" in (job.error or "")
    assert event_kinds(url, job_id).count("retry") == 1


def test_a_transient_error_then_success(clean_queue: str) -> None:
    url = clean_queue
    job_id, _ = create_job(url, items=2, shard_size=2, kind=KIND, max_attempts=3)
    fake_worker.FAILURES["transient"] = 1
    run_worker(queue_settings(url), [KIND], exit_when_idle=True)
    assert job_row(url, job_id).status == "succeeded"


def test_permanent_errors_fail_at_the_first_attempt(clean_queue: str) -> None:
    url = clean_queue
    job_id, (task_id,) = create_job(url, items=1, shard_size=1, kind=KIND, max_attempts=5)
    fake_worker.FAILURES["permanent"] = True
    run_worker(queue_settings(url), [KIND], exit_when_idle=True)
    assert fake_worker.calls == [task_id]
    row = task_row(url, task_id)
    assert row.status == "failed"
    assert "nowhere" in (row.last_error or "")
    assert job_row(url, job_id).status == "failed"


def test_cancel_stops_the_worker_within_one_chunk(clean_queue: str) -> None:
    url = clean_queue
    job_id, (task_id,) = create_job(url, items=200, shard_size=200, kind=KIND)
    stop = threading.Event()
    worker = start_worker_thread(url, stop)
    wait_until(lambda: cursors(url, job_id) >= 3)
    with transaction(url) as session:  # what the API's cancel does
        session.execute(text("UPDATE job SET status = 'cancelled' WHERE id = :id"), {"id": job_id})
        session.execute(
            text(
                "UPDATE task SET status = 'cancelled' WHERE job_id = :id AND status IN ('queued', 'running')"
            ),
            {"id": job_id},
        )
    at_cancel = cursors(url, job_id)
    wait_until(lambda: "stopped" in event_kinds(url, job_id))
    time.sleep(3 * fake_worker.CHUNK_SECONDS)
    assert cursors(url, job_id) == at_cancel  # nothing written after the cancel committed
    assert task_row(url, task_id).status == "cancelled"
    assert job_row(url, job_id).status == "cancelled"
    assert job_row(url, job_id).items_done == at_cancel  # what was written stays
    stop.set()
    worker.join(timeout=10)
    assert not worker.is_alive()


def test_stop_event_checkpoints_and_releases(clean_queue: str) -> None:
    url = clean_queue
    job_id, (task_id,) = create_job(url, items=200, shard_size=200, kind=KIND)
    stop = threading.Event()
    worker = start_worker_thread(url, stop)
    wait_until(lambda: cursors(url, job_id) >= 2)
    stop.set()
    worker.join(timeout=10)
    assert not worker.is_alive()
    row = task_row(url, task_id)
    assert (row.status, row.worker_id, row.attempts) == ("queued", None, 0)
    assert 2 <= row.cursor < 200
    assert job_row(url, job_id).items_done == row.cursor
    assert "released" in event_kinds(url, job_id)


def test_two_workers_split_a_job(clean_queue: str) -> None:
    url = clean_queue
    job_id, task_ids = create_job(url, items=24, shard_size=2, kind=KIND)
    threads = [
        threading.Thread(
            target=run_worker, args=(queue_settings(url), [KIND]), kwargs={"exit_when_idle": True}
        )
        for _ in range(2)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    job = job_row(url, job_id)
    assert (job.status, job.items_done) == ("succeeded", 24)
    assert sorted(fake_worker.calls) == sorted(task_ids)  # every shard ran exactly once
    with transaction(url) as session:
        workers = session.execute(text("SELECT count(DISTINCT worker_id) FROM task")).scalar_one()
    assert workers == 2


def spawn_fake_worker(url: str, chunk_seconds: float = 0.1) -> subprocess.Popen[str]:
    env = {**os.environ, "FAKE_CHUNK_SECONDS": str(chunk_seconds), "PYTHONPATH": str(HERE.parents[3])}
    process = subprocess.Popen(
        [sys.executable, str(HERE / "fake_worker.py"), url],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert process.stdout is not None
    assert process.stdout.readline().strip() == "fake worker ready"
    return process


def test_sigterm_finishes_the_chunk_and_releases(clean_queue: str) -> None:
    url = clean_queue
    job_id, (task_id,) = create_job(url, items=500, shard_size=500, kind=KIND)
    process = spawn_fake_worker(url)
    wait_until(lambda: cursors(url, job_id) >= 2)
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=30)
    assert process.returncode == 0, output
    row = task_row(url, task_id)
    assert (row.status, row.worker_id) == ("queued", None), output
    assert 2 <= row.cursor < 500
    assert job_row(url, job_id).items_done == row.cursor
    assert "released" in event_kinds(url, job_id)
    assert "SIGTERM" in output


def test_a_second_sigterm_exits_at_once(clean_queue: str) -> None:
    url = clean_queue
    job_id, (task_id,) = create_job(url, items=500, shard_size=500, kind=KIND)
    process = spawn_fake_worker(url, chunk_seconds=3.0)  # long chunks: a graceful stop would wait
    wait_until(lambda: cursors(url, job_id) >= 1)
    process.send_signal(signal.SIGTERM)
    time.sleep(0.3)  # two signals at once would merge into one
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=30)
    assert process.returncode == 128 + signal.SIGTERM, output
    row = task_row(url, task_id)
    assert row.status == "running"  # not released: its lease expires and the reaper requeues it
    assert "released" not in event_kinds(url, job_id)
