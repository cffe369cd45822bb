"""The database goes away mid-job (connections killed, Postgres restarted): the worker carries on."""

from __future__ import annotations

import shutil
import threading
import uuid
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, make_url, text

from service.db.migrate import upgrade
from service.db.session import get_engine, transaction
from service.embedded_db import remove_embedded_postgres, restart_embedded_postgres, start_embedded_postgres
from service.workers.runner import APPLICATION_NAME_PREFIX, run_worker
from tests.factories import wait_until
from tests.service.queue.queue_factories import create_job, job_row, queue_settings
from tests.service.workers.worker_factories import ROOT, checkpoints, generate_recipe, sample_stats

ITEMS, SHARD, CHUNK, N = 16, 8, 2, 2  # two shards of four chunks


def start_worker(url: str) -> tuple[threading.Thread, threading.Event]:
    stop = threading.Event()
    worker = threading.Thread(
        target=run_worker,
        args=(queue_settings(url, lease_seconds=20, heartbeat_seconds=0.3),),
        kwargs={"kinds": ["generate"], "stop": stop, "exit_when_idle": True},
        daemon=True,
    )
    worker.start()
    return worker, stop


def assert_complete(url: str, job_id: int) -> None:
    job = job_row(url, job_id)
    assert job.status == "succeeded", job.error
    assert sample_stats(url, job_id) == (ITEMS * N, ITEMS * N)
    assert (job.items_done, job.samples_written) == (ITEMS, ITEMS * N)


def reached(url: str, job_id: int, point: int) -> bool:
    return checkpoints(url, job_id) >= point


def postmaster_pid(data_dir: Path) -> int:
    return int((data_dir / "postmaster.pid").read_text().splitlines()[0])


def terminate_worker_connections(url: str) -> int:
    """pg_terminate_backend every connection of hardlabel workers to this database; how many."""
    admin = create_engine(make_url(url).set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            return len(
                conn.execute(
                    text(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE datname = :db AND application_name LIKE :app"
                    ),
                    {"db": make_url(url).database, "app": f"{APPLICATION_NAME_PREFIX}%"},
                ).all()
            )
    finally:
        admin.dispose()


def test_killed_connections_mid_job_lose_nothing(clean_queue: str, tiny_teacher: dict[str, Any]) -> None:
    url = clean_queue
    job_id, _ = create_job(
        url,
        items=ITEMS,
        shard_size=SHARD,
        spec=generate_recipe(ITEMS, n=N, max_tokens=24),
        teacher=tiny_teacher,
        params={"chunk_size": CHUNK},
    )
    worker, stop = start_worker(url)
    try:
        killed = []
        for point in (1, 3, 5):
            wait_until(partial(reached, url, job_id, point), what=f"checkpoint {point}")
            if point == 1:  # read before the first kill, which takes the heartbeat's connection too
                with transaction(url) as session:
                    first_kill = session.execute(text("SELECT clock_timestamp()")).scalar_one()
            killed.append(terminate_worker_connections(url))
        # There was a worker connection to kill every time (after the first kill, only the ones it
        # reopened: how many depends on whether its heartbeat and its writer overlapped just then).
        assert killed[0] >= 2, killed
        assert all(count >= 1 for count in killed), killed
        worker.join(timeout=240)
        assert not worker.is_alive()
    finally:
        stop.set()
    assert_complete(url, job_id)
    with transaction(url) as session:
        beat = session.execute(text("SELECT max(heartbeat_at) FROM worker")).scalar_one()
    # The heartbeat thread reconnected too: it beat after the kill of its connection (the first; a
    # later kill may find it between beats, and the job may end before its next one).
    assert beat > first_kill


@pytest.fixture
def embedded_server() -> Iterator[tuple[str, Path]]:
    """A private embedded Postgres (restarting the shared server would disturb other tests)."""
    root = ROOT / ".tmp" / f"embedded-restart-{uuid.uuid4().hex[:8]}"
    data_dir = root / "postgres"
    server = make_url(start_embedded_postgres(data_dir))
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text('CREATE DATABASE "hardlabel"'))
    admin.dispose()
    url = server.set(database="hardlabel").render_as_string(hide_password=False)
    upgrade(url)
    yield url, data_dir
    get_engine(url).dispose()
    remove_embedded_postgres(data_dir)
    shutil.rmtree(root, ignore_errors=True)


def test_postgres_restarted_mid_job_loses_nothing(
    embedded_server: tuple[str, Path], tiny_teacher: dict[str, Any]
) -> None:
    url, data_dir = embedded_server
    job_id, _ = create_job(
        url,
        items=ITEMS,
        shard_size=SHARD,
        spec=generate_recipe(ITEMS, n=N, max_tokens=24),
        teacher=tiny_teacher,
        params={"chunk_size": CHUNK},
    )
    worker, stop = start_worker(url)
    try:
        for point in (2, 5):
            wait_until(partial(reached, url, job_id, point), what=f"checkpoint {point}")
            before = postmaster_pid(data_dir)
            restart_embedded_postgres(data_dir)
            assert postmaster_pid(data_dir) != before  # a new server: every connection was dropped
        worker.join(timeout=240)
        assert not worker.is_alive()
    finally:
        stop.set()
    assert_complete(url, job_id)
