"""Job rows, their shards (tasks) and their events."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from service.db.models import Event, Job, Sample, Task
from service.queue.owners import cancel_owner


def lock_idempotency_key(session: Session, key: str) -> None:
    """Serialize submissions with one key until the transaction ends (the second sees the first's job)."""
    session.execute(select(func.pg_advisory_xact_lock(func.hashtextextended("job-idempotency:" + key, 0))))


def get_by_idempotency_key(session: Session, key: str) -> Job | None:
    return session.scalar(select(Job).where(Job.idempotency_key == key))


def get_job(session: Session, job_id: int, *, for_update: bool = False) -> Job | None:
    return session.get(Job, job_id, with_for_update=for_update)


def add_job(session: Session, **values: Any) -> Job:
    job = Job(**values)
    session.add(job)
    session.flush()
    session.refresh(job)  # server defaults (status, counters, created_at)
    return job


def list_jobs(session: Session, *, status: str | None, limit: int, offset: int) -> tuple[list[Job], int]:
    query = select(Job)
    if status is not None:
        query = query.where(Job.status == status)
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    rows = session.scalars(query.order_by(Job.id.desc()).limit(limit).offset(offset))
    return list(rows), total


def list_shards(session: Session, job_id: int) -> list[Task]:
    return list(session.scalars(select(Task).where(Task.job_id == job_id).order_by(Task.id)))


def cancel_job_rows(session: Session, job: Job) -> int | None:
    """Cancel the job and its unfinished tasks; how many tasks were cancelled, None if it had finished.

    Tasks first, then the job (see service.queue.owners.cancel_owner): this can only wait for a
    worker's chunk in flight (which stays), never deadlock with it.
    """
    session.flush()
    cancelled = cancel_owner(session, "job_id", job.id)
    session.refresh(job)
    return cancelled


def list_events(
    session: Session, job_id: int, *, after_id: int | None, limit: int, offset: int
) -> tuple[list[Event], int]:
    query = select(Event).where(Event.job_id == job_id)
    if after_id is not None:
        query = query.where(Event.id > after_id)
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    rows = session.scalars(query.order_by(Event.id).limit(limit).offset(offset))
    return list(rows), total


def item_samples(session: Session, job_id: int, stage: str, first_item: int, end_item: int) -> list[Sample]:
    """The job's samples of `stage` for items [first_item, end_item), by item, teacher, sample index."""
    return list(
        session.scalars(
            select(Sample)
            .where(
                Sample.job_id == job_id,
                Sample.stage == stage,
                Sample.item_index >= first_item,
                Sample.item_index < end_item,
            )
            .order_by(Sample.item_index, Sample.teacher_index, Sample.sample_index)
        )
    )
