"""Training runs: submission (validated against the dataset version and the disk), reading, cancellation."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from service.auth import Principal
from service.datasets import service as datasets
from service.db.models import DatasetVersion, EvaluationItem, Event, TrainingMetric, TrainingRun
from service.errors import ConflictError, NotFoundError, ValidationProblem
from service.events import record_event
from service.filters.eval_sets import check_eval_set
from service.filters.specs import EvalSetSpec
from service.model_folders import student_model_problem, teacher_model_problem
from service.queue.enqueue import enqueue_tasks
from service.settings import Settings
from service.training import repository
from service.training.progress import RATE_WINDOW, phase_of
from service.training.schemas import EvaluationSettings, StudentSpec, TrainingRunCreate
from service.training.scratch_tokenizer import resolve_scratch_tokenizer

Loc = tuple[str | int, ...]


@dataclass(frozen=True)
class RunDetailView:
    """A run with what its detail page shows beside the row (read by schemas.TrainingRunDetail)."""

    run: TrainingRun
    dataset: DatasetVersion
    attempts: int
    last_error: str | None
    phase: str | None
    recent_steps: list[tuple[int, float]]
    attempt_started_at: datetime | None


def submit_run(
    session: Session, payload: TrainingRunCreate, *, principal: Principal, settings: Settings
) -> TrainingRun:
    """Validate the request against the version and the disk, store the run, queue its `train` task."""
    version = datasets.get_dataset(session, payload.dataset_id)
    if version.status != "succeeded":
        raise ValidationProblem.at(
            ("body", "dataset_id"),
            f"dataset version {version.id} ({version.name} v{version.version}) is not frozen "
            f"({version.status}{': ' + version.error if version.error else ''}): wait until it has succeeded",
        )
    counts = repository.split_counts(session, version.id)
    if not counts.get("train"):
        raise ValidationProblem.at(
            ("body", "dataset_id"),
            f"dataset version {version.id} ({version.name} v{version.version}) has no train rows",
        )
    _check_student(payload.student)
    evaluation = _resolve_evaluation(session, payload.evaluation, version, counts)
    run = repository.add_run(
        session,
        dataset_id=version.id,
        student=resolve_scratch_tokenizer(
            payload.student, lambda: evaluation.get("teacher") or _lineage_teacher(session, version)
        ),
        method=payload.method,
        config={**payload.hyperparameters.model_dump(mode="json"), "method": payload.method},
        evaluation=evaluation,
        created_by=principal.token_id,
    )
    enqueue_tasks(
        session,
        "train",
        [{}],
        training_run_id=run.id,
        priority=payload.priority,
        max_attempts=settings.max_attempts,
    )
    student = payload.student.model or "a new model from scratch"
    record_event(
        session,
        "queued",
        f"queued by {principal.name!r}: {payload.method} fine-tune of {student} on dataset "
        f"{version.name} v{version.version} ({counts.get('train', 0)} train rows)",
        training_run_id=run.id,
        data={"dataset_id": version.id, "train_rows": counts.get("train", 0), "token_id": principal.token_id},
    )
    session.flush()
    return run


def _check_student(student: StudentSpec) -> None:
    if student.model is not None:
        problem = student_model_problem(student.model)
        if problem:
            raise ValidationProblem.at(("body", "student", "model"), problem)


def _resolve_evaluation(
    session: Session, settings: EvaluationSettings, version: DatasetVersion, counts: dict[str, int]
) -> dict[str, Any]:
    """The settings as stored on the run: items checked to exist, the teacher resolved."""
    loc: Loc = ("body", "evaluation")
    if not settings.enabled:
        return settings.model_dump(mode="json", exclude={"teacher"})
    if settings.eval_set is not None:
        source = settings.eval_set
        problem = check_eval_set(
            EvalSetSpec(
                path=source.path, format=source.format, split=source.split, fields=[source.question_field]
            )
        )
        if problem:
            raise ValidationProblem.at((*loc, "eval_set", "path"), problem)
    elif not counts.get(settings.split):
        raise ValidationProblem.at(
            (*loc, "split"),
            f"dataset version {version.id} has no {settings.split} rows: create the version with a split, "
            "give an eval_set, or set enabled=false",
        )
    teacher = (
        settings.teacher.model_dump(mode="json") if settings.teacher else _lineage_teacher(session, version)
    )
    if teacher.get("engine", "vllm") == "vllm":
        engine_kwargs = teacher.get("engine_kwargs")
        problem = teacher_model_problem(
            str(teacher.get("model", "")), engine_kwargs if isinstance(engine_kwargs, dict) else None
        )
        if problem:
            where = (*loc, "teacher", "model")
            raise ValidationProblem.at(
                where, problem if settings.teacher else f"the version's teacher: {problem}"
            )
    return {**settings.model_dump(mode="json"), "teacher": teacher}


def _lineage_teacher(session: Session, version: DatasetVersion) -> dict[str, Any]:
    """The teacher of the jobs the version's rows came from; 422 when there is none or several."""
    job_ids = [int(job["id"]) for job in (version.lineage or {}).get("jobs", []) if isinstance(job, dict)]
    if not job_ids:
        job_ids = repository.job_ids_of_rows(session, version.id)
    teachers = repository.job_teachers(session, job_ids)
    models = sorted({str(teacher.get("model")) for _, teacher in teachers})
    loc: Loc = ("body", "evaluation", "teacher")
    if not teachers:
        raise ValidationProblem.at(
            loc, f"dataset version {version.id} records no teacher (no jobs): give evaluation.teacher"
        )
    if len(models) > 1:
        raise ValidationProblem.at(
            loc,
            f"dataset version {version.id} has answers of several teachers ({', '.join(models)}): name one",
        )
    return teachers[-1][1]


def get_run(session: Session, run_id: int) -> TrainingRun:
    run = repository.get_run(session, run_id)
    if run is None:
        raise NotFoundError(f"training run {run_id} does not exist")
    return run


def run_detail(session: Session, run_id: int) -> RunDetailView:
    run = get_run(session, run_id)
    dataset = datasets.get_dataset(session, run.dataset_id)
    task = repository.run_task(session, run_id)
    last_error = run.error or (f"task {task.id}: {task.last_error}" if task and task.last_error else None)
    return RunDetailView(
        run=run,
        dataset=dataset,
        attempts=task.attempts if task else 0,
        last_error=last_error,
        phase=phase_of(task.status if task else None, task.cursor if task else 0),
        recent_steps=repository.recent_steps(session, run_id, RATE_WINDOW) if run.status == "running" else [],
        attempt_started_at=repository.last_claim_time(session, run_id) if run.status == "running" else None,
    )


def list_runs(
    session: Session, *, status: str | None, dataset_id: int | None, limit: int, offset: int
) -> tuple[list[TrainingRun], int]:
    return repository.list_runs(session, status=status, dataset_id=dataset_id, limit=limit, offset=offset)


def cancel_run(session: Session, run_id: int, *, principal: Principal) -> RunDetailView:
    """Cancel a queued or running run (the worker kills its training process); 409 when finished."""
    run = get_run(session, run_id)
    cancelled = repository.cancel_run_rows(session, run)
    if cancelled is None:  # finished before, or while this waited for a worker's write
        raise ConflictError(
            f"training run {run_id} has already finished ({run.status}); only queued or running runs "
            "can be cancelled.",
            title="Training Run Already Finished",
            slug="training-run-finished",
            run_status=run.status,
        )
    record_event(
        session,
        "cancelled",
        f"cancelled by {principal.name!r} at step {run.step}"
        + (f" of {run.total_steps}" if run.total_steps else ""),
        training_run_id=run_id,
        data={"token_id": principal.token_id, "tasks_cancelled": cancelled, "step": run.step},
    )
    session.flush()
    return run_detail(session, run_id)


def resume_run(session: Session, run_id: int, *, principal: Principal) -> RunDetailView:
    """Queue a cancelled or failed run again; it continues from its last checkpoint. 409 otherwise."""
    run = get_run(session, run_id)
    previous = run.status
    task_id = repository.requeue_run_rows(session, run)
    if task_id is None:
        raise ConflictError(
            f"training run {run_id} is {run.status}; only cancelled or failed runs can be resumed.",
            title="Training Run Not Resumable",
            slug="training-run-not-resumable",
            run_status=run.status,
        )
    record_event(
        session,
        "requeued",
        f"{previous} run requeued by {principal.name!r}: training continues from its last checkpoint",
        training_run_id=run_id,
        task_id=task_id,
        data={"token_id": principal.token_id, "previous_status": previous, "step": run.step},
    )
    session.flush()
    return run_detail(session, run_id)


def list_metrics(
    session: Session, run_id: int, *, after_step: int | None, limit: int, offset: int
) -> tuple[list[TrainingMetric], int]:
    get_run(session, run_id)
    return repository.list_metrics(session, run_id, after_step=after_step, limit=limit, offset=offset)


def list_events(
    session: Session, run_id: int, *, after_id: int | None, limit: int, offset: int
) -> tuple[list[Event], int]:
    get_run(session, run_id)
    return repository.list_events(session, run_id, after_id=after_id, limit=limit, offset=offset)


def list_evaluation_items(
    session: Session, run_id: int, *, item_filter: str, limit: int, offset: int
) -> tuple[list[EvaluationItem], int]:
    """The run's scored items in item order (empty until the run was evaluated); 404 for no such run."""
    get_run(session, run_id)
    return repository.list_evaluation_items(
        session, run_id, item_filter=item_filter, limit=limit, offset=offset
    )
