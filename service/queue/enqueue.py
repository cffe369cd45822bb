"""Putting work on the queue: one task row per shard (generation) or per run (filter, train, freeze)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy.orm import Session

from service.db.models import Task


def enqueue_tasks(
    session: Session,
    kind: str,
    payloads: Sequence[dict[str, Any]],
    *,
    job_id: int | None = None,
    filter_run_id: int | None = None,
    training_run_id: int | None = None,
    dataset_id: int | None = None,
    priority: int = 0,
    max_attempts: int = 5,
) -> list[Task]:
    """Add one queued task per payload (flushed, so ids are set; the caller's transaction commits)."""
    tasks = [
        Task(
            kind=kind,
            payload=dict(payload),
            job_id=job_id,
            filter_run_id=filter_run_id,
            training_run_id=training_run_id,
            dataset_id=dataset_id,
            priority=priority,
            max_attempts=max_attempts,
        )
        for payload in payloads
    ]
    session.add_all(tasks)
    session.flush()
    return tasks


def shard_ranges(total: int, shard_size: int) -> list[tuple[int, int]]:
    """[start, end) item ranges covering 0..total in shards of at most shard_size items."""
    return [(start, min(start + shard_size, total)) for start in range(0, total, shard_size)]
