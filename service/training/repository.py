"""Training-run rows, their task, metric series and events, and what a submission reads of a version."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, ColumnElement, Float, and_, cast, false, func, or_, select, true
from sqlalchemy.orm import Session

from service.db.models import DatasetRow, EvaluationItem, Event, Job, Task, TrainingMetric, TrainingRun
from service.queue.owners import cancel_owner, requeue_owner


def get_run(session: Session, run_id: int) -> TrainingRun | None:
    return session.get(TrainingRun, run_id)


def add_run(session: Session, **values: Any) -> TrainingRun:
    run = TrainingRun(**values)
    session.add(run)
    session.flush()
    session.refresh(run)  # server defaults (status, step, checkpoints, created_at)
    return run


def list_runs(
    session: Session, *, status: str | None, dataset_id: int | None, limit: int, offset: int
) -> tuple[list[TrainingRun], int]:
    query = select(TrainingRun)
    if status is not None:
        query = query.where(TrainingRun.status == status)
    if dataset_id is not None:
        query = query.where(TrainingRun.dataset_id == dataset_id)
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    rows = session.scalars(query.order_by(TrainingRun.id.desc()).limit(limit).offset(offset))
    return list(rows), total


def split_counts(session: Session, dataset_id: int) -> dict[str, int]:
    rows = session.execute(
        select(DatasetRow.split, func.count())
        .where(DatasetRow.dataset_id == dataset_id)
        .group_by(DatasetRow.split)
    ).all()
    return {split: int(n) for split, n in rows}


def job_ids_of_rows(session: Session, dataset_id: int) -> list[int]:
    """The jobs whose samples became the version's teacher rows (each row's `extra.job_id`)."""
    job_id = cast(DatasetRow.extra["job_id"].astext, BigInteger)
    rows = session.scalars(
        select(job_id)
        .where(DatasetRow.dataset_id == dataset_id, DatasetRow.source == "teacher", job_id.is_not(None))
        .distinct()
        .order_by(job_id)
    )
    return [int(row) for row in rows]


def job_teachers(session: Session, job_ids: Sequence[int]) -> list[tuple[int, dict[str, Any]]]:
    """(job id, primary teacher config) of the given jobs, by id."""
    if not job_ids:
        return []
    rows = session.execute(select(Job.id, Job.teachers[0]).where(Job.id.in_(list(job_ids))).order_by(Job.id))
    return [(int(job_id), dict(teacher)) for job_id, teacher in rows]


def run_task(session: Session, run_id: int) -> Task | None:
    """The run's queue task (one per run)."""
    return session.scalar(
        select(Task).where(Task.training_run_id == run_id).order_by(Task.id.desc()).limit(1)
    )


def last_claim_time(session: Session, run_id: int) -> datetime | None:
    """When the run's task was last claimed (the current attempt's start)."""
    return session.scalar(
        select(func.max(Event.created_at)).where(Event.training_run_id == run_id, Event.kind == "claimed")
    )


def recent_steps(session: Session, run_id: int, n: int) -> list[tuple[int, float]]:
    """(step, unix time it was logged) of the run's last `n` logged steps."""
    logged_at = cast(TrainingMetric.data["time"].astext, Float)
    rows = session.execute(
        select(TrainingMetric.step, logged_at)
        .where(TrainingMetric.training_run_id == run_id, logged_at.is_not(None))
        .order_by(TrainingMetric.step.desc())
        .limit(n)
    ).all()
    return [(int(step), float(at)) for step, at in rows]


def list_metrics(
    session: Session, run_id: int, *, after_step: int | None, limit: int, offset: int
) -> tuple[list[TrainingMetric], int]:
    query = select(TrainingMetric).where(TrainingMetric.training_run_id == run_id)
    if after_step is not None:
        query = query.where(TrainingMetric.step > after_step)
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    rows = session.scalars(query.order_by(TrainingMetric.step).limit(limit).offset(offset))
    return list(rows), total


def list_events(
    session: Session, run_id: int, *, after_id: int | None, limit: int, offset: int
) -> tuple[list[Event], int]:
    query = select(Event).where(Event.training_run_id == run_id)
    if after_id is not None:
        query = query.where(Event.id > after_id)
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    rows = session.scalars(query.order_by(Event.id).limit(limit).offset(offset))
    return list(rows), total


def cancel_run_rows(session: Session, run: TrainingRun) -> int | None:
    """Cancel the run and its unfinished task; how many tasks were cancelled, None if it had finished.

    Task first, then the run (see service.queue.owners.cancel_owner): this waits for a worker's
    write in flight, never deadlocks with it; the worker's heartbeat then finds the task cancelled
    and stops the training process.
    """
    session.flush()
    cancelled = cancel_owner(session, "training_run_id", run.id)
    session.refresh(run)
    return cancelled


def requeue_run_rows(session: Session, run: TrainingRun) -> int | None:
    """Queue a cancelled or failed run again: its task keeps its cursor (phase), its attempts restart.

    Returns the task id, None if the run is not cancelled or failed. The worker that claims it
    resumes from the run's last complete checkpoint.
    """
    session.flush()
    task_id = requeue_owner(session, "training_run_id", run.id)
    session.refresh(run)
    return task_id


def evaluation_item_condition(item_filter: str) -> ColumnElement[bool]:
    """The rows an evaluation-item filter keeps (see EvaluationItemOut for `disagreements`)."""
    item = EvaluationItem
    if item_filter == "disagreements":
        return and_(
            item.teacher_correct.is_not(None),
            item.student_after_correct.is_not(None),
            or_(
                item.teacher_correct != item.student_after_correct,
                item.teacher_answer.is_distinct_from(item.student_after_answer),
            ),
        )
    if item_filter == "student_wrong":
        return item.student_after_correct.is_(false())
    if item_filter == "teacher_wrong":
        return item.teacher_correct.is_(false())
    return true()


def list_evaluation_items(
    session: Session, run_id: int, *, item_filter: str, limit: int, offset: int
) -> tuple[list[EvaluationItem], int]:
    query = select(EvaluationItem).where(
        EvaluationItem.training_run_id == run_id, evaluation_item_condition(item_filter)
    )
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    rows = session.scalars(query.order_by(EvaluationItem.item_index).limit(limit).offset(offset))
    return list(rows), total
