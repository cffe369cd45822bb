"""Review routes on `/v1/samples`: review one sample, review by query, summary per job.

Registered before the samples router so `/v1/samples/summary` is not taken for a sample id.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query

from service.dependencies import Reviewer, SessionDep, Viewer
from service.errors import problem_responses
from service.limits import BIGINT_MAX
from service.reviews import service
from service.reviews.schemas import BulkReview, BulkReviewResult, ReviewSummary, SampleReviewPatch
from service.samples import service as samples_service
from service.samples.schemas import SampleDetail
from service.stored_text import StoredText

router = APIRouter(prefix="/samples", tags=["review"])


@router.get("/summary", response_model=ReviewSummary)
def review_summary(
    _: Viewer,
    session: SessionDep,
    job_id: Annotated[int, Query(ge=1, le=BIGINT_MAX, description="The job to summarise.")],
    stage: Annotated[
        StoredText | None, Query(min_length=1, max_length=100, description="Default: the job's answer stage.")
    ] = None,
) -> ReviewSummary:
    """Accepted / rejected / pending of a job's samples, overall and by filter outcome."""
    return service.review_summary(session, job_id, stage)


@router.post("/review", response_model=BulkReviewResult)
def bulk_review(body: BulkReview, principal: Reviewer, session: SessionDep) -> BulkReviewResult:
    """Accept, reject or reset (and tag) every sample a query matches; says how many changed."""
    return service.bulk_review(session, body, principal=principal)


@router.get("/{sample_id}", response_model=SampleDetail, responses=problem_responses(404), tags=["samples"])
def get_sample(
    _: Viewer, session: SessionDep, sample_id: Annotated[int, Path(ge=1, le=BIGINT_MAX)]
) -> SampleDetail:
    """One sample with its seed inputs, provenance, filter verdicts (with reasons) and revisions."""
    return service.curated_sample_detail(session, samples_service.get_sample(session, sample_id))


@router.patch("/{sample_id}", response_model=SampleDetail)
def review_sample(
    body: SampleReviewPatch,
    principal: Reviewer,
    session: SessionDep,
    sample_id: Annotated[int, Path(ge=1, le=BIGINT_MAX)],
) -> SampleDetail:
    """Review one sample: accept / reject / reset, edit question or answer (kept as revisions), tags, note."""
    sample = service.review_sample(session, sample_id, body, principal=principal)
    return service.curated_sample_detail(session, sample)
