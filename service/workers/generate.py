"""The generate handler: run a job's recipe over one shard of items, chunk by chunk, exactly once.

Per chunk, ONE fenced transaction inserts the samples (``ON CONFLICT DO NOTHING``), moves the shard's
cursor and adds to the job's counters. A worker killed mid-chunk loses only that chunk's work; the
next holder starts at the committed cursor. A commit whose answer was lost (connection killed
after the server committed) is recognised by the cursor and not applied twice.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError
from sqlalchemy import text
from sqlalchemy.orm import Session

from generator.engines.base import TeacherConfig
from service.events import record_event
from service.jobs.usage import TeacherSpend, budget_reached, teacher_counters, teacher_spends
from service.queue.leases import LeaseLost
from service.queue.owners import cancel_owner
from service.workers.context import PermanentTaskError, TaskContext, TaskOutcome
from service.workers.sample_store import SampleRow, insert_samples, sample_rows
from service.workers.teachers import TEACHERS, TeacherLoadError

if TYPE_CHECKING:
    from generator.recipe import Recipe
    from generator.samples import ChunkResult

# Seed rows of the most recent jobs: all shards of a job claimed by one process load them once.
SEED_ROWS_CACHED_JOBS = 4


class ShardRolledBack(Exception):
    """The shard's committed cursor is behind this worker's: its last chunk commits were lost.

    Chunk commits skip the WAL flush (see `write_chunk`), so a Postgres crash can drop the newest of
    them. The lease is still held (the fence passed), so the worker hands the shard back at once and it
    resumes from the committed cursor; nothing may wait for a lease to expire, since a worker's reaper
    never reaps its own tasks.
    """

    def __init__(self, task_id: int, committed: int, expected: int) -> None:
        super().__init__(
            f"task {task_id}: the shard's committed cursor is {committed}, behind the {expected} this "
            "worker wrote (the database lost its last chunk commits); handing the shard back to resume there"
        )
        self.committed = committed


class BudgetReached(LeaseLost):
    """This worker found the job's budget spent and cancelled the job: the task stops like a cancel."""

    def __init__(self, task_id: int, why: str) -> None:
        super().__init__(task_id, "cancelled")
        self.why = why


@dataclass
class BudgetWatch:
    """A job's budget (`params.budget`) and each teacher's tokens as this worker last saw them."""

    limits: dict[str, Any]
    teachers: list[dict[str, Any]]
    teacher_index: int  # this shard's teacher
    usage: dict[str, Any]  # the job's teacher_usage as last read
    totals: dict[str, int]  # the job's token totals as last read

    def spends(self) -> list[TeacherSpend]:
        return teacher_spends(self.teachers, teacher_counters(self.teachers, self.usage, self.totals))

    def reached_with(self, prompt_tokens: int, completion_tokens: int) -> bool:
        """Whether the totals last seen plus these tokens of this shard's teacher spend the budget
        (other shards aside)."""
        spends = self.spends()
        mine = spends[self.teacher_index]
        spends[self.teacher_index] = TeacherSpend(
            mine.price, mine.prompt_tokens + prompt_tokens, mine.completion_tokens + completion_tokens
        )
        return budget_reached(self.limits, spends) is not None

    def reached(self) -> str | None:
        return budget_reached(self.limits, self.spends())


@dataclass(frozen=True)
class GenerateJob:
    """What a generate task needs from its job row and recipe row."""

    job_id: int
    recipe_spec: dict[str, Any]
    teachers: list[dict[str, Any]]
    seed: int
    chunk_size: int
    budget: dict[str, Any] | None = None
    teacher_usage: dict[str, Any] = field(default_factory=dict)
    tokens_in: int = 0
    tokens_out: int = 0


def run_generate_task(ctx: TaskContext) -> TaskOutcome:
    """Generate the shard [item_start + cursor, item_end) of the task's job."""
    task = ctx.task
    item_start, item_end = shard_range(task.id, task.payload)
    teacher_index = task.payload.get("teacher_index", 0)
    if task.job_id is None:
        raise PermanentTaskError(f"task {task.id}: a generate task needs a job")
    cursor = task.cursor
    if item_start + cursor >= item_end:
        return TaskOutcome.DONE
    if ctx.stop_requested:
        return TaskOutcome.STOPPED

    job = ctx.with_retry(lambda session: _load_job(session, task.job_id or 0, ctx.settings.chunk_size))
    stored = _load_recipe(job)
    # Seed rows come from the recipe as stored (the API counted the job's items the same way);
    # the job's seed drives the per-request sampling seeds.
    rows = _seed_rows(job, stored)
    recipe = stored.model_copy(update={"seed": job.seed})
    if item_end > len(rows):
        raise PermanentTaskError(
            f"task {task.id}: shard ends at item {item_end} but the recipe's seed data has {len(rows)} items"
        )
    teacher = _teacher_config(job, ctx, teacher_index)
    budget = (
        BudgetWatch(
            job.budget,
            job.teachers,
            teacher_index,
            job.teacher_usage,
            {"tokens_in": job.tokens_in, "tokens_out": job.tokens_out},
        )
        if job.budget
        else None
    )
    try:
        with TEACHERS.use(teacher) as engine:
            from generator.pipeline import run_recipe

            try:  # validation happens here, before anything is generated
                chunks = run_recipe(
                    recipe,
                    engine,
                    rows,
                    item_indices=range(item_start + cursor, item_end),
                    chunk_size=job.chunk_size,
                )
            except ValueError as exc:  # RecipeError, TemplateError: the recipe does not fit its rows
                raise PermanentTaskError(f"job {job.job_id}: invalid recipe: {exc}") from exc
            try:
                cursor = _generate_and_store(
                    ctx, job.job_id, teacher_index, chunks, item_start, cursor, budget
                )
            except ShardRolledBack as rolled_back:
                ctx.logger.warning("%s", rolled_back)
                return TaskOutcome.STOPPED  # released: claimable at once, resumed at the committed cursor
            if item_start + cursor < item_end and ctx.stop_requested:
                return TaskOutcome.STOPPED
    except TeacherLoadError as exc:
        raise PermanentTaskError(str(exc)) from exc
    if item_start + cursor < item_end:
        raise RuntimeError(
            f"the pipeline stopped at item {item_start + cursor} before the end of the shard ({item_end})"
        )
    return TaskOutcome.DONE


def _generate_and_store(
    ctx: TaskContext,
    job_id: int,
    teacher_index: int,
    chunks: Iterator[ChunkResult],
    item_start: int,
    cursor: int,
    budget: BudgetWatch | None = None,
) -> int:
    """Store each chunk while the next one is generated; returns the committed cursor.

    Writes stay in order, one at a time: chunk k's transaction runs on a writer thread while the
    teacher generates chunk k+1, so the database round trips hide behind generation. A failed
    write (lease lost, cancel, budget reached) surfaces before the next chunk is stored. On a stop
    request the chunk in hand is stored, then the task stops. A chunk that will likely spend the
    job's budget is stored before the next one is generated, so no paid tokens are thrown away.
    """
    with ThreadPoolExecutor(1, thread_name_prefix=f"task-{ctx.task.id}-writer") as writer:
        pending: Future[int] | None = None
        expected = cursor
        for chunk in chunks:  # generating this chunk overlapped the previous chunk's write
            if pending is not None:
                cursor = pending.result()
            ctx.check_lease()
            pending = writer.submit(
                store_chunk, ctx, job_id, chunk, item_start, expected, budget, teacher_index
            )
            expected += len(chunk.item_indices)
            if ctx.stop_requested:
                break
            if budget is not None and budget.reached_with(chunk.prompt_tokens, chunk.completion_tokens):
                cursor = pending.result()  # raises BudgetReached when the job's totals confirm it
                pending = None
        if pending is not None:
            cursor = pending.result()
    return cursor


def shard_range(task_id: int, payload: dict[str, Any]) -> tuple[int, int]:
    """The shard's [start, end) items from a task payload ({"item_start", "item_end"})."""
    try:
        start, end = int(payload["item_start"]), int(payload["item_end"])
    except (KeyError, TypeError, ValueError) as exc:
        raise PermanentTaskError(f"task {task_id}: payload needs integer item_start and item_end") from exc
    if not 0 <= start <= end:
        raise PermanentTaskError(f"task {task_id}: bad shard range [{start}, {end})")
    return start, end


def store_chunk(
    ctx: TaskContext,
    job_id: int,
    chunk: ChunkResult,
    item_start: int,
    cursor: int,
    budget: BudgetWatch | None = None,
    teacher_index: int = 0,
) -> int:
    """Persist one generated chunk of the task's shard (by its teacher); returns the new cursor.

    Raises:
        BudgetReached: the chunk is stored and spent the job's budget: the job is now cancelled.
    """
    new_cursor = write_chunk(
        ctx,
        job_id,
        ChunkWrite(
            items=sorted(chunk.item_indices),
            rows=sample_rows(job_id, chunk.samples, teacher_index),
            teacher_index=teacher_index,
            prompt_tokens=chunk.prompt_tokens,
            completion_tokens=chunk.completion_tokens,
            seconds=chunk.elapsed_seconds,
        ),
        item_start,
        cursor,
    )
    if budget is not None:
        stop_if_budget_spent(ctx, job_id, budget)
    return new_cursor


def stop_if_budget_spent(ctx: TaskContext, job_id: int, budget: BudgetWatch) -> None:
    """After a stored chunk: cancel the job (samples kept) once its committed totals spend the budget.

    A job-level move like a cancel from the API, not a shard write: it is guarded on the job's
    status (cancel_owner) rather than fenced, since a fence would lock this task before the job's
    other tasks, against the order owner moves take them in. The job's last chunk is not stopped:
    with every item done, the job succeeds as usual.

    Raises:
        BudgetReached: this worker cancelled the job, or found it cancelled by another's budget stop.
    """
    task = ctx.task

    def check(session: Session) -> str | None:
        row = session.execute(
            text(
                "SELECT teacher_usage, tokens_in, tokens_out, items_done, items_total, status "
                "FROM job WHERE id = :id"
            ),
            {"id": job_id},
        ).one()
        budget.usage = row.teacher_usage
        budget.totals = {"tokens_in": int(row.tokens_in), "tokens_out": int(row.tokens_out)}
        why = budget.reached()
        if why is None or row.items_done >= row.items_total or row.status != "running":
            return None
        cancelled = cancel_owner(session, "job_id", job_id)
        if cancelled is None:
            return None  # finished or cancelled meanwhile: the next fence tells
        message = f"budget reached: {why}"
        session.execute(text("UPDATE job SET error = :e WHERE id = :id"), {"e": message, "id": job_id})
        record_event(
            session,
            "budget_reached",
            f"{message}; task {task.id} stopped the job ({cancelled} unfinished shards cancelled, "
            "samples kept)",
            job_id=job_id,
            task_id=task.id,
            data={
                "worker_id": ctx.worker_id,
                "reason": why,
                "budget": budget.limits,
                "tokens_in": budget.totals["tokens_in"],
                "tokens_out": budget.totals["tokens_out"],
                "teacher_usage": budget.usage,
                "shards_cancelled": cancelled,
            },
        )
        return message

    message = ctx.with_retry(check)
    if message is not None:
        ctx.logger.info("task %s: %s", task.id, message)
        raise BudgetReached(task.id, message)


# The job's totals and its teacher's share of them, in one statement.
UPDATE_JOB_COUNTERS = text(
    """
    UPDATE job SET items_done = items_done + :items, samples_written = samples_written + :s,
        tokens_in = tokens_in + :tin, tokens_out = tokens_out + :tout,
        teacher_usage = teacher_usage || jsonb_build_object(CAST(:teacher AS text), jsonb_build_object(
            'items_done', coalesce((teacher_usage -> :teacher ->> 'items_done')::bigint, 0) + :items,
            'samples', coalesce((teacher_usage -> :teacher ->> 'samples')::bigint, 0) + :s,
            'tokens_in', coalesce((teacher_usage -> :teacher ->> 'tokens_in')::bigint, 0) + :tin,
            'tokens_out', coalesce((teacher_usage -> :teacher ->> 'tokens_out')::bigint, 0) + :tout))
    WHERE id = :id
    """
)


@dataclass(frozen=True)
class ChunkWrite:
    """What one chunk's transaction stores: its items' sample rows and token counts."""

    items: list[int]
    rows: list[SampleRow]
    teacher_index: int
    prompt_tokens: int
    completion_tokens: int
    seconds: float


def write_chunk(ctx: TaskContext, job_id: int, chunk: ChunkWrite, item_start: int, cursor: int) -> int:
    """One fenced transaction: samples (exactly once), the shard's cursor, the job's counters, an event.

    Returns the new cursor. The transaction is retried while the database is unreachable; a retry
    after a commit whose answer was lost finds the cursor already moved and writes nothing.
    """
    task = ctx.task
    items = chunk.items
    expected_first = item_start + cursor
    if not items or items != list(range(expected_first, expected_first + len(items))):
        raise RuntimeError(f"chunk items {items[:3]}... do not continue the shard at item {expected_first}")
    new_cursor = cursor + len(items)

    def write(session: Session, committed: int) -> int:
        if committed == new_cursor:
            return 0  # this chunk's earlier commit went through; only its answer was lost
        if committed < cursor:
            raise ShardRolledBack(task.id, committed, cursor)
        if committed != cursor:
            raise LeaseLost(task.id, f"the shard's cursor moved to {committed} (expected {cursor})")
        # No wait for the WAL flush: samples, cursor and counters commit atomically, so if a
        # Postgres crash drops the last few chunk commits, they are all redone together (the
        # shard's completion, committed normally, flushes every chunk before it).
        session.execute(text("SET LOCAL synchronous_commit = off"))
        inserted = insert_samples(session, chunk.rows)
        session.execute(text("UPDATE task SET cursor = :c WHERE id = :id"), {"c": new_cursor, "id": task.id})
        session.execute(
            UPDATE_JOB_COUNTERS,
            {
                "items": len(items),
                "s": inserted,
                "tin": chunk.prompt_tokens,
                "tout": chunk.completion_tokens,
                "teacher": str(chunk.teacher_index),
                "id": job_id,
            },
        )
        record_event(
            session,
            "checkpoint",
            f"task {task.id}: items {items[0]}–{items[-1]} done, {inserted} samples written",
            job_id=job_id,
            task_id=task.id,
            data={
                "worker_id": ctx.worker_id,
                "cursor": new_cursor,
                "items": len(items),
                "samples": inserted,
                "seconds": round(chunk.seconds, 3),
            },
        )
        return inserted

    inserted = ctx.fenced(write)
    ctx.logger.info(
        "task %s: items %d-%d stored (%d samples, %.2fs)",
        task.id,
        items[0],
        items[-1],
        inserted,
        chunk.seconds,
    )
    return new_cursor


def _load_job(session: Session, job_id: int, default_chunk_size: int) -> GenerateJob:
    row = session.execute(
        text(
            "SELECT j.id, j.teachers, j.seed, j.params, j.teacher_usage, j.tokens_in, j.tokens_out, r.spec "
            "FROM job j JOIN recipe r ON r.id = j.recipe_id WHERE j.id = :id"
        ),
        {"id": job_id},
    ).first()
    if row is None:
        raise PermanentTaskError(f"job {job_id} does not exist")
    params = row.params or {}
    chunk_size = params.get("chunk_size") or default_chunk_size
    if not isinstance(chunk_size, int) or chunk_size < 1:
        raise PermanentTaskError(f"job {job_id}: params.chunk_size must be a positive integer")
    budget = params.get("budget")
    if budget is not None and not isinstance(budget, dict):
        raise PermanentTaskError(f"job {job_id}: params.budget must be an object")
    return GenerateJob(
        job_id=row.id,
        recipe_spec=row.spec,
        teachers=list(row.teachers),
        seed=int(row.seed),
        chunk_size=chunk_size,
        budget=budget or None,
        teacher_usage=dict(row.teacher_usage or {}),
        tokens_in=int(row.tokens_in),
        tokens_out=int(row.tokens_out),
    )


def _load_recipe(job: GenerateJob) -> Recipe:
    from generator.recipe import load_recipe

    try:
        recipe = load_recipe(job.recipe_spec)
    except (ValueError, ValidationError) as exc:  # RecipeError is a ValueError
        raise PermanentTaskError(f"job {job.job_id}: invalid recipe: {exc}") from exc
    return recipe


_seed_rows_cache: OrderedDict[str, list[dict[str, Any]]] = OrderedDict()
_seed_rows_lock = threading.Lock()


def _seed_rows(job: GenerateJob, recipe: Recipe) -> list[dict[str, Any]]:
    from generator.seeds import load_seed_rows

    key = json.dumps(job.recipe_spec, sort_keys=True, default=str)
    with _seed_rows_lock:
        rows = _seed_rows_cache.get(key)
        if rows is None:
            try:
                rows = load_seed_rows(recipe)
            except (ValueError, OSError) as exc:
                raise PermanentTaskError(f"job {job.job_id}: seed data: {exc}") from exc
            _seed_rows_cache[key] = rows
            while len(_seed_rows_cache) > SEED_ROWS_CACHED_JOBS:
                _seed_rows_cache.popitem(last=False)
        _seed_rows_cache.move_to_end(key)
        return rows


def _teacher_config(job: GenerateJob, ctx: TaskContext, index: Any) -> TeacherConfig:
    """The config of the shard's teacher (`index` from the task payload; 0 for one-teacher jobs)."""
    if not isinstance(index, int) or not 0 <= index < len(job.teachers):
        raise PermanentTaskError(
            f"task {ctx.task.id}: teacher_index {index!r} names none of job {job.job_id}'s "
            f"{len(job.teachers)} teachers"
        )
    try:
        config = TeacherConfig.model_validate(job.teachers[index])
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        named = "teacher" if len(job.teachers) == 1 else f"teachers[{index}]"
        raise PermanentTaskError(
            f"job {job.job_id}: invalid {named} config: {where}: {first['msg']}"
        ) from exc
    if config.engine == "vllm" and config.kv_cache_memory_bytes is None and ctx.settings.vllm_kv_cache_bytes:
        config = config.model_copy(update={"kv_cache_memory_bytes": ctx.settings.vllm_kv_cache_bytes})
    return config
