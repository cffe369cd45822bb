"""`/v1/jobs`: submit generation jobs, follow their progress and timeline, cancel them."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Path, Query, Response, status

from service.dependencies import Admin, PageDep, SessionDep, SettingsDep, Viewer
from service.errors import problem_responses
from service.jobs import service
from service.jobs.schemas import EventOut, ItemAnswersOut, JobCreate, JobDetail, JobOut, JobStatus
from service.limits import BIGINT_MAX
from service.pagination import Page

router = APIRouter(prefix="/jobs", tags=["jobs"])

JobId = Annotated[int, Path(ge=1, le=BIGINT_MAX)]


@router.post(
    "",
    response_model=JobDetail,
    status_code=status.HTTP_202_ACCEPTED,
    responses={
        200: {"model": JobDetail, "description": "Idempotent replay: the job first created with this key."},
        409: {"description": "The Idempotency-Key was used with a different request body."},
        **problem_responses(413),
    },
)
def submit_job(
    body: JobCreate,
    principal: Admin,
    session: SessionDep,
    settings: SettingsDep,
    response: Response,
    idempotency_key: Annotated[
        str | None,
        Header(
            alias="Idempotency-Key",
            min_length=1,
            max_length=200,
            description="Retry-safe submission: the same key and body return the same job.",
        ),
    ] = None,
) -> JobDetail:
    """Submit a generation job (queued; workers claim its shards)."""
    submission = service.submit_job(
        session, body, principal=principal, settings=settings, idempotency_key=idempotency_key
    )
    if not submission.created:
        response.status_code = status.HTTP_200_OK
    response.headers["Location"] = f"/v1/jobs/{submission.job.id}"
    return JobDetail.model_validate(service.job_detail(session, submission.job.id))


@router.get("", response_model=Page[JobOut])
def list_jobs(
    _: Viewer,
    session: SessionDep,
    page: PageDep,
    status_: Annotated[
        JobStatus | None, Query(alias="status", description="Only jobs in this status.")
    ] = None,
) -> Page[JobOut]:
    """List jobs, newest first."""
    rows, total = service.list_jobs(session, status=status_, limit=page.limit, offset=page.offset)
    return Page[JobOut](
        items=[JobOut.model_validate(row) for row in rows], total=total, limit=page.limit, offset=page.offset
    )


@router.get("/{job_id}", response_model=JobDetail, responses=problem_responses(404))
def get_job(_: Viewer, session: SessionDep, job_id: JobId) -> JobDetail:
    """One job with progress (items, samples, tokens, rates, ETA), shards and last error."""
    return JobDetail.model_validate(service.job_detail(session, job_id))


@router.post(
    "/{job_id}/cancel",
    response_model=JobDetail,
    responses={**problem_responses(404), 409: {"description": "The job has already finished."}},
)
def cancel_job(principal: Admin, session: SessionDep, job_id: JobId) -> JobDetail:
    """Cancel a queued or running job: workers stop within one chunk; written samples stay."""
    return JobDetail.model_validate(service.cancel_job(session, job_id, principal=principal))


@router.get("/{job_id}/events", response_model=Page[EventOut], responses=problem_responses(404))
def list_events(
    _: Viewer,
    session: SessionDep,
    page: PageDep,
    job_id: JobId,
    after: Annotated[
        int | None, Query(ge=0, le=BIGINT_MAX, description="Only events with a larger id (for polling).")
    ] = None,
) -> Page[EventOut]:
    """The job's timeline, oldest first: queued, claimed, checkpoints, retries, lease lost, finished."""
    rows, total = service.list_events(session, job_id, after_id=after, limit=page.limit, offset=page.offset)
    return Page[EventOut](
        items=[EventOut.model_validate(row) for row in rows],
        total=total,
        limit=page.limit,
        offset=page.offset,
    )


@router.get("/{job_id}/answers", response_model=Page[ItemAnswersOut], responses=problem_responses(404))
def item_answers(_: Viewer, session: SessionDep, page: PageDep, job_id: JobId) -> Page[ItemAnswersOut]:
    """The job's items in order with every teacher's answer side by side (its answer stage), and
    whether they agree: how a job with several teachers is compared. `total` counts items."""
    rows, total = service.item_answers(session, job_id, limit=page.limit, offset=page.offset)
    return Page[ItemAnswersOut](
        items=[ItemAnswersOut.model_validate(row, from_attributes=True) for row in rows],
        total=total,
        limit=page.limit,
        offset=page.offset,
    )
