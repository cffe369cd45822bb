"""Training hyper-parameters: a validated subset for the API, mapped onto TRL's own `SFTConfig`.

TRL's `SFTConfig` (a `transformers.TrainingArguments`) is the real configuration; `TrainingSpec` is
only the part a REST client may set, with bounds, so a bad value is refused before anything runs.
The CLI accepts a full `SFTConfig` YAML on top. This module imports nothing heavy at import time
(pydantic only): TRL is imported inside the functions that build an `SFTConfig`.
"""

from __future__ import annotations

import dataclasses
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from trainer.schedule import StudentKind, default_schedule

if TYPE_CHECKING:
    from trl.trainer.sft_config import SFTConfig

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


class TrainingSpec(BaseModel):
    """The hyper-parameters a client may set for a training run (everything else: TRL defaults).

    Schedule fields left unset (None) are chosen by `trainer.schedule.default_schedule` from the
    number of training rows and the kind of student once the data is loaded (`with_schedule`).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    method: Literal["full", "lora"] = "full"
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

    @model_validator(mode="after")
    def _check(self) -> TrainingSpec:
        if self.max_steps == 0:
            raise ValueError("max_steps must be -1 (use num_train_epochs) or at least 1")
        if self.warmup_ratio and self.warmup_steps:
            raise ValueError("set warmup_ratio or warmup_steps, not both")
        if isinstance(self.lora_target_modules, list) and (
            not self.lora_target_modules or not all(name.strip() for name in self.lora_target_modules)
        ):
            raise ValueError("lora_target_modules must be 'all-linear' or a non-empty list of module names")
        return self

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


def cuda_available() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def device_defaults() -> dict[str, Any]:
    """SFTConfig values that differ between a GPU and a CPU-only machine (see ENV.md)."""
    if cuda_available():
        import torch

        return {"bf16": bool(torch.cuda.is_bf16_supported()), "dataloader_pin_memory": True}
    return {
        # SFTConfig defaults to bf16, which fails without a GPU.
        "bf16": False,
        "use_cpu": True,
        # Gradient checkpointing only saves accelerator memory; on CPU it costs ~30% of the speed.
        "gradient_checkpointing": False,
        "dataloader_pin_memory": False,
    }


def build_sft_config(
    spec: TrainingSpec, output_dir: Path, overrides: Mapping[str, Any] | None = None
) -> SFTConfig:
    """Map a `TrainingSpec` onto TRL's `SFTConfig`; `overrides` (any SFTConfig field) win.

    Raises:
        ValueError: an unknown override key, or a value TRL/transformers refuses (one line).
    """
    values: dict[str, Any] = {
        **device_defaults(),
        "learning_rate": spec.value("learning_rate"),
        "num_train_epochs": spec.value("num_train_epochs"),
        "max_steps": spec.value("max_steps"),
        "per_device_train_batch_size": spec.value("per_device_train_batch_size"),
        "per_device_eval_batch_size": spec.value("per_device_train_batch_size"),
        "gradient_accumulation_steps": spec.gradient_accumulation_steps,
        "max_length": spec.max_length,
        "packing": spec.packing,
        # BFD packing is padding-free: one batch*max_length sequence per step, slow without flash
        # attention; "wrapped" keeps plain batches (ENV.md).
        "packing_strategy": "bfd" if cuda_available() else "wrapped",
        # transformers 5 reads a warmup_steps below 1 as a ratio of all steps.
        "warmup_steps": spec.warmup_ratio if spec.warmup_ratio else spec.value("warmup_steps"),
        "lr_scheduler_type": spec.value("lr_scheduler_type"),
        "weight_decay": spec.value("weight_decay"),
        "seed": spec.seed,
        "data_seed": spec.seed,
        "logging_steps": spec.logging_steps,
        "save_strategy": "steps",
        "save_steps": spec.save_steps,
        "save_total_limit": spec.save_total_limit,
        # The eval strategy is decided by `train` once it knows whether there are eval rows.
        "eval_strategy": "no",
        "eval_steps": spec.eval_steps or spec.logging_steps,
        # Loss on the answer only: the datasets are conversational prompt-completion rows.
        "completion_only_loss": True,
        "report_to": "none",
        "disable_tqdm": True,
    }
    return make_sft_config(output_dir, {**values, **(overrides or {})})


def make_sft_config(output_dir: Path, values: Mapping[str, Any]) -> SFTConfig:
    """Construct an SFTConfig, turning TRL's errors into one-line `ValueError`s."""
    from trl.trainer.sft_config import SFTConfig

    known = {f.name for f in dataclasses.fields(SFTConfig) if f.init}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"unknown SFTConfig key(s): {', '.join(unknown)}")
    data = {key: value for key, value in _coerce_numbers(values).items() if key != "output_dir"}
    try:
        return SFTConfig(output_dir=str(output_dir), **data)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"invalid SFTConfig: {_first_line(exc)}") from exc


def load_sft_config_yaml(path: Path) -> dict[str, Any]:
    """Read a full SFTConfig YAML (a mapping of SFTConfig fields), validated by constructing SFTConfig.

    Returns the mapping (numbers written as strings, e.g. YAML's `1e-3`, converted) to pass as
    `overrides` to `build_sft_config`. An `output_dir` key is kept; `train` decides where to write.

    Raises:
        ValueError: unreadable file, not a mapping, unknown key or refused value (one line).
    """
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror or exc}") from exc
    except yaml.YAMLError as exc:
        raise ValueError(f"{path} is not valid YAML: {_first_line(exc)}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict) or not all(isinstance(key, str) for key in data):
        raise ValueError(f"{path} must be a mapping of SFTConfig fields")
    values = _coerce_numbers(data)
    with tempfile.TemporaryDirectory() as scratch:
        try:
            make_sft_config(Path(scratch), {**device_defaults(), **values})
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from exc
    return values


def _coerce_numbers(values: Mapping[str, Any]) -> dict[str, Any]:
    """YAML 1.1 reads `1e-3` as a string; convert strings for SFTConfig fields whose default is a number."""
    from trl.trainer.sft_config import SFTConfig

    defaults = {f.name: f.default for f in dataclasses.fields(SFTConfig)}
    out: dict[str, Any] = {}
    for key, value in values.items():
        default = defaults.get(key)
        if isinstance(value, str) and isinstance(default, int | float) and not isinstance(default, bool):
            try:
                number = float(value)
            except ValueError:
                out[key] = value
                continue
            out[key] = int(number) if isinstance(default, int) and number.is_integer() else number
        else:
            out[key] = value
    return out


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
