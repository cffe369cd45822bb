"""Job payloads. Read from ORM rows (and computed progress) with from_attributes; no ORM import here."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import (
    AliasPath,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    computed_field,
    field_serializer,
    model_validator,
)

from generator.engines.base import TeacherConfig
from service.errors import union_tag
from service.jobs.progress import JobPhase, compute_progress
from service.jobs.usage import (
    TeacherSpend,
    budget_reached,
    cost,
    teacher_counters,
    teacher_spends,
    total_cost,
)
from service.limits import BIGINT_MAX, INT_MAX
from service.recipes.schemas import RECIPE_NAME_PATTERN
from service.statuses import StatusName

JobStatus = StatusName
REDACTED = "***"


class RecipeById(BaseModel):
    """A stored recipe version by id."""

    model_config = ConfigDict(extra="forbid")

    id: int = Field(ge=1, le=INT_MAX)


class RecipeByName(BaseModel):
    """A stored recipe by name: the given version, or the latest one."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200, pattern=RECIPE_NAME_PATTERN)
    version: int | None = Field(default=None, ge=1, le=INT_MAX)


def _recipe_kind(value: Any) -> str:
    keys = (
        set(value) if isinstance(value, dict) else set(vars(value)) if isinstance(value, BaseModel) else set()
    )
    if isinstance(value, RecipeById) or (keys and keys <= {"id"}):
        return BY_ID
    if isinstance(value, RecipeByName) or (keys and keys <= {"name", "version"}):
        return BY_NAME
    return INLINE


BY_ID, BY_NAME, INLINE = union_tag("by-id"), union_tag("by-name"), union_tag("inline")
RecipeRef = Annotated[
    Annotated[RecipeById, Tag(BY_ID)]
    | Annotated[RecipeByName, Tag(BY_NAME)]
    | Annotated[dict[str, Any], Tag(INLINE)],
    Discriminator(_recipe_kind),
]


class JobBudget(BaseModel):
    """Where a job stops early: it is cancelled cleanly (samples kept) once either limit is reached."""

    model_config = ConfigDict(extra="forbid")

    max_cost: float | None = Field(
        default=None,
        gt=0,
        le=1e30,
        allow_inf_nan=False,
        description="Stop once the job's cost reaches this (needs teacher.price_per_million_tokens).",
    )
    max_completion_tokens: int | None = Field(
        default=None, ge=1, le=BIGINT_MAX, description="Stop once the teacher has written this many tokens."
    )

    @model_validator(mode="after")
    def _some_limit(self) -> JobBudget:
        if self.max_cost is None and self.max_completion_tokens is None:
            raise ValueError("give max_cost, max_completion_tokens or both")
        return self


MAX_TEACHERS = 8


class JobCreate(BaseModel):
    """A generation job: a recipe run on a teacher, or on several (each answers every item)."""

    model_config = ConfigDict(extra="forbid")

    recipe: RecipeRef = Field(
        description='A recipe document inline (stored as a new version of its `name`, or "inline"), '
        '`{"id": N}`, or `{"name": ..., "version": N}` (latest version when omitted).'
    )
    teacher: TeacherConfig | None = Field(
        default=None, description="The teacher. Give this or `teachers`, not both."
    )
    teachers: list[TeacherConfig] | None = Field(
        default=None,
        min_length=2,
        max_length=MAX_TEACHERS,
        description="Several teachers (any engines), each answering every item in shards of its own; "
        "samples carry their teacher's index, and the `agreement` filter keeps what they agree on. The "
        "first is the primary teacher (training evaluations compare students with it by default).",
    )
    seed: int | None = Field(
        default=None,
        ge=0,
        le=BIGINT_MAX,
        description="Seed of per-request sampling seeds (default: the recipe's `seed`).",
    )
    limit: int | None = Field(default=None, ge=1, le=INT_MAX, description="Generate at most this many items.")
    priority: int = Field(default=0, ge=-1_000_000, le=1_000_000, description="Higher runs first.")
    shard_size: int | None = Field(
        default=None, ge=1, le=1_000_000, description="Items per queue task (default: server's shard_size)."
    )
    chunk_size: int | None = Field(
        default=None, ge=1, le=100_000, description="Items per fenced write (default: server's chunk_size)."
    )
    budget: JobBudget | None = Field(
        default=None,
        description='Stop the job cleanly (cancelled, samples kept, error "budget reached: ...") once '
        "it has cost `max_cost` or written `max_completion_tokens`; checked after each stored chunk.",
    )

    @property
    def all_teachers(self) -> list[TeacherConfig]:
        """The job's teachers in order, however they were given."""
        return [self.teacher] if self.teacher is not None else list(self.teachers or [])


class JobProgress(BaseModel):
    """Where a job stands; rates and ETA are null until the job has started and made progress."""

    model_config = ConfigDict(from_attributes=True)

    items_done: int
    items_total: int
    fraction: float = Field(description="items_done / items_total (0..1).")
    samples_written: int
    tokens_in: int = Field(description="Prompt tokens sent to the teacher.")
    tokens_out: int = Field(description="Completion tokens the teacher wrote.")
    elapsed_seconds: float | None
    items_per_second: float | None
    tokens_out_per_second: float | None
    eta_seconds: float | None = Field(
        description="Seconds left at the current rate: null until an item is done, and for a failed "
        "or cancelled job; 0 once it succeeded."
    )
    phase: JobPhase = Field(
        description="queued; starting (running, no item committed yet: a worker is loading the teacher "
        "and writing its first chunk); generating; or the finished status."
    )


class UsageEstimate(BaseModel):
    """The job's expected tokens and cost, computed at submission from its items and stages."""

    items: int
    requests: int = Field(description="Teacher requests, counting list/n fan-out at its bound.")
    prompt_tokens: int = Field(
        description="Rough: each stage's messages rendered for the first item (characters / 4) plus the "
        "earlier outputs it may quote at their max_tokens, times its requests."
    )
    completion_tokens: int = Field(
        description="Upper bound: items x the sum over stages (judges included) of requests x n x max_tokens."
    )
    soft_label_bytes: int = Field(
        default=0,
        description="Upper bound of the soft-label bytes the job stores (stages with `sampling.logprobs`): "
        "8 + max_tokens x (4 + 6k) per completion; 0 when no stage asks for logprobs.",
    )
    completion_tokens_bounded: bool = Field(
        description="False when a list stage has no `max_items`: the stages after it were counted for one "
        "list entry, so completion_tokens is no bound."
    )
    cost: float | None = Field(description="From the teacher's price; null without one.")


class TeacherUsage(BaseModel):
    """What one teacher of the job used, and how far it got."""

    index: int = Field(description="The teacher's place in the job's `teachers` (samples carry it).")
    model: str
    engine: str
    items_done: int = Field(description="Items this teacher has answered (of the job's items).")
    prompt_tokens: int
    completion_tokens: int
    samples: int
    samples_per_second: float | None = Field(description="Samples written per second since the job started.")
    price_per_million_tokens: dict[str, float] | None
    cost: float | None = Field(description="prompt x input / 1e6 + completion x output / 1e6; null unpriced.")


class UsageTotal(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    samples: int
    samples_per_second: float | None
    cost: float | None = Field(description="Sum of the teachers' costs; null when a teacher has no price.")


class BudgetOut(BaseModel):
    max_cost: float | None
    max_completion_tokens: int | None
    reached: str | None = Field(
        description='Why the budget is spent (e.g. "cost 1.02 >= max_cost 1"), else null.'
    )


class JobUsage(BaseModel):
    """Tokens, rate and cost per teacher and in total, with the submission estimate and the budget."""

    teachers: list[TeacherUsage]
    total: UsageTotal
    estimate: UsageEstimate | None = Field(description="Null for jobs submitted before estimates existed.")
    budget: BudgetOut | None


def job_usage(
    *,
    teachers: list[dict[str, Any]],
    teacher_usage: dict[str, Any],
    params: dict[str, Any],
    items_done: int,
    tokens_in: int,
    tokens_out: int,
    samples_written: int,
    elapsed_seconds: float | None,
) -> JobUsage:
    """The usage block of a job from its row (costs computed now, from each teacher's price)."""

    def rate(samples: int) -> float | None:
        return samples / elapsed_seconds if elapsed_seconds and samples else None

    totals = {
        "items_done": items_done,
        "samples": samples_written,
        "tokens_in": tokens_in,
        "tokens_out": tokens_out,
    }
    counters_by_teacher = teacher_counters(teachers, teacher_usage, totals)
    spends = teacher_spends(teachers, counters_by_teacher)
    per_teacher = []
    for index, (teacher, spend, counters) in enumerate(
        zip(teachers, spends, counters_by_teacher, strict=True)
    ):
        samples = int(counters.get("samples", 0))
        per_teacher.append(
            TeacherUsage(
                index=index,
                model=str(teacher.get("model", "")),
                engine=str(teacher.get("engine", "vllm")),
                items_done=int(counters.get("items_done", 0)),
                prompt_tokens=spend.prompt_tokens,
                completion_tokens=spend.completion_tokens,
                samples=samples,
                samples_per_second=rate(samples),
                price_per_million_tokens=spend.price.model_dump() if spend.price else None,
                cost=cost(spend.price, spend.prompt_tokens, spend.completion_tokens),
            )
        )
    budget = params.get("budget")
    return JobUsage(
        teachers=per_teacher,
        total=UsageTotal(
            prompt_tokens=tokens_in,
            completion_tokens=tokens_out,
            samples=samples_written,
            samples_per_second=rate(samples_written),
            cost=total_cost(spends),
        ),
        estimate=_estimate(params.get("estimate"), spends),
        budget=BudgetOut(
            max_cost=budget.get("max_cost"),
            max_completion_tokens=budget.get("max_completion_tokens"),
            reached=budget_reached(budget, spends),
        )
        if isinstance(budget, dict)
        else None,
    )


def _estimate(stored: Any, spends: list[TeacherSpend]) -> UsageEstimate | None:
    """The job's estimate: the stored one teacher's figures, times its teachers (each answers every item)."""
    if not isinstance(stored, dict):
        return None
    n = len(spends)
    per_teacher = [
        TeacherSpend(s.price, stored.get("prompt_tokens", 0), stored.get("completion_tokens", 0))
        for s in spends
    ]
    scaled = {key: stored[key] * n for key in ESTIMATE_PER_TEACHER if key in stored}
    return UsageEstimate(**{**stored, **scaled}, cost=total_cost(per_teacher))


# The estimate's counts that grow with the number of teachers (`items` counts seed items once).
ESTIMATE_PER_TEACHER = ("requests", "prompt_tokens", "completion_tokens", "soft_label_bytes")


class JobOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    status: JobStatus
    recipe_id: int
    teacher: dict[str, Any] = Field(
        description="The primary teacher: the first of `teachers` (api_key redacted)."
    )
    teachers: list[dict[str, Any]] = Field(
        description="Every teacher of the job, in order; samples carry their index (api_keys redacted)."
    )
    seed: int
    priority: int
    params: dict[str, Any] = Field(
        description="limit, shard_size, chunk_size, and budget when set (the estimate is in `usage`)."
    )
    answer_stage: str | None = Field(
        description="The recipe stage whose samples are the training pairs (fixed at submission); "
        "filters, reviews and versions default to it."
    )
    error: str | None
    idempotency_key: str | None
    created_by: int | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    # Read from the row, shown inside `progress`.
    items_done: int = Field(exclude=True)
    items_total: int = Field(exclude=True)
    samples_written: int = Field(exclude=True)
    tokens_in: int = Field(exclude=True)
    tokens_out: int = Field(exclude=True)
    teacher_usage: dict[str, Any] = Field(exclude=True)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def progress(self) -> JobProgress:
        """Computed when the response is written, so rates and ETA are current."""
        progress = compute_progress(
            status=self.status,
            items_done=self.items_done,
            items_total=self.items_total,
            samples_written=self.samples_written,
            tokens_in=self.tokens_in,
            tokens_out=self.tokens_out,
            started_at=self.started_at,
            finished_at=self.finished_at,
            now=datetime.now(UTC),
        )
        return JobProgress.model_validate(progress)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def usage(self) -> JobUsage:
        """Tokens, samples/s and cost per teacher and in total; the estimate; the budget."""
        elapsed = self.progress.elapsed_seconds
        return job_usage(
            teachers=self.teachers,
            teacher_usage=self.teacher_usage,
            params=self.params,
            items_done=self.items_done,
            tokens_in=self.tokens_in,
            tokens_out=self.tokens_out,
            samples_written=self.samples_written,
            elapsed_seconds=elapsed,
        )

    @field_serializer("params")
    def _without_estimate(self, params: dict[str, Any]) -> dict[str, Any]:
        return {key: value for key, value in params.items() if key != "estimate"}

    @field_serializer("teacher")
    def _redact(self, teacher: dict[str, Any]) -> dict[str, Any]:
        return redacted(teacher)

    @field_serializer("teachers")
    def _redact_each(self, teachers: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [redacted(teacher) for teacher in teachers]


def redacted(teacher: dict[str, Any]) -> dict[str, Any]:
    """A teacher config as the API shows it: an inline api_key replaced by "***"."""
    if teacher.get("api_key"):
        return {**teacher, "api_key": REDACTED}
    return teacher


class ShardOut(BaseModel):
    """One queue task of a job: items [start, end)."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    start: int = Field(validation_alias=AliasPath("payload", "item_start"))
    end: int = Field(validation_alias=AliasPath("payload", "item_end"))
    teacher_index: int = Field(
        default=0,
        validation_alias=AliasPath("payload", "teacher_index"),
        description="The teacher (index into the job's `teachers`) this shard is answered by.",
    )
    status: str
    cursor: int = Field(description="Progress checkpoint written with the last committed chunk.")
    attempts: int
    max_attempts: int
    worker_id: str | None
    lease_expires_at: datetime | None
    run_after: datetime
    last_error: str | None
    started_at: datetime | None
    finished_at: datetime | None


class RecipeVersionRef(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    version: int


class JobDetail(JobOut):
    """A job with its recipe version, shards and the most recent error."""

    recipe: RecipeVersionRef
    shards: list[ShardOut]
    last_error: str | None = Field(
        description="The job's error, else the latest shard error (retries included)."
    )

    @model_validator(mode="before")
    @classmethod
    def _from_view(cls, data: Any) -> Any:
        # The service hands over a view: the job row plus recipe, shards and last error beside it.
        job = getattr(data, "job", None)
        if job is None:
            return data
        values = {name: getattr(job, name) for name in JobOut.model_fields}
        values.update(recipe=data.recipe, shards=data.shards, last_error=data.last_error)
        return values


class EventOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    kind: str
    message: str
    task_id: int | None
    data: dict[str, Any]
    created_at: datetime


class TeacherAnswerOut(BaseModel):
    """One teacher's sample of an item at the job's answer stage."""

    teacher_index: int
    sample_id: int
    sample_index: int
    answer: str | None = Field(description="The current answer (a reviewer's edit, else the teacher's).")
    parse_status: str
    review_status: str


class ItemAnswersOut(BaseModel):
    """An item's answers, every teacher's, side by side."""

    item_index: int
    question: str = Field(description="The primary teacher's question (the first sample's).")
    answers: list[TeacherAnswerOut] = Field(description="By teacher, then sample index.")
    agree: bool | None = Field(
        description="Whether every teacher's first answer matches the others' after normalisation "
        "(answers.match `normalized`); null until every teacher has answered."
    )
