"""`/v1/samples`: keyset-paginated listing with filters (one sample, with its curation: service/reviews)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from service.dependencies import SessionDep, SettingsDep, Viewer
from service.pagination import CursorPage, resolve_limit
from service.samples import service
from service.samples.schemas import SampleListParams, SampleOut

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
