"""Dataset versions: a request queues a freeze (validated, numbered); the `freeze` task copies the
rows set-based (split, ground truth mixed, digest and lineage recorded); reading, and what exports
need."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from sqlalchemy import ColumnElement, String, cast, or_
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Session

from service.auth import Principal
from service.datasets import repository
from service.datasets.export.card import DatasetManifest
from service.datasets.ground_truth import (
    RECORDS_CHOICE,
    SEED_CHOICE,
    choose_records,
    ground_truth_count,
    records_digest,
    seed_field_path,
)
from service.datasets.schemas import (
    ACCEPTED_OR_UNREVIEWED_PASSED_ALL,
    DatasetCreate,
    GroundTruthRecord,
    GroundTruthSpec,
)
from service.db.models import DatasetVersion, Sample
from service.errors import ConflictError, NotFoundError, ValidationProblem
from service.events import record_event
from service.filters.schemas import redacted_filter_spec
from service.queue.enqueue import enqueue_tasks
from service.samples.conditions import (
    passed_all_condition,
    passed_conditions,
    review_status_condition,
    tags_condition,
)
from service.samples.selection import current_answer, selection_conditions
from service.samples.stages import resolve_stage
from service.settings import Settings


def version_conditions(
    session: Session, payload: DatasetCreate, stage: str, *, review: bool = True
) -> list[ColumnElement[bool]]:
    """The sample conditions of a version's query (the UI's preview counts the same rows).

    `review=False` leaves out the review-status condition (to explain an empty result).
    """
    query = payload.query
    conditions = selection_conditions(query.job_ids, stage, include_parse_failed=True)
    conditions.append(current_answer().is_not(None))  # a failed parse counts once a reviewer wrote an answer
    if query.require_passed:
        known = repository.existing_filter_names(session, query.require_passed)
        missing = [name for name in query.require_passed if name not in known]
        if missing:
            raise ValidationProblem.at(
                ("body", "query", "require_passed"),
                f"no verdicts of filter(s) {', '.join(missing)}: run them first",
            )
        conditions.extend(passed_conditions(query.require_passed, probe=False))
    if query.tags:
        conditions.append(tags_condition(query.tags))
    if query.exclude_tags:
        unwanted = cast(list(query.exclude_tags), ARRAY(String(100)))
        conditions.append(~Sample.tags.op("&&", is_comparison=True)(unwanted))
    if not review:
        return conditions
    return [*conditions, review_condition(query.review_status)]


def review_condition(review_status: Sequence[str]) -> ColumnElement[bool]:
    if review_status == ACCEPTED_OR_UNREVIEWED_PASSED_ALL:
        return or_(
            Sample.review_status == "accepted",
            (Sample.review_status == "pending") & passed_all_condition(),
        )
    return review_status_condition(list(review_status))


def no_rows_message(session: Session, payload: DatasetCreate, stage: str) -> str:
    """Why a version would be empty, and which review_status option would take the samples there are."""
    query = payload.query
    passed = f", passed {', '.join(query.require_passed)}" if query.require_passed else ""
    jobs = ", ".join(map(str, query.job_ids))
    message = (
        f"no samples match (jobs {jobs}, stage {stage!r}, review status {query.review_status!r}{passed})"
    )
    by_status, unjudged = repository.review_counts(
        session, version_conditions(session, payload, stage, review=False)
    )
    if not by_status:
        return message
    counts = ", ".join(f"{n:,} {status}" for status, n in sorted(by_status.items()))
    message += f"; the other conditions match {counts} sample(s)"
    pending = by_status.get("pending", 0)
    if pending:
        if unjudged:
            message += f" ({unjudged:,} pending ones judged by no filter: run a filter first)"
        message += (
            '; to include pending samples pass review_status ["accepted", "pending"] '
            "(CLI: --review-status accepted --review-status pending)"
        )
    return message


def queue_freeze(
    session: Session,
    payload: DatasetCreate,
    *,
    principal: Principal,
    settings: Settings,
    uploaded_ground_truth: list[GroundTruthRecord] | None = None,
) -> DatasetVersion:
    """Validate a version request, number the version and queue its `freeze` task; records "queued".

    What can be checked cheaply is checked here, so a bad request is a 422 and never a failed
    freeze: the stage, the filters named, the ground truth, and that some sample matches. The rows
    are copied by the task (see freeze_version), with the samples as they are when it runs.
    """
    query = payload.query
    stage = resolve_stage(session, query.job_ids, query.stage, ("body", "query"))
    conditions = version_conditions(session, payload, stage)
    gt_spec = payload.ground_truth
    if gt_spec is None and uploaded_ground_truth is not None:
        gt_spec = GroundTruthSpec()  # an upload without a ground_truth object: every record, no ratio
    seed_field = gt_spec.from_seed_field if gt_spec is not None else None
    gt_records = (
        uploaded_ground_truth if uploaded_ground_truth is not None else (gt_spec.records if gt_spec else None)
    )
    if seed_field is not None and gt_records is not None:
        raise ValidationProblem.at(
            ("body", "ground_truth", "from_seed_field"),
            "give from_seed_field, or records (inline or an uploaded file), not both",
        )
    if gt_spec is not None and seed_field is None and not gt_records:
        raise ValidationProblem.at(
            ("body", "ground_truth", "records"),
            "give records, upload a JSONL file as the `ground_truth` part, or name a seed field "
            "(from_seed_field)",
        )
    if not repository.any_sample_matches(session, conditions):
        raise ValidationProblem.at(("body", "query"), no_rows_message(session, payload, stage))
    if seed_field is not None and not repository.any_sample_has_seed_field(
        session, conditions, seed_field, seed_field_path(seed_field)
    ):
        raise ValidationProblem.at(
            ("body", "ground_truth", "from_seed_field"),
            f"no sample of the query has a reference in its seed inputs[{seed_field!r}]",
        )

    repository.lock_name(session, payload.name)
    version_number = repository.next_version(session, payload.name)
    stored_query: dict[str, Any] = payload.model_dump(mode="json", exclude={"ground_truth"})
    stored_query["query"]["stage"] = stage
    task_payload: dict[str, Any] = {"created_by": {"token_id": principal.token_id, "name": principal.name}}
    if gt_spec is not None and seed_field is not None:
        stored_query["ground_truth"] = {"ratio": gt_spec.ratio, "from_seed_field": seed_field}
    elif gt_spec is not None and gt_records is not None:
        stored_query["ground_truth"] = {
            "ratio": gt_spec.ratio,
            "records": len(gt_records),
            "from": "upload" if uploaded_ground_truth is not None else "records",
        }
        # The records live on the task only: the version keeps their count and, once frozen, digest.
        task_payload["ground_truth_records"] = [r.model_dump(mode="json") for r in gt_records]
    version = repository.add_version(
        session, name=payload.name, version=version_number, query=stored_query, created_by=principal.token_id
    )
    enqueue_tasks(
        session, "freeze", [task_payload], dataset_id=version.id, max_attempts=settings.max_attempts
    )
    record_event(
        session,
        "queued",
        f"freeze of {payload.name} v{version_number} queued by {principal.name!r}",
        dataset_id=version.id,
        data={"token_id": principal.token_id},
    )
    session.flush()
    return version


class FreezeProgress(Protocol):
    def __call__(self, rows_done: int, rows_total: int) -> None: ...


def freeze_version(
    session: Session,
    version: DatasetVersion,
    task_payload: dict[str, Any],
    *,
    progress: FreezeProgress,
) -> None:
    """Copy a queued version's rows, mix its ground truth, and set its counts, digest and lineage.

    Everything happens in the caller's transaction (the freeze task's, fenced at its end), so a
    freeze interrupted anywhere leaves no row behind and is redone from the start. `progress` is
    told the rows copied so far (it must write outside this transaction to be seen).

    Raises:
        ValidationProblem: no sample matches any more (e.g. reviews changed since the request).
    """
    stored = dict(version.query)
    gt_stored = stored.pop("ground_truth", None)
    payload = DatasetCreate.model_validate(stored)
    query = payload.query
    stage = query.stage or ""
    conditions = version_conditions(session, payload, stage)
    gt_records = [GroundTruthRecord.model_validate(r) for r in task_payload.get("ground_truth_records") or []]
    gt_ratio = gt_stored.get("ratio") if gt_stored else None
    split = payload.split
    test_fraction, split_seed = (split.test_fraction, split.seed) if split else (0.0, 0)

    total = repository.choose_teacher_rows(
        session,
        conditions,
        limit=query.limit,
        test_fraction=test_fraction,
        split_seed=split_seed,
        stratify_by_job=bool(split and split.stratify_by_job),
    )
    if total == 0:
        raise ValidationProblem.at(("body", "query"), no_rows_message(session, payload, stage))
    progress(0, total)
    chunk_rows = repository.COPY_CHUNK_ROWS
    for start in range(0, total, chunk_rows):
        end = min(start + chunk_rows, total)
        repository.copy_chosen_rows(session, version.id, start, end, system=payload.system)
        progress(end, total)
    counts = repository.row_counts(session, version.id)
    ground_truth: dict[str, Any] | None = None
    seed_field = gt_stored.get("from_seed_field") if gt_stored else None
    if seed_field:
        ground_truth = _mix_seed_truth(
            session, version.id, seed_field, gt_ratio, counts, split_seed=split_seed, system=payload.system
        )
    elif gt_records:
        ground_truth = _mix_records(
            session,
            version.id,
            gt_records,
            gt_ratio,
            counts,
            split_seed=split_seed,
            system=payload.system,
            origin=(gt_stored or {}).get("from"),
        )
    if ground_truth is not None:
        teacher_train = counts["train"]
        counts = repository.row_counts(session, version.id)
        ground_truth["teacher_train_rows"] = teacher_train
        ground_truth["train_rows"] = counts["train"]
        ground_truth["actual_ratio"] = (
            round(ground_truth["rows"] / counts["train"], 6) if counts["train"] else None
        )
    version.row_counts = counts
    version.rows_total = counts["total"]
    version.rows_done = counts["total"]
    version.digest = repository.content_digest(session, version.id)
    version.lineage = _lineage(session, version.id, stage, ground_truth, task_payload.get("created_by") or {})
    session.flush()


def _mix_records(
    session: Session,
    dataset_id: int,
    records: Sequence[GroundTruthRecord],
    ratio: float | None,
    counts: dict[str, int],
    *,
    split_seed: int,
    system: str | None,
    origin: str | None,
) -> dict[str, Any]:
    """Append the chosen records to the train split; their part of the lineage."""
    n = ground_truth_count(len(records), counts["train"], ratio)
    chosen = choose_records(records, n, split_seed)
    repository.insert_ground_truth_rows(
        session,
        dataset_id,
        counts["total"],
        [(i, r.question, r.answer, r.system if r.system is not None else system) for i, r in chosen],
    )
    return {
        "from": origin or "records",
        "available": len(records),
        "rows": n,
        "requested_ratio": ratio,
        "records_sha256": records_digest(records),
        "choice": RECORDS_CHOICE,
    }


def _mix_seed_truth(
    session: Session,
    dataset_id: int,
    field: str,
    ratio: float | None,
    counts: dict[str, int],
    *,
    split_seed: int,
    system: str | None,
) -> dict[str, Any]:
    """Append ground truth from the version's own seed references to the train split; its lineage."""
    available, held_out = repository.stage_seed_truth(
        session, dataset_id, field, seed_field_path(field), split_seed
    )
    n = ground_truth_count(available, counts["train"], ratio)
    repository.insert_seed_truth_rows(session, dataset_id, counts["total"], n, field=field, system=system)
    return {
        "from": "seed_field",
        "from_seed_field": field,
        "available": available,
        "held_out_items": held_out,
        "rows": n,
        "requested_ratio": ratio,
        "choice": SEED_CHOICE,
    }


def _lineage(
    session: Session,
    dataset_id: int,
    stage: str,
    ground_truth: dict[str, Any] | None,
    created_by: dict[str, Any],
) -> dict[str, Any]:
    jobs = repository.jobs_of_rows(session, dataset_id)
    recipes = {job["recipe"]["id"]: job["recipe"] for job in jobs}
    teachers = sorted({teacher.get("model", "?") for job in jobs for teacher in job["teachers"]})
    filters: dict[str, dict[str, int]] = {}
    run_ids: set[int] = set()
    for name, run_id, passed, n in repository.verdicts_of_rows(session, dataset_id):
        run_ids.add(run_id)
        bucket = filters.setdefault(name, {"passed": 0, "failed": 0})
        bucket["passed" if passed else "failed"] += n
    runs = [
        {
            "id": run.id,
            "status": run.status,
            "created_at": run.created_at.isoformat(),
            "selection": run.spec.get("selection"),
            "filters": [redacted_filter_spec(f) for f in run.spec.get("filters") or []],
        }
        for run in repository.filter_runs(session, sorted(run_ids))
    ]
    reviews, edited = repository.review_state_of_rows(session, dataset_id)
    return {
        "stage": stage,
        "jobs": jobs,
        "recipes": list(recipes.values()),
        "teachers": teachers,
        "filter_runs": runs,
        "filters": filters,
        "review_counts": reviews,
        "edited_rows": edited,
        "ground_truth": ground_truth,
        "created_by": {"token_id": created_by.get("token_id"), "name": created_by.get("name")},
    }


def get_dataset(session: Session, dataset_id: int) -> DatasetVersion:
    version = repository.get_version(session, dataset_id)
    if version is None:
        raise NotFoundError(f"dataset version {dataset_id} does not exist")
    return version


def get_frozen_dataset(session: Session, dataset_id: int) -> DatasetVersion:
    """A version whose freeze succeeded (its rows are all there); 409 while queued or running, or failed."""
    version = get_dataset(session, dataset_id)
    if version.status != "succeeded":
        detail = f": {version.error}" if version.error else ""
        raise ConflictError(
            f"dataset version {dataset_id} is not frozen ({version.status}{detail}); "
            f"wait for GET /v1/datasets/{dataset_id} to say succeeded",
            title="Dataset Version Not Frozen",
            slug="dataset-not-frozen",
        )
    return version


def list_datasets(
    session: Session, *, name: str | None, limit: int, offset: int
) -> tuple[list[DatasetVersion], int]:
    return repository.list_versions(session, name=name, limit=limit, offset=offset)


def manifest_of(version: DatasetVersion) -> DatasetManifest:
    return DatasetManifest(
        id=version.id,
        name=version.name,
        version=version.version,
        digest=version.digest,
        row_counts=dict(version.row_counts),
        lineage=dict(version.lineage),
        query=dict(version.query),
        created_at=version.created_at,
    )
