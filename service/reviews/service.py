"""Reviewing samples: one at a time (with revisions), in bulk by query, and per-job summaries."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy.orm import Session

from service.auth import Principal
from service.db.models import FilterVerdict, Sample, SampleRevision
from service.errors import NotFoundError, ValidationProblem
from service.filters import repository as filters_repository
from service.reviews import repository
from service.reviews.repository import REVIEW_STATUS_OF
from service.reviews.schemas import (
    BulkReview,
    BulkReviewResult,
    FilterOutcome,
    ReviewCounts,
    ReviewSummary,
    SampleReviewPatch,
)
from service.samples.conditions import failed_condition, passed_all_condition
from service.samples.query import sample_conditions
from service.samples.schemas import RevisionOut, SampleDetail, VerdictOut
from service.samples.stages import resolve_stage


def review_sample(
    session: Session, sample_id: int, patch: SampleReviewPatch, *, principal: Principal
) -> Sample:
    """Apply a reviewer's action, edits, tags and note to one sample (locked while it changes).

    An edit stores the new text in `edited_*` (the teacher's text is never touched) and adds a
    revision with the text before and after; an edit back to the teacher's text clears `edited_*`.
    """
    sample = repository.lock_sample(session, sample_id)
    if sample is None:
        raise NotFoundError(f"sample {sample_id} does not exist")
    editor = principal.token_id
    for field in ("question", "answer"):
        new_text = getattr(patch, field)
        if new_text is not None:
            _edit(session, sample, field, new_text, editor)
    for field in patch.restore:
        original = getattr(sample, field)
        if original is None:
            raise ValidationProblem.at(
                ("body", "restore"), f"the teacher wrote no parsable {field}; edit it instead of restoring"
            )
        _edit(session, sample, field, original, editor)
    if patch.action is not None:
        sample.review_status = REVIEW_STATUS_OF[patch.action]
        if patch.action == "reset":
            sample.reviewed_by, sample.reviewed_at = None, None
        else:
            sample.reviewed_by, sample.reviewed_at = editor, datetime.now(UTC)
    if patch.tags_add or patch.tags_remove:
        kept = [tag for tag in sample.tags if tag not in patch.tags_remove]
        sample.tags = kept + [tag for tag in dict.fromkeys(patch.tags_add) if tag not in kept]
    if "note" in patch.model_fields_set:
        sample.note = patch.note or None
    session.flush()
    return sample


def _edit(session: Session, sample: Sample, field: str, new_text: str, editor: int) -> None:
    original = getattr(sample, field)
    edited = getattr(sample, f"edited_{field}")
    current = edited if edited is not None else original
    if new_text == current:
        return
    repository.add_revision(session, sample.id, field, current, new_text, editor)
    setattr(sample, f"edited_{field}", None if new_text == original else new_text)


def bulk_review(session: Session, body: BulkReview, *, principal: Principal) -> BulkReviewResult:
    conditions = sample_conditions(body.query)
    matched = repository.count_matching(session, conditions)
    changed = repository.bulk_review(
        session,
        conditions,
        action=body.action,
        tags_add=list(dict.fromkeys(body.tags_add)),
        tags_remove=list(dict.fromkeys(body.tags_remove)),
        reviewer=principal.token_id,
    )
    return BulkReviewResult(matched=matched, changed=changed)


def _counts(by_status: dict[str, int]) -> ReviewCounts:
    counts = ReviewCounts(
        **{status: by_status.get(status, 0) for status in ("pending", "accepted", "rejected")}
    )
    counts.total = counts.pending + counts.accepted + counts.rejected
    return counts


def review_summary(session: Session, job_id: int, stage: str | None) -> ReviewSummary:
    """Accepted / rejected / pending of a job's samples at a stage (default its answer stage),
    overall, per filter outcome, and for passed-all / failed-any / unfiltered samples."""
    stage = resolve_stage(session, [job_id], stage, ("query",))
    base = [Sample.job_id == job_id, Sample.stage == stage]
    filters: dict[str, dict[str, dict[str, int]]] = {}
    for name, passed, status, n in repository.review_counts_by_filter(session, base):
        filters.setdefault(name, {"passed": {}, "failed": {}})["passed" if passed else "failed"][status] = n
    failed_any = (
        repository.review_counts(session, [*base, failed_condition(list(filters))]) if filters else {}
    )
    passed_all = repository.review_counts(session, [*base, passed_all_condition()])
    overall = repository.review_counts(session, base)
    unfiltered = {
        status: overall.get(status, 0) - passed_all.get(status, 0) - failed_any.get(status, 0)
        for status in ("pending", "accepted", "rejected")
    }
    return ReviewSummary(
        job_id=job_id,
        stage=stage,
        review=_counts(overall),
        filters={
            name: FilterOutcome(passed=_counts(outcome["passed"]), failed=_counts(outcome["failed"]))
            for name, outcome in sorted(filters.items())
        },
        passed_all=_counts(passed_all),
        failed_any=_counts(failed_any),
        unfiltered=_counts(unfiltered),
    )


def curation_of_sample(session: Session, sample_id: int) -> tuple[list[FilterVerdict], list[SampleRevision]]:
    """The sample's filter verdicts (latest per filter name) and its edit history, oldest first."""
    return filters_repository.verdicts_of_sample(session, sample_id), repository.revisions_of_sample(
        session, sample_id
    )


def curated_sample_detail(session: Session, sample: Sample) -> SampleDetail:
    """GET /v1/samples/{id}'s body: the sample with its verdicts (and reasons) and its revisions."""
    verdicts, revisions = curation_of_sample(session, sample.id)
    return SampleDetail.model_validate(sample).model_copy(
        update={
            "verdicts": [VerdictOut.model_validate(v) for v in verdicts],
            "revisions": [RevisionOut.model_validate(r) for r in revisions],
        }
    )
