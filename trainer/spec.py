"""What a client may set for a training run: the hyper-parameters, validated, in pure pydantic.

One declaration for the API (which validates a run's `hyperparameters` at submission and must not
import TRL, transformers or torch) and the trainer (which maps them onto TRL's `SFTConfig` in
trainer/config.py). This module imports pydantic and trainer/schedule.py only.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from trainer.schedule import StudentKind, default_schedule

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

# What an unset field means when nothing resolved it from the data (`build_sft_config` on a spec that
# did not go through `TrainingSpec.with_schedule`): TRL's own defaults, the usual LoRA learning rate.
LIBRARY_DEFAULTS: dict[str, Any] = {
    "num_train_epochs": 1.0,
    "max_steps": -1,
    "per_device_train_batch_size": 8,
    "warmup_ratio": 0.0,
    "warmup_steps": 0,
    "lr_scheduler_type": "linear",
    "weight_decay": 0.0,
}
DEFAULT_LEARNING_RATE = {"full": 2e-5, "lora": 2e-4}
# Fields that `trainer.schedule.default_schedule` decides when the client leaves them unset (None).
SCHEDULED_FIELDS = (
    "learning_rate",
    "num_train_epochs",
    "max_steps",
    "per_device_train_batch_size",
    "warmup_ratio",
    "lr_scheduler_type",
    "weight_decay",
)
UNSET = "unset: chosen from the dataset size and the student kind (trainer/schedule.py)"


class Hyperparameters(BaseModel):
    """TRL SFT settings a client may set; everything else: TRL defaults.

    Schedule fields left unset (None) are chosen by `trainer.schedule.default_schedule` from the
    number of training rows and the kind of student once the data is loaded
    (`TrainingSpec.with_schedule`); a run's `config` then shows the values chosen and
    `config.defaults.fields` names them.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    learning_rate: float | None = Field(
        default=None, gt=0, le=1.0, description=f"Peak learning rate; {UNSET}."
    )
    num_train_epochs: float | None = Field(default=None, gt=0, le=1000, description=UNSET)
    max_steps: int | None = Field(
        default=None, ge=-1, le=10_000_000, description=f"-1: train for num_train_epochs; {UNSET}."
    )
    max_minutes: float | None = Field(
        default=None,
        gt=0,
        le=10_080,
        description="Time budget: stop (keeping the model) after this many minutes of training in all.",
    )
    per_device_train_batch_size: int | None = Field(default=None, ge=1, le=4096, description=UNSET)
    gradient_accumulation_steps: int = Field(default=1, ge=1, le=1024)
    max_length: int = Field(default=1024, ge=8, le=1_048_576, description="Tokens per sequence (or pack).")
    packing: bool = False
    warmup_ratio: float | None = Field(
        default=None, ge=0, lt=1, description=f"Warm-up as a fraction of all steps; {UNSET}."
    )
    warmup_steps: int | None = Field(
        default=None, ge=0, le=10_000_000, description="Warm-up steps (instead of warmup_ratio)."
    )
    lr_scheduler_type: LrScheduler | None = Field(default=None, description=UNSET)
    weight_decay: float | None = Field(default=None, ge=0, le=1, description=UNSET)
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
    soft_label_alpha: float | None = Field(
        default=None,
        ge=0,
        le=1,
        description="Soft-label distillation (same tokenizer as the teacher; the dataset exported with "
        "soft_labels): the loss is alpha x KL(teacher top-k || student) + (1 - alpha) x cross-entropy. "
        "Unset: hard-label SFT.",
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


class TrainingSpec(Hyperparameters):
    """The hyper-parameters with the fine-tuning method: what the trainer trains with."""

    method: Literal["full", "lora"] = "full"

    @property
    def resolved_learning_rate(self) -> float:
        return self.learning_rate if self.learning_rate is not None else DEFAULT_LEARNING_RATE[self.method]

    def unset_schedule_fields(self) -> list[str]:
        """The schedule fields the client left unset (a warm-up given in steps counts as set)."""
        unset = [name for name in SCHEDULED_FIELDS if getattr(self, name) is None]
        if self.warmup_steps is not None and "warmup_ratio" in unset:
            unset.remove("warmup_ratio")
        return unset

    def with_schedule(self, train_rows: int, student_kind: StudentKind) -> tuple[TrainingSpec, list[str]]:
        """This spec with its unset schedule fields chosen by `default_schedule`; and which those were.

        The result has no unset schedule field left, so resolving it again changes nothing (a resumed
        run given the stored, resolved spec trains on the same schedule).
        """
        unset = self.unset_schedule_fields()
        chosen = default_schedule(train_rows, student_kind)
        values = {name: chosen[name] for name in unset}
        if self.warmup_steps is None:
            values["warmup_steps"] = 0
        return self.model_copy(update=values), unset

    def value(self, name: str) -> Any:
        """A field's value, with `LIBRARY_DEFAULTS` standing in for what was left unset."""
        if name == "learning_rate":
            return self.resolved_learning_rate
        current = getattr(self, name)
        return LIBRARY_DEFAULTS[name] if current is None else current
