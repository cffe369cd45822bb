"""Factories and fixtures of the queue and worker tests (imported by both folders' conftest.py).

Queue tests run on committed data in a database of their own: workers claim *any* queued task of
their kinds, so these tests must not share a database with tests that leave queued jobs behind
(and must not leave theirs for others).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.orm import Session

from service.db.models import Job, Task
from service.db.scratch import scratch_database
from service.db.session import get_engine, transaction
from service.queue.enqueue import enqueue_tasks, shard_ranges
from service.settings import Settings
from tests.factories import add_job, add_recipe

FAKE_KIND = "export"  # a real task kind with no handler yet: the tests register fake ones


@pytest.fixture(scope="session")
def queue_db_url(database_url: str) -> Iterator[str]:
    """A migrated database only the queue tests use."""
    with scratch_database(database_url, "hardlabel_queue") as url:
        yield url


@pytest.fixture
def clean_queue(queue_db_url: str) -> Iterator[str]:
    """The queue database, emptied of jobs, tasks and workers after the test."""
    yield queue_db_url
    with transaction(queue_db_url) as session:
        session.execute(text("TRUNCATE task, event, sample, job, recipe, worker RESTART IDENTITY CASCADE"))


def queue_settings(url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": url,
        "lease_seconds": 5.0,
        "heartbeat_seconds": 0.5,
        "reaper_seconds": 0.5,
        "poll_seconds": 0.05,
        "retry_backoff_seconds": 0.0,
        "max_attempts": 3,
        "chunk_size": 4,
    }
    values.update(overrides)
    return Settings(**values)


MakeJob = Callable[..., tuple[int, list[int]]]


def create_job(
    url: str,
    *,
    items: int = 8,
    shard_size: int = 4,
    kind: str = "generate",
    spec: dict[str, Any] | None = None,
    teacher: dict[str, Any] | None = None,
    max_attempts: int = 3,
    params: dict[str, Any] | None = None,
    seed: int = 0,
) -> tuple[int, list[int]]:
    """A committed recipe + job + one task per shard, as the API creates them; (job id, task ids)."""
    with transaction(url) as session:
        job = add_job(
            session,
            add_recipe(session, spec or {"name": "fake"}),
            teacher=teacher or {"model": "fake"},
            items_total=items,
            params=params or {},
            seed=seed,
            status="queued",
        )
        tasks = enqueue_tasks(
            session,
            kind,
            [{"item_start": s, "item_end": e} for s, e in shard_ranges(items, shard_size)],
            job_id=job.id,
            max_attempts=max_attempts,
        )
        return job.id, [t.id for t in tasks]


def task_row(url: str, task_id: int) -> Task:
    with Session(get_engine(url), expire_on_commit=False) as session:
        task = session.get(Task, task_id)
        assert task is not None
        return task


def job_row(url: str, job_id: int) -> Job:
    with Session(get_engine(url), expire_on_commit=False) as session:
        job = session.get(Job, job_id)
        assert job is not None
        return job


def event_kinds(url: str, job_id: int) -> list[str]:
    with Session(get_engine(url)) as session:
        rows = session.execute(text("SELECT kind FROM event WHERE job_id = :j ORDER BY id"), {"j": job_id})
        return [r[0] for r in rows]
