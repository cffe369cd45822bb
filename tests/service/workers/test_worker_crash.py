"""Crash test: `hardlabel worker` subprocesses (real vLLM) killed mid-shard; nothing lost, nothing twice."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import psutil
from sqlalchemy import text

from service.db.session import transaction
from service.workers.runner import run_worker
from tests.factories import wait_until
from tests.service.queue.queue_factories import create_job, event_kinds, job_row, queue_settings
from tests.service.workers.worker_factories import (
    ROOT,
    checkpoints,
    generate_recipe,
    sample_stats,
    spawn_cli_worker,
)

ITEMS, SHARD, CHUNK, N = 24, 12, 2, 2  # two shards of six chunks
# Short leases so a killed worker's shards come back fast; no backoff so they are claimable at once.
WORKER_SETTINGS = {
    "lease_seconds": 4,
    "heartbeat_seconds": 0.5,
    "reaper_seconds": 0.5,
    "poll_seconds": 0.1,
    "retry_backoff_seconds": 0,
    "log_level": "INFO",
}
# A stopping worker finishes its chunk (tiny here) and releases it, then stops its engine: seconds,
# not the 12 s vLLM's default engine shutdown took (issue #12.11). Generous for a loaded machine.
STOP_SECONDS = 8.0
# After `kill -9` of a worker, its engine process notices (a pipe closes) and exits.
ORPHAN_GRACE_SECONDS = 1.0


def task_states(url: str, job_id: int) -> list[str]:
    with transaction(url) as session:
        rows = session.execute(text("SELECT status FROM task WHERE job_id = :j ORDER BY id"), {"j": job_id})
        return [r[0] for r in rows]


def run_until(
    url: str, job_id: int, log: Path, at_checkpoint: int, sig: signal.Signals
) -> subprocess.Popen[bytes]:
    """Start a worker subprocess, wait for the job's ``at_checkpoint``-th chunk, then send ``sig``."""
    process = spawn_cli_worker(url, log, **WORKER_SETTINGS)
    try:
        wait_until(
            lambda: checkpoints(url, job_id) >= at_checkpoint or process.poll() is not None,
            timeout=240,
            what=f"checkpoint {at_checkpoint}",
        )
        assert process.poll() is None, log.read_text()[-3000:]
        process.send_signal(sig)
        process.wait(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    return process


def test_workers_killed_mid_shard_lose_nothing_and_duplicate_nothing(
    clean_queue: str, tiny_teacher: dict[str, Any]
) -> None:
    url = clean_queue
    job_id, _ = create_job(
        url,
        items=ITEMS,
        shard_size=SHARD,
        spec=generate_recipe(ITEMS, n=N, max_tokens=48),
        teacher=tiny_teacher,
        params={"chunk_size": CHUNK},
        max_attempts=10,
    )
    log = ROOT / ".tmp" / f"crash-test-worker-{job_id}.log"
    log.unlink(missing_ok=True)

    # kill -9 in the middle of the job, at three points; each time a new worker takes over.
    killed_holding_a_shard = 0
    for point in (1, 3, 5):
        victim = run_until(url, job_id, log, point, signal.SIGKILL)
        assert victim.returncode == -signal.SIGKILL
        assert job_row(url, job_id).status == "running"  # killed mid-job, not after it
        # Normally mid-shard (its shard stays leased to the dead worker until the lease expires);
        # on a fast machine the kill can land between two shards.
        killed_holding_a_shard += "running" in task_states(url, job_id)
    assert killed_holding_a_shard >= 2

    # SIGTERM (mid second shard): the worker finishes its chunk, checkpoints, releases, exits 0.
    stopped = run_until(url, job_id, log, 7, signal.SIGTERM)
    assert stopped.returncode == 0, log.read_text()[-3000:]
    assert "running" not in task_states(url, job_id)
    assert "released" in event_kinds(url, job_id)
    assert job_row(url, job_id).status == "running"

    # Another worker finishes the job.
    run_worker(queue_settings(url, lease_seconds=3), ["generate"], exit_when_idle=True)

    job = job_row(url, job_id)
    assert job.status == "succeeded", job.error
    assert sample_stats(url, job_id) == (ITEMS * N, ITEMS * N)
    # The counters moved in the same transactions as the samples: redone chunks were not counted twice.
    assert (job.items_done, job.samples_written) == (ITEMS, ITEMS * N)
    assert checkpoints(url, job_id) == ITEMS // CHUNK
    kinds = event_kinds(url, job_id)
    # One per worker killed holding a shard: the reaper brought the shard back.
    assert kinds.count("requeued") == killed_holding_a_shard
    assert kinds[-1] == "finished"
    with transaction(url) as session:
        items = session.execute(
            text("SELECT DISTINCT item_index FROM sample WHERE job_id = :j ORDER BY 1"), {"j": job_id}
        ).scalars()
        assert list(items) == list(range(ITEMS))
    log.unlink()  # kept only when the test fails, to read what the workers said


def test_a_worker_whose_teacher_ran_in_a_vllm_engine_process_exits(
    clean_queue: str, tiny_teacher: dict[str, Any]
) -> None:
    """vLLM's default engine runs in a child process, which Python waits for at exit (the other tests
    run vLLM in-process): the worker must shut its teachers down, or it never exits."""
    url = clean_queue
    job_id, _ = create_job(
        url, items=2, shard_size=2, spec=generate_recipe(2, n=1, max_tokens=4), teacher=tiny_teacher
    )
    log = ROOT / ".tmp" / f"engine-process-worker-{job_id}.log"
    log.unlink(missing_ok=True)
    process = spawn_cli_worker(url, log, {"VLLM_ENABLE_V1_MULTIPROCESSING": "1"}, **WORKER_SETTINGS)
    try:
        process.wait(timeout=150)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
            raise AssertionError(f"the worker did not exit:\n{log.read_text()[-3000:]}")
    assert process.returncode == 0, log.read_text()[-3000:]
    assert job_row(url, job_id).status == "succeeded"

    log.unlink()

    # Issue #12.11: SIGTERM stops a worker holding a loaded engine promptly, engine process included;
    # after `kill -9` of the worker its engine process follows it within a short grace.
    log = ROOT / ".tmp" / f"engine-process-stop-{os.getpid()}.log"
    log.unlink(missing_ok=True)
    process, descendants = worker_holding_an_engine_process(url, tiny_teacher, log)
    try:
        asked = time.monotonic()
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=120)
        stop_seconds = time.monotonic() - asked
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    print(f"\nSIGTERM → exit: {stop_seconds:.1f}s; descendants {[p.pid for p in descendants]}")
    assert process.returncode == 0, log.read_text()[-3000:]
    assert live(descendants) == [], "no process of the worker outlives it"
    assert stop_seconds < STOP_SECONDS, f"the worker took {stop_seconds:.1f}s to stop"

    process, descendants = worker_holding_an_engine_process(url, tiny_teacher, log)
    process.kill()
    process.wait()
    killed = time.monotonic()
    while live(descendants) and time.monotonic() - killed < ORPHAN_GRACE_SECONDS:
        time.sleep(0.05)
    survivors = live(descendants)
    for orphan in survivors:  # leave nothing running for the next test
        orphan.kill()
    assert survivors == [], f"{[p.pid for p in survivors]} outlived the killed worker"
    log.unlink()


def live(processes: list[psutil.Process]) -> list[psutil.Process]:
    """The processes still running (a zombie has exited: only its parent's wait is missing)."""
    alive = []
    for process in processes:
        try:
            if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                alive.append(process)
        except psutil.NoSuchProcess:
            pass
    return alive


def worker_holding_an_engine_process(
    url: str, tiny_teacher: dict[str, Any], log: Path
) -> tuple[subprocess.Popen[bytes], list[psutil.Process]]:
    """A worker (not exiting when idle) that ran a job on a vLLM engine process and keeps it loaded."""
    job_id, _ = create_job(
        url, items=2, shard_size=2, spec=generate_recipe(2, n=1, max_tokens=4), teacher=tiny_teacher
    )
    process = spawn_cli_worker(
        url, log, {"VLLM_ENABLE_V1_MULTIPROCESSING": "1"}, exit_when_idle=False, **WORKER_SETTINGS
    )
    wait_until(
        lambda: job_row(url, job_id).status == "succeeded" or process.poll() is not None,
        timeout=240,
        what="the job on the engine process",
    )
    assert process.poll() is None, log.read_text()[-3000:]
    descendants = psutil.Process(process.pid).children(recursive=True)
    assert descendants, "vLLM runs its engine core in a child process"
    return process, descendants
