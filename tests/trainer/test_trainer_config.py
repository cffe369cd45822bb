"""TrainingSpec bounds, the mapping onto TRL's SFTConfig, and SFTConfig YAML files."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from trainer.config import build_sft_config, load_sft_config_yaml
from trainer.spec import TrainingSpec


@pytest.mark.parametrize(
    "values",
    [
        {"learning_rate": 0},
        {"max_steps": 0},
        {"per_device_train_batch_size": 0},
        {"method": "qlora"},
        {"warmup_ratio": 0.1, "warmup_steps": 10},
        {"lora_target_modules": []},
        {"eval_split": 0.9},
        {"unknown_knob": 1},
    ],
)
def test_training_spec_refuses_out_of_range_values(values: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        TrainingSpec(**values)  # type: ignore[arg-type]


def test_build_sft_config_maps_the_spec_with_cpu_safe_defaults(tmp_path: Path) -> None:
    spec = TrainingSpec(learning_rate=1e-3, max_steps=7, packing=True, warmup_ratio=0.1, save_steps=3)
    config = build_sft_config(spec, tmp_path)
    assert config.learning_rate == 1e-3
    assert config.max_steps == 7
    assert config.save_steps == 3
    assert config.packing
    assert config.packing_strategy == "wrapped"
    assert config.warmup_steps == 0.1
    assert config.completion_only_loss is True
    # No GPU here: no bf16, no gradient checkpointing, no pinned memory.
    assert config.bf16 is False
    assert config.use_cpu is True
    assert config.gradient_checkpointing is False
    assert config.dataloader_pin_memory is False
    assert TrainingSpec(method="lora").resolved_learning_rate == 2e-4


def test_build_sft_config_overrides_win_and_unknown_keys_are_refused(tmp_path: Path) -> None:
    config = build_sft_config(TrainingSpec(), tmp_path, {"weight_decay": 0.1, "packing_strategy": "bfd"})
    assert config.weight_decay == 0.1
    assert config.packing_strategy == "bfd"
    with pytest.raises(ValueError, match=r"unknown SFTConfig key.*not_a_field"):
        build_sft_config(TrainingSpec(), tmp_path, {"not_a_field": 1})


def test_load_sft_config_yaml_validates_with_sft_config(tmp_path: Path) -> None:
    good = tmp_path / "sft.yaml"
    good.write_text("learning_rate: 1e-3\nmax_steps: 12\nlr_scheduler_type: cosine\nweight_decay: 0.01\n")
    assert load_sft_config_yaml(good) == {
        "learning_rate": 1e-3,  # YAML reads 1e-3 as a string; converted
        "max_steps": 12,
        "lr_scheduler_type": "cosine",
        "weight_decay": 0.01,
    }

    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("learning_rate: 0.001\nlearnin_rate: 3\n")
    with pytest.raises(ValueError, match=r"unknown SFTConfig key.*learnin_rate") as caught:
        load_sft_config_yaml(unknown)
    assert "\n" not in str(caught.value)

    refused = tmp_path / "refused.yaml"
    refused.write_text("lr_scheduler_type: sideways\n")
    with pytest.raises(ValueError, match="invalid SFTConfig") as caught:
        load_sft_config_yaml(refused)
    assert "\n" not in str(caught.value)

    listing = tmp_path / "list.yaml"
    listing.write_text("- 1\n- 2\n")
    with pytest.raises(ValueError, match="must be a mapping"):
        load_sft_config_yaml(listing)
