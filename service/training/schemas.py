"""Training-run payloads. Read from ORM rows with from_attributes (no ORM import here).

The hyper-parameters a client may set are the trainer's own declaration (`trainer.spec`, pure
pydantic: the API process never imports TRL, transformers or torch). The student shapes follow
`trainer.tiny_model.TinyModelSpec`'s rules, which import the ML stack, so they are declared here;
tests/service/training/test_training_logic.py fails when the two drift apart. The worker validates the
stored values again with the trainer's own models.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, computed_field, field_serializer, model_validator

from generator.engines.base import TeacherConfig
from service.filters.specs import VerifierParams
from service.jobs.schemas import REDACTED, EventOut
from service.limits import BIGINT_MAX, INT_MAX
from service.statuses import StatusName
from service.training.progress import TrainingProgress, compute_progress
from trainer.spec import Hyperparameters

RunStatus = StatusName
Scorer = Literal["exact", "normalized", "numeric", "regex"]
# Bytes 256 + the tiny models' special tokens (trainer.tiny_model.MIN_VOCAB).
MIN_SCRATCH_VOCAB = 260
TEACHER_TOKENIZER = "teacher"
# The key of `training_run.results` that holds the training outcome beside the evaluation table.
TRAINING_KEY = "training"

__all__ = [
    "DuringTraining",
    "EvaluationSettings",
    "EventOut",
    "Hyperparameters",
    "MetricOut",
    "RunStatus",
    "StudentSpec",
    "TrainingOutcome",
    "TrainingRunCreate",
    "TrainingRunDetail",
    "TrainingRunOut",
]


class ScratchShapes(BaseModel):
    """A new tiny Llama trained from random weights (with a tokenizer trained on the rows, or reused)."""

    model_config = ConfigDict(extra="forbid")

    layers: int = Field(default=4, ge=1, le=128)
    hidden: int = Field(default=128, ge=8, le=16384)
    heads: int = Field(default=4, ge=1, le=16384)
    intermediate: int | None = Field(default=None, ge=1, le=1_000_000, description="Default: 4 × hidden.")
    vocab: int = Field(default=512, ge=MIN_SCRATCH_VOCAB, le=1_000_000)
    max_position: int = Field(default=512, ge=16, le=1_048_576)
    split_digits: bool = Field(default=True, description="One token per digit (arithmetic tasks).")
    seed: int = Field(default=0, ge=0, le=INT_MAX)
    tokenizer: str | None = Field(
        default=None,
        min_length=1,
        max_length=4096,
        description='Reuse a tokenizer instead of training one: "teacher" (the tokenizer of the '
        "version's teacher model folder) or a tokenizer/model folder. Its vocabulary, special tokens "
        "and chat template are the student's; `vocab` and `split_digits` then do not apply.",
    )

    @model_validator(mode="after")
    def _buildable(self) -> ScratchShapes:
        if self.tokenizer is not None:
            if not self.tokenizer.strip():
                raise ValueError('tokenizer must be "teacher" or a tokenizer folder')
            clashing = sorted({"vocab", "split_digits"} & self.model_fields_set)
            if clashing:
                raise ValueError(
                    f"{' and '.join(clashing)} cannot be set with a tokenizer: the reused tokenizer decides"
                )
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


class AccuracyTarget(BaseModel):
    """When in-training accuracy is good enough to stop: an absolute score, or a share of the teacher's."""

    model_config = ConfigDict(extra="forbid")

    score: float | None = Field(default=None, gt=0, le=1, description="Stop at this accuracy (0..1).")
    of_teacher: float | None = Field(
        default=None,
        gt=0,
        le=10,
        description="Stop at this fraction of the teacher's accuracy on the same items (scored before "
        "training with the evaluation's engine).",
    )

    @model_validator(mode="after")
    def _one(self) -> AccuracyTarget:
        if (self.score is None) == (self.of_teacher is None):
            raise ValueError("give one of `score` or `of_teacher`")
        return self


class DuringTraining(BaseModel):
    """Score the student while it trains, keep the best-scoring model, and stop once it has learned.

    Every `every_steps` the student answers the first `items` evaluation items (the version's test
    split or the eval set) greedily with transformers inside the training process, scored by the
    evaluation's scorer. The score joins the metric series (`eval_accuracy`); the final model is the
    best-scoring one (`best_step`); training stops at the `target` or after `patience` scorings
    without improvement, within the budget (`max_steps`/epochs, `hyperparameters.max_minutes`).
    """

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(default=True, description="Runs only when the evaluation is enabled.")
    items: int = Field(
        default=100, ge=1, le=10_000, description="The first N evaluation items (at most max_items)."
    )
    every_steps: int | None = Field(
        default=None,
        ge=1,
        le=10_000_000,
        description="Unset: about 20 scorings over the run (at least 10 steps apart).",
    )
    patience: int | None = Field(
        default=8,
        ge=1,
        le=10_000,
        description="Stop after this many scorings without improvement (null: no plateau stop); "
        "8 of the default ~20 scorings: a student that learns in jumps gets a long flat stretch. "
        "Not counted while the best score is 0.",
    )
    min_delta: float = Field(default=0.0, ge=0, le=1, description="An improvement is larger than this.")
    target: AccuracyTarget | None = None
    max_new_tokens: int | None = Field(
        default=None,
        ge=1,
        le=32_768,
        description="Unset: the longest reference or training answer in tokens + 8 "
        "(at most the evaluation's max_new_tokens).",
    )
    batch_size: int = Field(default=64, ge=1, le=4096, description="Prompts per generate call.")


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
    during_training: DuringTraining = Field(default_factory=DuringTraining)

    @model_validator(mode="after")
    def _scorer(self) -> EvaluationSettings:
        # The filters' own validation of a verifier (regex compiles; regex mode needs a pattern).
        self.verifier_params()
        if not self.enabled and "during_training" in self.model_fields_set and self.during_training.enabled:
            raise ValueError("during_training scores the evaluation's items: it needs enabled=true")
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
    config: dict[str, Any] = Field(
        description="The hyper-parameters (TrainingSpec fields, with `method`); once training starts, "
        "the values used, with `defaults`: {fields, train_rows, student_kind} naming those the schedule "
        "rule chose."
    )
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


class TrainingOutcome(BaseModel):
    """How training went: the schedule's end or an early stop, the model kept, what scoring cost."""

    model_config = ConfigDict(extra="allow")

    global_step: int | None = None
    total_steps: int | None = None
    train_rows: int | None = None
    best_step: int | None = Field(default=None, description="The step the final model comes from.")
    best_score: float | None = Field(default=None, description="Its in-training accuracy.")
    stopped: str | None = Field(
        default=None, description='"target", "plateau", "time_budget"; null: the schedule ran out.'
    )
    target_score: float | None = Field(default=None, description="The absolute accuracy target used.")
    teacher_score: float | None = Field(
        default=None, description="The teacher's accuracy on the in-training items (for of_teacher)."
    )
    evaluations: int | None = None
    eval_every: int | None = None
    eval_items: int | None = None
    eval_max_new_tokens: int | None = None
    eval_seconds: float | None = Field(default=None, description="Seconds scoring (last attempt).")
    train_seconds: float | None = Field(default=None, description="Seconds training, scoring included.")
    eval_share: float | None = Field(default=None, description="eval_seconds / train_seconds.")


class TrainingRunDetail(TrainingRunOut):
    """A run with its dataset, checkpoints, evaluation table and the most recent error."""

    dataset: DatasetRef
    checkpoints: list[str] = Field(description="Complete checkpoints on the worker's disk, oldest first.")
    results: EvaluationTable | None = Field(description="The student-vs-teacher table (null until scored).")
    training: TrainingOutcome | None = Field(
        default=None, description="In-training accuracy, early stop and the kept step (null until trained)."
    )
    best_step: int | None = Field(default=None, description="The step the final model comes from.")
    best_score: float | None = Field(default=None, description="The in-training accuracy of that model.")
    attempts: int = Field(description="Claims of the run's task so far (a resumed run counts more than one).")
    last_error: str | None = Field(description="The run's error, else the task's latest (retries included).")

    @model_validator(mode="before")
    @classmethod
    def _from_view(cls, data: Any) -> Any:
        run = getattr(data, "run", None)
        if run is None:
            return data
        values = {name: getattr(run, name) for name in TrainingRunOut.model_fields if not name.endswith("_")}
        stored = dict(run.results or {})
        # `results` holds the evaluation table and, under "training", how training went.
        training = stored.pop(TRAINING_KEY, None)
        values.update(
            dataset=data.dataset,
            checkpoints=list(run.checkpoints or []),
            results=stored if "items" in stored else None,
            training=training,
            best_step=(training or {}).get("best_step"),
            best_score=(training or {}).get("best_score"),
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
    def eval_accuracy(self) -> float | None:
        """In-training accuracy on the held-out items (steps where the student was scored)."""
        return _number(self.data.get("eval_accuracy"))

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


# --- per-item evaluation results (GET /v1/training-runs/{id}/evaluation/items) -----------------

EvaluationItemFilter = Literal["all", "disagreements", "student_wrong", "teacher_wrong"]
EVALUATION_MODELS = ("teacher", "student_before", "student_after")


class ModelAnswer(BaseModel):
    """One model's greedy answer to an item and whether the scorer judged it correct."""

    answer: str
    correct: bool


class EvaluationItemOut(BaseModel):
    """One scored evaluation item: the question, the reference, and every scored model's answer.

    `disagreement`: teacher and trained student were both scored and their answers differ in
    correctness or in text (answers are compared as stored: whitespace-stripped, otherwise exact).
    """

    index: int = Field(description="Position in the run's evaluation items (0-based).")
    question: str
    reference: str
    system: str | None
    teacher: ModelAnswer | None = Field(description="Null when the teacher was not scored.")
    student_before: ModelAnswer | None
    student_after: ModelAnswer | None
    disagreement: bool

    @model_validator(mode="before")
    @classmethod
    def _from_row(cls, data: Any) -> Any:
        if isinstance(data, dict) or not hasattr(data, "item_index"):
            return data
        answers: dict[str, ModelAnswer | None] = {}
        for name in EVALUATION_MODELS:
            answer, correct = getattr(data, f"{name}_answer"), getattr(data, f"{name}_correct")
            scored = answer is not None and correct is not None
            answers[name] = ModelAnswer(answer=answer, correct=correct) if scored else None
        teacher, after = answers["teacher"], answers["student_after"]
        return {
            "index": data.item_index,
            "question": data.question,
            "reference": data.reference,
            "system": data.system,
            **answers,
            "disagreement": bool(
                teacher and after and (teacher.correct != after.correct or teacher.answer != after.answer)
            ),
        }
