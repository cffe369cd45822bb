"""Filter runs: submission (validated, selection frozen, one queued task), reading, sample verdicts."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from service.auth import Principal
from service.db.models import Event, FilterRun, FilterVerdict
from service.errors import ConflictError, NotFoundError, ValidationProblem
from service.events import record_event
from service.filters import repository
from service.filters.eval_sets import check_eval_set
from service.filters.schemas import FilterRunCreate
from service.filters.specs import DecontaminationFilter, FilterSpec, LengthFilter, NearDupFilter, sample_order
from service.queue.enqueue import enqueue_tasks
from service.samples.selection import ResolvedSelection, resolved_conditions
from service.samples.stages import resolve_stage
from service.settings import Settings

PASS_ORDERS = ("first_id", "highest_score")


def plan_passes(filters: list[FilterSpec]) -> list[dict[str, Any]]:
    """Filters grouped by the order they must see samples in: one pass over the selection per order."""
    passes = []
    for order in PASS_ORDERS:
        names = [spec.verdict_name for spec in filters if sample_order(spec) == order]
        if names:
            passes.append({"order": order, "filters": names})
    return passes


def _check_files(session: Session, filters: list[FilterSpec]) -> None:
    """Paths and dataset ids the filters name must exist now (a 422, not a failed run later)."""
    from pathlib import Path

    for i, spec in enumerate(filters):
        loc: tuple[str | int, ...] = ("body", "filters", i, spec.type, "params")
        if isinstance(spec, DecontaminationFilter):
            for j, eval_set in enumerate(spec.params.eval_sets):
                problem = check_eval_set(eval_set)
                if problem:
                    raise ValidationProblem.at((*loc, "eval_sets", j, "path"), problem)
        elif isinstance(spec, NearDupFilter) and spec.params.against_datasets:
            wanted = spec.params.against_datasets
            missing = sorted(set(wanted) - repository.existing_dataset_ids(session, wanted))
            if missing:
                listed = ", ".join(str(m) for m in missing)
                raise ValidationProblem.at(
                    (*loc, "against_datasets"), f"no such frozen dataset version: {listed}"
                )
        elif isinstance(spec, LengthFilter) and spec.params.tokenizer:
            path = Path(spec.params.tokenizer)
            if not (path / "tokenizer.json").is_file() and not (path.is_file() and path.suffix == ".json"):
                raise ValidationProblem.at(
                    (*loc, "tokenizer"), f"no tokenizer.json at {spec.params.tokenizer}"
                )


def create_filter_run(
    session: Session, payload: FilterRunCreate, *, principal: Principal, settings: Settings
) -> FilterRun:
    """Validate, freeze the selection, store the run and queue its task; records "queued"."""
    selection = payload.selection
    stage = resolve_stage(session, selection.job_ids, selection.stage, ("body", "selection"))
    _check_files(session, payload.filters)
    probe = ResolvedSelection(
        job_ids=selection.job_ids,
        stage=stage,
        include_parse_failed=selection.include_parse_failed,
        max_sample_id=2**63 - 1,
    )
    size, max_id = repository.selection_bounds(session, resolved_conditions(probe))
    if size == 0 or max_id is None:
        raise ValidationProblem.at(
            ("body", "selection"),
            f"no samples of job(s) {', '.join(map(str, selection.job_ids))} at stage {stage!r}",
        )
    resolved = probe.model_copy(update={"max_sample_id": int(max_id)})
    passes = plan_passes(payload.filters)
    spec = {
        "selection": resolved.model_dump(),
        "filters": [f.model_dump(mode="json", by_alias=True, exclude_none=False) for f in payload.filters],
        "selection_size": size,
        "passes": passes,
    }
    run = repository.add_filter_run(
        session, spec, items_total=size * len(passes), created_by=principal.token_id
    )
    enqueue_tasks(session, "filter", [{}], filter_run_id=run.id, max_attempts=settings.max_attempts)
    names = ", ".join(f.verdict_name for f in payload.filters)
    record_event(
        session,
        "queued",
        f"queued by {principal.name!r}: {names} over {size:,} samples of stage {stage!r}",
        filter_run_id=run.id,
        data={"selection_size": size, "passes": passes, "token_id": principal.token_id},
    )
    session.flush()
    return run


def get_filter_run(session: Session, run_id: int) -> FilterRun:
    run = repository.get_filter_run(session, run_id)
    if run is None:
        raise NotFoundError(f"filter run {run_id} does not exist")
    return run


def list_filter_runs(session: Session, *, limit: int, offset: int) -> tuple[list[FilterRun], int]:
    return repository.list_filter_runs(session, limit=limit, offset=offset)


def sample_verdicts(session: Session, sample_id: int) -> list[FilterVerdict]:
    return repository.verdicts_of_sample(session, sample_id)


def cancel_filter_run(session: Session, run_id: int, *, principal: Principal) -> FilterRun:
    """Stop a queued or running run (verdicts written so far stay); 409 when it has finished."""
    run = get_filter_run(session, run_id)
    if repository.cancel_filter_run_rows(session, run) is None:  # finished before, or meanwhile
        raise ConflictError(
            f"filter run {run_id} has already finished ({run.status}).",
            title="Filter Run Already Finished",
            slug="filter-run-finished",
        )
    record_event(session, "cancelled", f"cancelled by {principal.name!r}", filter_run_id=run_id)
    session.flush()
    return run


def list_events(
    session: Session, run_id: int, *, after_id: int | None, limit: int, offset: int
) -> tuple[list[Event], int]:
    get_filter_run(session, run_id)
    return repository.list_events(session, run_id, after_id=after_id, limit=limit, offset=offset)
