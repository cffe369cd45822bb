"""Generation jobs: submission (validated, sharded, idempotent), progress, cancellation, timeline."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from answers.match import match_answer
from generator.engines.base import TeacherConfig
from generator.recipe import Recipe as RecipeSpec
from generator.recipe import RecipeError
from generator.seeds import load_seed_rows
from service.auth import Principal
from service.canonical import canonical_digest
from service.db.models import Event, Job, Recipe, Sample, Task
from service.errors import ConflictError, NotFoundError, ValidationProblem, field_path
from service.events import record_event
from service.jobs import repository
from service.jobs.schemas import JobCreate, RecipeById, RecipeByName
from service.jobs.usage import estimate_tokens
from service.model_folders import teacher_model_problem
from service.queue.enqueue import enqueue_tasks, shard_ranges
from service.recipes import service as recipes
from service.settings import Settings

INLINE_RECIPE_NAME = "inline"
MAX_RECIPE_NAME_LENGTH = 200


@dataclass(frozen=True)
class Submission:
    """The job a submission resolved to, and whether this call created it (False: idempotent replay)."""

    job: Job
    created: bool


@dataclass(frozen=True)
class JobDetailView:
    """A job with what its detail page shows beside the row (read by schemas.JobDetail)."""

    job: Job
    recipe: Recipe
    shards: list[Task]
    last_error: str | None


def submit_job(
    session: Session,
    payload: JobCreate,
    *,
    principal: Principal,
    settings: Settings,
    idempotency_key: str | None,
) -> Submission:
    """Validate, count items, create the job and its shards, and record "queued".

    With an idempotency key, the same key and the same payload return the first job; the same key
    with a different payload is a 409.
    """
    try:
        request_digest = canonical_digest(payload.model_dump(mode="json"))
    except ValueError as exc:  # NaN / Infinity inside an inline recipe: JSON has no such numbers
        raise ValidationProblem.at(("body", "recipe"), f"not representable as JSON: {exc}") from exc
    if idempotency_key is not None:
        repository.lock_idempotency_key(session, idempotency_key)
        existing = repository.get_by_idempotency_key(session, idempotency_key)
        if existing is not None:
            if existing.request_digest != request_digest:
                raise ConflictError(
                    f"Idempotency-Key {idempotency_key!r} was used with another request (job {existing.id}).",
                    title="Idempotency Key Reused",
                    slug="idempotency-key-reused",
                    job_id=existing.id,
                )
            return Submission(existing, created=False)

    _check_teachers(payload)
    _check_budget(payload)
    recipe_row, spec = _resolve_recipe(session, payload, principal)
    try:
        rows = load_seed_rows(spec)
    except RecipeError as exc:
        raise recipes.recipe_problem(exc, ("body", "recipe")) from exc
    items_total = min(len(rows), payload.limit) if payload.limit is not None else len(rows)
    if items_total == 0:
        raise ValidationProblem.at(("body", "recipe"), "the recipe's seeds yield no items")
    shard_size = payload.shard_size or settings.shard_size
    params: dict[str, Any] = {
        "limit": payload.limit,
        "shard_size": shard_size,
        "chunk_size": payload.chunk_size or settings.chunk_size,
    }
    if payload.budget is not None:
        params["budget"] = payload.budget.model_dump(exclude_none=True)
    # One teacher's estimate: the job's usage scales it by its teachers when it is read.
    params["estimate"] = estimate_tokens(spec, rows[0], items_total)
    teachers = payload.all_teachers
    job = repository.add_job(
        session,
        recipe_id=recipe_row.id,
        teachers=[teacher.model_dump(mode="json") for teacher in teachers],
        # The recipe's seed orders its seed rows (so items are counted with it); the job's seed,
        # when given, drives the per-request sampling seeds instead of the recipe's.
        seed=payload.seed if payload.seed is not None else spec.seed,
        priority=payload.priority,
        params=params,
        answer_stage=spec.answer_stage,
        # Work to do: every item once per teacher (progress and ETA count these).
        items_total=items_total * len(teachers),
        idempotency_key=idempotency_key,
        request_digest=request_digest,
        created_by=principal.token_id,
    )
    # Teacher by teacher: claimed in id order, a worker finishes one teacher's shards before it loads
    # the next teacher, so each process batches for one teacher at a time.
    ranges = shard_ranges(items_total, shard_size)
    enqueue_tasks(
        session,
        "generate",
        [
            {"item_start": start, "item_end": end, "teacher_index": index}
            for index in range(len(teachers))
            for start, end in ranges
        ],
        job_id=job.id,
        priority=payload.priority,
        max_attempts=settings.max_attempts,
    )
    record_event(
        session,
        "queued",
        f"queued by {principal.name!r}: {items_total} items of recipe {recipe_row.name!r} "
        f"v{recipe_row.version} in {len(ranges) * len(teachers)} shards"
        + (f" ({len(teachers)} teachers)" if len(teachers) > 1 else ""),
        job_id=job.id,
        data={
            "items_total": items_total,
            "teachers": len(teachers),
            "shards": len(ranges) * len(teachers),
            "recipe_id": recipe_row.id,
            "token_id": principal.token_id,
        },
    )
    session.flush()
    return Submission(job, created=True)


def _check_budget(payload: JobCreate) -> None:
    """422 naming `budget.max_cost` when a teacher has no price to measure it with."""
    if payload.budget is None or payload.budget.max_cost is None:
        return
    for loc, teacher in _teachers_with_locs(payload):
        if teacher.price_per_million_tokens is None:
            where = "the teacher" if payload.teacher is not None else field_path(loc)
            raise ValidationProblem.at(
                ("body", "budget", "max_cost"),
                f"needs price_per_million_tokens ({{input, output}}) on {where} to measure the cost against",
            )


def _teachers_with_locs(payload: JobCreate) -> list[tuple[tuple[str | int, ...], TeacherConfig]]:
    if payload.teacher is not None:
        return [(("body", "teacher"), payload.teacher)]
    return [(("body", "teachers", i), teacher) for i, teacher in enumerate(payload.teachers or [])]


def _check_teachers(payload: JobCreate) -> None:
    """422 unless exactly one of `teacher`/`teachers` is given, each local teacher able to serve chat
    stages (hub ids pass); names the field."""
    if (payload.teacher is None) == (payload.teachers is None):
        raise ValidationProblem.at(
            ("body", "teacher"), "give `teacher` (one) or `teachers` (two or more), not both"
        )
    for loc, teacher in _teachers_with_locs(payload):
        if teacher.engine != "vllm":
            continue  # an OpenAI-compatible server's model is a served name, not a path
        problem = teacher_model_problem(teacher.model, teacher.engine_kwargs)
        if problem:
            raise ValidationProblem.at((*loc, "model"), problem)


def _resolve_recipe(session: Session, payload: JobCreate, principal: Principal) -> tuple[Recipe, RecipeSpec]:
    """The stored recipe version the job runs, and its validated spec."""
    ref = payload.recipe
    loc: tuple[str, ...] = ("body", "recipe")
    if isinstance(ref, RecipeById):
        row = recipes.recipe_by_id(session, ref.id, loc=(*loc, "id"))
    elif isinstance(ref, RecipeByName):
        row = recipes.find_recipe(session, name=ref.name, version=ref.version, loc=(*loc, "name"))
    else:
        # Inline: validated first, then stored as a version of its name so the job refers to a row.
        spec = recipes.parse_spec(ref, loc)
        row = recipes.store_recipe(
            session, name=_inline_name(ref), spec=ref, created_by=principal.token_id
        ).recipe
        return row, spec
    # Stored versions were valid when stored; seed files they name may have changed since.
    return row, recipes.parse_spec(row.spec, loc)


def _inline_name(spec: dict[str, Any]) -> str:
    name = spec.get("name")
    if not isinstance(name, str) or not name.strip():
        return INLINE_RECIPE_NAME
    if len(name) > MAX_RECIPE_NAME_LENGTH:
        raise ValidationProblem.at(
            ("body", "recipe", "name"),
            f"at most {MAX_RECIPE_NAME_LENGTH} characters (a stored recipe's name)",
        )
    return name


def get_job(session: Session, job_id: int) -> Job:
    job = repository.get_job(session, job_id)
    if job is None:
        raise NotFoundError(f"job {job_id} does not exist")
    return job


def job_detail(session: Session, job_id: int) -> JobDetailView:
    job = get_job(session, job_id)
    recipe = recipes.get_recipe(session, job.recipe_id)
    shards = repository.list_shards(session, job_id)
    return JobDetailView(job=job, recipe=recipe, shards=shards, last_error=_last_error(job, shards))


def _last_error(job: Job, shards: list[Task]) -> str | None:
    if job.error:
        return job.error
    with_errors = [shard for shard in shards if shard.last_error]
    if not with_errors:
        return None
    latest = max(
        with_errors, key=lambda shard: (shard.finished_at or shard.started_at or shard.created_at, shard.id)
    )
    return f"shard {latest.id}: {latest.last_error}"


def list_jobs(session: Session, *, status: str | None, limit: int, offset: int) -> tuple[list[Job], int]:
    return repository.list_jobs(session, status=status, limit=limit, offset=offset)


def cancel_job(session: Session, job_id: int, *, principal: Principal) -> JobDetailView:
    """Cancel a queued or running job and its unfinished shards (what was written stays); 409 if finished."""
    job = repository.get_job(session, job_id)
    if job is None:
        raise NotFoundError(f"job {job_id} does not exist")
    cancelled = repository.cancel_job_rows(session, job)
    if cancelled is None:  # finished before, or while this waited for a worker's chunk
        raise ConflictError(
            f"job {job_id} has already finished ({job.status}); only queued or running jobs can be cancelled",
            title="Job Already Finished",
            slug="job-finished",
            job_status=job.status,
        )
    record_event(
        session,
        "cancelled",
        f"cancelled by {principal.name!r} ({cancelled} unfinished shards stopped)",
        job_id=job_id,
        data={"token_id": principal.token_id, "shards_cancelled": cancelled},
    )
    session.flush()
    return job_detail(session, job_id)


def list_events(
    session: Session, job_id: int, *, after_id: int | None, limit: int, offset: int
) -> tuple[list[Event], int]:
    get_job(session, job_id)
    return repository.list_events(session, job_id, after_id=after_id, limit=limit, offset=offset)


@dataclass(frozen=True)
class ItemAnswers:
    """An item's samples of the answer stage, every teacher's (read by schemas.ItemAnswersOut)."""

    item_index: int
    question: str
    answers: list[dict[str, Any]]
    agree: bool | None


def item_answers(session: Session, job_id: int, *, limit: int, offset: int) -> tuple[list[ItemAnswers], int]:
    """Items [offset, offset + limit) with every teacher's answers side by side, and the item count."""
    job = get_job(session, job_id)
    teachers = len(job.teachers)
    items = job.items_total // teachers
    if job.answer_stage is None or offset >= items:
        return [], items
    samples = repository.item_samples(session, job_id, job.answer_stage, offset, min(offset + limit, items))
    by_item: dict[int, list[Sample]] = {}
    for sample in samples:
        by_item.setdefault(sample.item_index, []).append(sample)
    page = []
    for item_index in sorted(by_item):
        group = by_item[item_index]
        firsts: dict[int, str | None] = {}
        for sample in group:
            firsts.setdefault(sample.teacher_index, current_text(sample.edited_answer, sample.answer))
        page.append(
            ItemAnswers(
                item_index=item_index,
                question=current_text(group[0].edited_question, group[0].question) or "",
                answers=[
                    {
                        "teacher_index": s.teacher_index,
                        "sample_id": s.id,
                        "sample_index": s.sample_index,
                        "answer": current_text(s.edited_answer, s.answer),
                        "parse_status": s.parse_status,
                        "review_status": s.review_status,
                    }
                    for s in group
                ],
                agree=_all_agree(list(firsts.values())) if len(firsts) == teachers else None,
            )
        )
    return page, items


def current_text(edited: str | None, original: str | None) -> str | None:
    return edited if edited is not None else original


def _all_agree(answers: list[str | None]) -> bool:
    first = answers[0]
    if first is None:
        return False
    return all(a is not None and match_answer(a, first, "normalized").correct for a in answers[1:])
