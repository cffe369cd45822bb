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
from typing import TYPE_CHECKING, Any

import yaml

from trainer.spec import TrainingSpec

if TYPE_CHECKING:
    from trl.trainer.sft_config import SFTConfig


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
