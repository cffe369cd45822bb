"""Training-run payloads. Read from ORM rows with from_attributes (no ORM import here).

The API process must not import the trainer library (its modules reach TRL and transformers), so
the hyper-parameters a client may set are declared here with the same fields, defaults and bounds
as `trainer.config.TrainingSpec`, and the student shapes with `trainer.tiny_model.TinyModelSpec`'s
rules; tests/training/test_training_logic.py fails when the two drift apart. The worker validates
the stored values again with the trainer's own models.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, computed_field, field_serializer, model_validator

from generator.engines.base import TeacherConfig
from service.filters.specs import VerifierParams
from service.jobs.schemas import REDACTED, EventOut
from service.limits import BIGINT_MAX, INT_MAX
from service.training.progress import TrainingProgress, compute_progress

RunStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]
Scorer = Literal["exact", "normalized", "numeric", "regex"]
LrScheduler = Literal[
    "linear",
    "cosine",
    "cosine_with_restarts",
    "polynomial",
    "constant",
    "constant_with_warmup",
    "inverse_sqrt",
    "cosine_with_min_lr",
    "warmup_stable_decay",
]
# Bytes 256 + the tiny models' special tokens (trainer.tiny_model.MIN_VOCAB).
MIN_SCRATCH_VOCAB = 260

__all__ = [
    "EvaluationSettings",
    "EventOut",
    "Hyperparameters",
    "MetricOut",
    "RunStatus",
    "StudentSpec",
    "TrainingRunCreate",
    "TrainingRunDetail",
    "TrainingRunOut",
]


class Hyperparameters(BaseModel):
    """TRL SFT settings a client may set (TrainingSpec without `method`); everything else: TRL defaults."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    learning_rate: float | None = Field(
        default=None, gt=0, le=1.0, description="Peak learning rate; unset: 2e-5 (full) or 2e-4 (LoRA)."
    )
    num_train_epochs: float = Field(default=1.0, gt=0, le=1000)
    max_steps: int = Field(default=-1, ge=-1, le=10_000_000, description="-1: train for num_train_epochs.")
    per_device_train_batch_size: int = Field(default=8, ge=1, le=4096)
    gradient_accumulation_steps: int = Field(default=1, ge=1, le=1024)
    max_length: int = Field(default=1024, ge=8, le=1_048_576, description="Tokens per sequence (or pack).")
    packing: bool = False
    warmup_ratio: float = Field(default=0.0, ge=0, lt=1, description="Warm-up as a fraction of all steps.")
    warmup_steps: int = Field(default=0, ge=0, le=10_000_000)
    lr_scheduler_type: LrScheduler = "linear"
    weight_decay: float = Field(default=0.0, ge=0, le=1)
    seed: int = Field(default=42, ge=0, le=2**32 - 1)
    eval_split: float = Field(
        default=0.0,
        ge=0,
        le=0.5,
        description="Fraction of the train rows held out for eval loss when the dataset has no eval split.",
    )
    eval_steps: int | None = Field(default=None, ge=1, le=10_000_000, description="Unset: logging_steps.")
    save_steps: int = Field(default=500, ge=1, le=10_000_000, description="Checkpoint interval in steps.")
    save_total_limit: int | None = Field(default=2, ge=1, le=1000, description="Checkpoints kept on disk.")
    logging_steps: int = Field(default=10, ge=1, le=100_000)
    lora_r: int = Field(default=16, ge=1, le=1024)
    lora_alpha: int = Field(default=32, ge=1, le=4096)
    lora_dropout: float = Field(default=0.05, ge=0, lt=1)
    lora_target_modules: list[str] | Literal["all-linear"] = Field(
        default="all-linear",
        description="Module names to adapt, or 'all-linear' (every linear but the LM head).",
    )

    @model_validator(mode="after")
    def _check(self) -> Hyperparameters:
        if self.max_steps == 0:
            raise ValueError("max_steps must be -1 (use num_train_epochs) or at least 1")
        if self.warmup_ratio and self.warmup_steps:
            raise ValueError("set warmup_ratio or warmup_steps, not both")
        if isinstance(self.lora_target_modules, list) and (
            not self.lora_target_modules or not all(name.strip() for name in self.lora_target_modules)
        ):
            raise ValueError("lora_target_modules must be 'all-linear' or a non-empty list of module names")
        return self


class ScratchShapes(BaseModel):
    """A new tiny Llama trained from random weights (its tokenizer is trained on the dataset's rows)."""

    model_config = ConfigDict(extra="forbid")

    layers: int = Field(default=4, ge=1, le=128)
    hidden: int = Field(default=128, ge=8, le=16384)
    heads: int = Field(default=4, ge=1, le=16384)
    intermediate: int | None = Field(default=None, ge=1, le=1_000_000, description="Default: 4 × hidden.")
    vocab: int = Field(default=512, ge=MIN_SCRATCH_VOCAB, le=1_000_000)
    max_position: int = Field(default=512, ge=16, le=1_048_576)
    split_digits: bool = Field(default=True, description="One token per digit (arithmetic tasks).")
    seed: int = Field(default=0, ge=0, le=INT_MAX)

    @model_validator(mode="after")
    def _buildable(self) -> ScratchShapes:
        if self.hidden % self.heads or (self.hidden // self.heads) % 2:
            # Rotary position embeddings rotate pairs of dimensions: each head needs an even size.
            raise ValueError(
                f"hidden ({self.hidden}) must be a multiple of heads ({self.heads}) with an even head size"
            )
        return self


class StudentSpec(BaseModel):
    """The student: a model folder (or hub id where a hub is reachable), or shapes to build from scratch."""

    model_config = ConfigDict(extra="forbid")

    model: str | None = Field(
        default=None, min_length=1, max_length=1000, description="Folder path or hub id."
    )
    from_scratch: ScratchShapes | None = None

    @model_validator(mode="after")
    def _one_of(self) -> StudentSpec:
        if (self.model is None) == (self.from_scratch is None):
            raise ValueError("give either `model` (a folder or hub id) or `from_scratch` (shapes), not both")
        return self


class EvalSetSource(BaseModel):
    """A user-supplied evaluation set: question/answer rows in a JSONL, Parquet or HF `save_to_disk` file."""

    model_config = ConfigDict(extra="forbid")

    path: str = Field(min_length=1, max_length=4096)
    format: Literal["auto", "jsonl", "parquet", "hf"] = Field(
        default="auto", description="auto: by suffix (.jsonl/.json, .parquet) or folder (hf)."
    )
    split: str | None = Field(default=None, description="HF DatasetDict folders: the split to read.")
    question_field: str = Field(default="question", min_length=1, max_length=200)
    answer_field: str = Field(default="answer", min_length=1, max_length=200, description="The reference.")
    system_field: str | None = Field(default=None, min_length=1, max_length=200)


class EngineOptions(BaseModel):
    """vLLM options for the student engines (default: the teacher's engine options)."""

    model_config = ConfigDict(extra="forbid")

    dtype: str | None = Field(default=None, max_length=20)
    max_model_len: int | None = Field(default=None, ge=16, le=1_048_576)
    gpu_memory_utilization: float | None = Field(default=None, gt=0, le=1)
    kv_cache_memory_bytes: int | None = Field(default=None, ge=1 << 20)
    enforce_eager: bool | None = None
    max_num_seqs: int | None = Field(default=None, ge=1, le=65536)
    engine_kwargs: dict[str, Any] | None = None


class EvaluationSettings(BaseModel):
    """How the run scores teacher and student (before and after training) on the same held-out items.

    Answers are generated greedily with vLLM and compared with the references by the verifier the
    filters use (`scorer`: exact / normalized / numeric / regex-extracted final answer).
    """

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    split: Literal["test"] = Field(
        default="test", description="The version's split whose rows are the items (unless `eval_set`)."
    )
    eval_set: EvalSetSource | None = Field(default=None, description="Score on these items instead.")
    reference_field: str | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        description="Split items: take the reference from the seed row of the row's sample "
        "(`inputs[reference_field]`, dotted paths allowed) instead of the row's answer.",
    )
    scorer: Scorer = "normalized"
    pattern: str | None = Field(
        default=None, max_length=2000, description="Regex extracting the final answer (group 1 or the match)."
    )
    tolerance: float = Field(default=1e-6, ge=0, description="numeric: allowed absolute difference.")
    relative_tolerance: float = Field(default=0.0, ge=0, description="numeric: allowed relative difference.")
    max_items: int = Field(default=200, ge=1, le=100_000, description="Score at most this many items.")
    max_new_tokens: int = Field(default=64, ge=1, le=32_768)
    teacher: TeacherConfig | None = Field(
        default=None, description="Default: the teacher of the version's jobs (its lineage)."
    )
    student_engine: EngineOptions | None = None

    @model_validator(mode="after")
    def _scorer(self) -> EvaluationSettings:
        # The filters' own validation of a verifier (regex compiles; regex mode needs a pattern).
        self.verifier_params()
        return self

    def verifier_params(self) -> VerifierParams:
        return VerifierParams(
            mode=self.scorer,
            pattern=self.pattern,
            tolerance=self.tolerance,
            relative_tolerance=self.relative_tolerance,
        )


class TrainingRunCreate(BaseModel):
    """Fine-tune a student on a dataset version (queued; a `train` worker runs it)."""

    model_config = ConfigDict(extra="forbid")

    dataset_id: int = Field(ge=1, le=BIGINT_MAX, description="The dataset version to train on.")
    student: StudentSpec
    method: Literal["full", "lora"] = "full"
    hyperparameters: Hyperparameters = Field(
        default_factory=Hyperparameters, description="TRL SFT settings (a validated subset of SFTConfig)."
    )
    evaluation: EvaluationSettings = Field(default_factory=EvaluationSettings)
    priority: int = Field(default=0, ge=-1_000_000, le=1_000_000, description="Higher runs first.")


class ModelScore(BaseModel):
    """One model's score on the evaluation items."""

    model: str
    items: int
    correct: int
    accuracy: float
    empty_answers: int = Field(default=0, description="Items the model answered with nothing (or failed).")


class EvaluationTable(BaseModel):
    """Teacher vs student before and after training, on the same items; filled in as models are scored."""

    model_config = ConfigDict(extra="allow")

    items: int
    scorer: str
    source: str = Field(description='"test split of dataset N" or the eval set path.')
    teacher: ModelScore | None = None
    student_before: ModelScore | None = None
    student_after: ModelScore | None = None
    ratio: float | None = Field(default=None, description="student_after accuracy / teacher accuracy.")
    examples: list[dict[str, Any]] = Field(default_factory=list, description="A few items with every answer.")


class DatasetRef(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    version: int


class TrainingRunOut(BaseModel):
    """A training run and where it stands."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    status: RunStatus
    dataset_id: int
    student: dict[str, Any]
    method: str
    config: dict[str, Any] = Field(description="The hyper-parameters (TrainingSpec fields, with `method`).")
    evaluation: dict[str, Any] = Field(description="Evaluation settings, the teacher resolved.")
    step: int = Field(exclude=True)
    total_steps: int | None = Field(exclude=True)
    tokens_per_second: float | None = Field(exclude=True)
    model_path: str | None = Field(description="The trained student's model folder (when training ended).")
    output_dir: str | None = Field(description="Checkpoints, metrics.jsonl, final/ (on the worker's disk).")
    error: str | None
    created_by: int | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    # Set by the detail view (which reads the task and the recent metrics); lists show the basics.
    phase_: str | None = Field(default=None, exclude=True)
    recent_steps_: list[tuple[int, float]] = Field(default_factory=list, exclude=True)
    attempt_started_at_: datetime | None = Field(default=None, exclude=True)

    @field_serializer("evaluation")
    def _redact(self, evaluation: dict[str, Any]) -> dict[str, Any]:
        teacher = evaluation.get("teacher")
        if isinstance(teacher, dict) and teacher.get("api_key"):
            return {**evaluation, "teacher": {**teacher, "api_key": REDACTED}}
        return evaluation

    @computed_field  # type: ignore[prop-decorator]
    @property
    def progress(self) -> TrainingProgress:
        """Computed when the response is written, so the ETA is current."""
        return compute_progress(
            status=self.status,
            phase=self.phase_,
            step=self.step,
            total_steps=self.total_steps,
            tokens_per_second=self.tokens_per_second,
            started_at=self.started_at,
            finished_at=self.finished_at,
            recent_steps=self.recent_steps_,
            attempt_started_at=self.attempt_started_at_,
            now=datetime.now(UTC),
        )


class TrainingRunDetail(TrainingRunOut):
    """A run with its dataset, checkpoints, evaluation table and the most recent error."""

    dataset: DatasetRef
    checkpoints: list[str] = Field(description="Complete checkpoints on the worker's disk, oldest first.")
    results: EvaluationTable | None = Field(description="The student-vs-teacher table (null until scored).")
    attempts: int = Field(description="Claims of the run's task so far (a resumed run counts more than one).")
    last_error: str | None = Field(description="The run's error, else the task's latest (retries included).")

    @model_validator(mode="before")
    @classmethod
    def _from_view(cls, data: Any) -> Any:
        run = getattr(data, "run", None)
        if run is None:
            return data
        values = {name: getattr(run, name) for name in TrainingRunOut.model_fields if not name.endswith("_")}
        values.update(
            dataset=data.dataset,
            checkpoints=list(run.checkpoints or []),
            results=run.results,
            attempts=data.attempts,
            last_error=data.last_error,
            phase_=data.phase,
            recent_steps_=data.recent_steps,
            attempt_started_at_=data.attempt_started_at,
        )
        return values


class MetricOut(BaseModel):
    """One logged training step (the last values logged for that step)."""

    model_config = ConfigDict(from_attributes=True)

    step: int
    data: dict[str, Any] = Field(
        exclude=True, description="step, loss, learning_rate, grad_norm, eval_loss, tokens/s, epoch, ..."
    )
    created_at: datetime

    @computed_field  # type: ignore[prop-decorator]
    @property
    def loss(self) -> float | None:
        return _number(self.data.get("loss"))

    @computed_field  # type: ignore[prop-decorator]
    @property
    def eval_loss(self) -> float | None:
        return _number(self.data.get("eval_loss"))

    @computed_field  # type: ignore[prop-decorator]
    @property
    def learning_rate(self) -> float | None:
        return _number(self.data.get("learning_rate"))

    @computed_field  # type: ignore[prop-decorator]
    @property
    def grad_norm(self) -> float | None:
        return _number(self.data.get("grad_norm"))

    @computed_field  # type: ignore[prop-decorator]
    @property
    def tokens_per_second(self) -> float | None:
        return _number(self.data.get("tokens_per_second"))

    @computed_field  # type: ignore[prop-decorator]
    @property
    def epoch(self) -> float | None:
        return _number(self.data.get("epoch"))

    @computed_field  # type: ignore[prop-decorator]
    @property
    def values(self) -> dict[str, Any]:
        """Everything the trainer logged for the step (incl. mean_token_accuracy, total_steps, time)."""
        return dict(self.data)


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None
