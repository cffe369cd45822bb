"""`/v1/samples`: keyset-paginated listing with filters, and single samples with provenance."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query

from service.dependencies import SessionDep, SettingsDep, Viewer
from service.errors import problem_responses
from service.limits import BIGINT_MAX
from service.pagination import CursorPage, resolve_limit
from service.reviews.service import curated_sample_detail
from service.samples import service
from service.samples.schemas import SampleDetail, SampleListParams, SampleOut

router = APIRouter(prefix="/samples", tags=["samples"])


@router.get("", response_model=CursorPage[SampleOut])
def list_samples(
    _: Viewer,
    session: SessionDep,
    settings: SettingsDep,
    params: Annotated[SampleListParams, Query()],
) -> CursorPage[SampleOut]:
    """List samples by id (keyset pages: follow `next_cursor`), filtered by job, stage, parse status, text."""
    limit = resolve_limit(settings, params.limit)
    rows, next_cursor = service.list_samples(session, params, cursor=params.cursor, limit=limit)
    return CursorPage[SampleOut](
        items=[SampleOut.model_validate(row) for row in rows], limit=limit, next_cursor=next_cursor
    )


@router.get("/{sample_id}", response_model=SampleDetail, responses=problem_responses(404))
def get_sample(
    _: Viewer, session: SessionDep, sample_id: Annotated[int, Path(ge=1, le=BIGINT_MAX)]
) -> SampleDetail:
    """One sample with its seed inputs, provenance, filter verdicts (with reasons) and revisions."""
    return curated_sample_detail(session, service.get_sample(session, sample_id))
