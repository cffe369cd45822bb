"""`/v1/filter-runs`: apply filters to samples (queued for workers), follow and cancel runs."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Response, status

from service.dependencies import Admin, PageDep, SessionDep, SettingsDep, Viewer
from service.filters import service
from service.filters.schemas import FilterRunCreate, FilterRunOut
from service.jobs.schemas import EventOut
from service.limits import BIGINT_MAX
from service.pagination import Page

router = APIRouter(prefix="/filter-runs", tags=["filters"])

RunId = Annotated[int, Path(ge=1, le=BIGINT_MAX)]


@router.post("", response_model=FilterRunOut, status_code=status.HTTP_202_ACCEPTED)
def create_filter_run(
    body: FilterRunCreate, principal: Admin, session: SessionDep, settings: SettingsDep, response: Response
) -> FilterRunOut:
    """Queue a filter run over a selection of samples; verdicts (with reasons) replace earlier ones."""
    run = service.create_filter_run(session, body, principal=principal, settings=settings)
    response.headers["Location"] = f"/v1/filter-runs/{run.id}"
    return FilterRunOut.model_validate(run)


@router.get("", response_model=Page[FilterRunOut])
def list_filter_runs(_: Viewer, session: SessionDep, page: PageDep) -> Page[FilterRunOut]:
    """List filter runs, newest first."""
    rows, total = service.list_filter_runs(session, limit=page.limit, offset=page.offset)
    return Page[FilterRunOut](
        items=[FilterRunOut.model_validate(r) for r in rows],
        total=total,
        limit=page.limit,
        offset=page.offset,
    )


@router.get("/{run_id}", response_model=FilterRunOut)
def get_filter_run(_: Viewer, session: SessionDep, run_id: RunId) -> FilterRunOut:
    """One filter run: status, progress (rate, ETA) and per-filter pass/fail counts."""
    return FilterRunOut.model_validate(service.get_filter_run(session, run_id))


@router.post(
    "/{run_id}/cancel", response_model=FilterRunOut, responses={409: {"description": "Already finished."}}
)
def cancel_filter_run(principal: Admin, session: SessionDep, run_id: RunId) -> FilterRunOut:
    """Cancel a queued or running filter run; verdicts already written stay."""
    return FilterRunOut.model_validate(service.cancel_filter_run(session, run_id, principal=principal))


@router.get("/{run_id}/events", response_model=Page[EventOut])
def list_events(
    _: Viewer,
    session: SessionDep,
    page: PageDep,
    run_id: RunId,
    after: Annotated[
        int | None, Query(ge=0, le=BIGINT_MAX, description="Only events with a larger id.")
    ] = None,
) -> Page[EventOut]:
    """The run's timeline, oldest first: queued, claimed, passes, checkpoints, finished."""
    rows, total = service.list_events(session, run_id, after_id=after, limit=page.limit, offset=page.offset)
    return Page[EventOut](
        items=[EventOut.model_validate(r) for r in rows], total=total, limit=page.limit, offset=page.offset
    )
