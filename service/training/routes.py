"""`/v1/training-runs`: launch student fine-tunes on dataset versions, follow their loss, cancel them."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Response, status

from service.dependencies import Admin, PageDep, SessionDep, SettingsDep, Viewer
from service.errors import problem_responses
from service.limits import BIGINT_MAX, INT_MAX
from service.pagination import Page
from service.training import service
from service.training.schemas import (
    EvaluationItemFilter,
    EvaluationItemOut,
    EventOut,
    MetricOut,
    RunStatus,
    TrainingRunCreate,
    TrainingRunDetail,
    TrainingRunOut,
)

router = APIRouter(prefix="/training-runs", tags=["training"])

RunId = Annotated[int, Path(ge=1, le=BIGINT_MAX)]


@router.post(
    "",
    response_model=TrainingRunDetail,
    status_code=status.HTTP_202_ACCEPTED,
    responses=problem_responses(404),  # the dataset version does not exist
)
def submit_training_run(
    body: TrainingRunCreate, principal: Admin, session: SessionDep, settings: SettingsDep, response: Response
) -> TrainingRunDetail:
    """Queue a student fine-tune on a dataset version (a `train` worker runs it)."""
    run = service.submit_run(session, body, principal=principal, settings=settings)
    response.headers["Location"] = f"/v1/training-runs/{run.id}"
    return TrainingRunDetail.model_validate(service.run_detail(session, run.id))


@router.get("", response_model=Page[TrainingRunOut])
def list_training_runs(
    _: Viewer,
    session: SessionDep,
    page: PageDep,
    status_: Annotated[
        RunStatus | None, Query(alias="status", description="Only runs in this status.")
    ] = None,
    dataset_id: Annotated[
        int | None, Query(ge=1, le=BIGINT_MAX, description="Only runs on this dataset version.")
    ] = None,
) -> Page[TrainingRunOut]:
    """List training runs, newest first."""
    rows, total = service.list_runs(
        session, status=status_, dataset_id=dataset_id, limit=page.limit, offset=page.offset
    )
    return Page[TrainingRunOut](
        items=[TrainingRunOut.model_validate(row) for row in rows],
        total=total,
        limit=page.limit,
        offset=page.offset,
    )


@router.get("/{run_id}", response_model=TrainingRunDetail)
def get_training_run(_: Viewer, session: SessionDep, run_id: RunId) -> TrainingRunDetail:
    """One run: status, progress (step/total, ETA, tokens/s), checkpoints, model path, evaluation table."""
    return TrainingRunDetail.model_validate(service.run_detail(session, run_id))


@router.get("/{run_id}/metrics", response_model=Page[MetricOut])
def list_training_metrics(
    _: Viewer,
    session: SessionDep,
    page: PageDep,
    run_id: RunId,
    after_step: Annotated[
        int | None, Query(ge=0, le=INT_MAX, description="Only steps after this one (for polling).")
    ] = None,
) -> Page[MetricOut]:
    """The run's metric series by step: loss, learning rate, grad norm, eval loss, tokens/s, epoch."""
    rows, total = service.list_metrics(
        session, run_id, after_step=after_step, limit=page.limit, offset=page.offset
    )
    return Page[MetricOut](
        items=[MetricOut.model_validate(row) for row in rows],
        total=total,
        limit=page.limit,
        offset=page.offset,
    )


@router.get("/{run_id}/events", response_model=Page[EventOut])
def list_training_events(
    _: Viewer,
    session: SessionDep,
    page: PageDep,
    run_id: RunId,
    after: Annotated[
        int | None, Query(ge=0, le=BIGINT_MAX, description="Only events with a larger id (for polling).")
    ] = None,
) -> Page[EventOut]:
    """The run's timeline, oldest first: queued, claimed, resumed, checkpoints, trained, evaluated."""
    rows, total = service.list_events(session, run_id, after_id=after, limit=page.limit, offset=page.offset)
    return Page[EventOut](
        items=[EventOut.model_validate(row) for row in rows],
        total=total,
        limit=page.limit,
        offset=page.offset,
    )


@router.get("/{run_id}/evaluation/items", response_model=Page[EvaluationItemOut])
def list_evaluation_items(
    _: Viewer,
    session: SessionDep,
    page: PageDep,
    run_id: RunId,
    item_filter: Annotated[
        EvaluationItemFilter,
        Query(
            alias="filter",
            description="all; disagreements (teacher and trained student differ in correctness or answer "
            "text); student_wrong (the trained student is wrong); teacher_wrong.",
        ),
    ] = "all",
) -> Page[EvaluationItemOut]:
    """Every scored evaluation item with the teacher's and the students' answers, in item order."""
    rows, total = service.list_evaluation_items(
        session, run_id, item_filter=item_filter, limit=page.limit, offset=page.offset
    )
    return Page[EvaluationItemOut](
        items=[EvaluationItemOut.model_validate(row) for row in rows],
        total=total,
        limit=page.limit,
        offset=page.offset,
    )


@router.post(
    "/{run_id}/cancel",
    response_model=TrainingRunDetail,
    responses={409: {"description": "Already finished."}},
)
def cancel_training_run(principal: Admin, session: SessionDep, run_id: RunId) -> TrainingRunDetail:
    """Cancel a queued or running run: the worker stops its training process; checkpoints stay on disk."""
    return TrainingRunDetail.model_validate(service.cancel_run(session, run_id, principal=principal))


@router.post(
    "/{run_id}/resume",
    response_model=TrainingRunDetail,
    status_code=status.HTTP_202_ACCEPTED,
    responses={409: {"description": "The run is not cancelled or failed."}},
)
def resume_training_run(principal: Admin, session: SessionDep, run_id: RunId) -> TrainingRunDetail:
    """Queue a cancelled or failed run again: it continues from its last checkpoint."""
    return TrainingRunDetail.model_validate(service.resume_run(session, run_id, principal=principal))
