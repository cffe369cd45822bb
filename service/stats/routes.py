"""`/v1/stats`: read-only aggregates over samples for charts and confirmations (bounded cost)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from service.datasets.schemas import DatasetCreate
from service.dependencies import SessionDep, Viewer
from service.samples.query import SampleQuery
from service.stats import service
from service.stats.schemas import DatasetPreview, SampleCount, SampleStats

router = APIRouter(prefix="/stats", tags=["stats"])


@router.get("/samples", response_model=SampleStats)
def sample_stats(_: Viewer, session: SessionDep, query: Annotated[SampleQuery, Query()]) -> SampleStats:
    """Length and score histograms, per-filter pass/fail, review and stage counts of a sample query."""
    return service.sample_stats(session, query)


@router.get("/samples/count", response_model=SampleCount)
def count_samples(_: Viewer, session: SessionDep, query: Annotated[SampleQuery, Query()]) -> SampleCount:
    """How many samples a query matches (the planner's estimate when counting takes too long)."""
    return service.count_samples(session, query)


@router.post("/dataset-preview", response_model=DatasetPreview)
def dataset_preview(_: Viewer, session: SessionDep, body: DatasetCreate) -> DatasetPreview:
    """Rows and train/test sizes that POST /v1/datasets would freeze for this body (nothing is stored)."""
    return service.dataset_preview(session, body)
