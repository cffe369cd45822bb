"""SFT with real TRL on CPU: full, LoRA, packing, from scratch, checkpoints and resume."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from transformers import TrainerCallback

from trainer.metrics import read_metrics
from trainer.preflight import MaskError
from trainer.sft import CheckpointError, StudentError, TrainResult, train
from trainer.spec import TrainingSpec

# Small and fast: a 2-layer hidden-64 student, short sequences, a high learning rate.
FAST = {"learning_rate": 3e-3, "per_device_train_batch_size": 16, "max_length": 64, "logging_steps": 2}


def _load(model_path: str) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(model_path), AutoTokenizer.from_pretrained(model_path)


class CrashAt(TrainerCallback):  # type: ignore[misc]
    """Simulate a crash (a killed worker) after a given step."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if state.global_step == self.step:
            raise RuntimeError(f"crash at step {self.step}")


def test_full_sft_learns_writes_metrics_and_a_loadable_model_with_a_card(
    addition_export: Path, tiny_model_dir: Path, tmp_path: Path
) -> None:
    seen: list[dict[str, Any]] = []
    result = train(
        dataset_path=addition_export,
        student=tiny_model_dir,
        output_dir=tmp_path / "run",
        spec=TrainingSpec(**FAST, max_steps=24, save_steps=12, eval_split=0.1),
        lineage={"dataset_version": "addition@1", "dataset_digest": "sha256:abc", "teacher": "teacher-7b"},
        progress=seen.append,
    )

    assert isinstance(result, TrainResult)
    assert result.global_step == 24
    assert result.resumed_from is None
    assert [Path(p).name for p in result.checkpoints] == ["checkpoint-12", "checkpoint-24"]
    assert result.tokens_per_second > 0
    assert "answers only" in result.mask

    rows = read_metrics(tmp_path / "run" / "metrics.jsonl")
    assert [row["step"] for row in rows] == list(range(2, 25, 2))
    for row in rows:
        assert {
            "step",
            "loss",
            "learning_rate",
            "grad_norm",
            "eval_loss",
            "tokens_per_second",
            "epoch",
        } <= row.keys()
        assert row["total_steps"] == 24
        assert row["loss"] > 0
        assert row["tokens_per_second"] > 0
    assert rows[-1]["loss"] < rows[0]["loss"] * 0.8, "the loss falls"
    assert rows[-1]["eval_loss"] is not None, "eval loss is merged into the step's row"
    assert seen
    assert seen[-1]["step"] == 24
    assert seen[-1]["total_steps"] == 24

    model, tokenizer = _load(result.model_path)
    assert model.config.use_cache, "saved for generation, with the KV cache on"
    assert model.config.num_hidden_layers == 2
    assert tokenizer.chat_template
    card = (Path(result.model_path) / "README.md").read_text()
    for fact in ("addition@1", "sha256:abc", "teacher-7b", '"max_steps": 24', "library_name: transformers"):
        assert fact in card
    lineage = json.loads((Path(result.model_path) / "hardlabel_training.json").read_text())
    assert lineage["result"]["global_step"] == 24
    assert lineage["lineage"]["teacher"] == "teacher-7b"


def test_lora_run_saves_the_adapter_and_a_merged_model(
    addition_jsonl: Path, tiny_model_dir: Path, tmp_path: Path
) -> None:
    import torch

    result = train(
        dataset_path=addition_jsonl,
        student=str(tiny_model_dir),
        output_dir=tmp_path / "lora",
        spec=TrainingSpec(**FAST, method="lora", max_steps=6, lora_r=4, lora_alpha=8),
    )
    assert result.adapter_path
    assert (Path(result.adapter_path) / "adapter_config.json").exists()
    merged, _ = _load(result.model_path)
    base, _ = _load(str(tiny_model_dir))
    assert not any("lora" in name for name in merged.state_dict()), "plain weights, loadable without peft"
    changed = [
        name
        for name, weight in merged.state_dict().items()
        if not torch.equal(weight, base.state_dict()[name])
    ]
    assert any("q_proj" in name for name in changed), "the adapter is merged into the weights"


def test_packing_run_passes_the_mask_preflight(
    addition_jsonl: Path, tiny_model_dir: Path, tmp_path: Path
) -> None:
    result = train(
        dataset_path=addition_jsonl,
        student=tiny_model_dir,
        output_dir=tmp_path / "packed",
        spec=TrainingSpec(**{**FAST, "max_length": 96}, packing=True, max_steps=4),
    )
    assert "packed sequence" in result.mask
    assert result.global_step == 4


def test_resume_continues_from_the_last_checkpoint_with_the_same_data_order(
    addition_jsonl: Path, tiny_model_dir: Path, tmp_path: Path
) -> None:
    spec = TrainingSpec(**FAST, max_steps=12, save_steps=4)
    straight = train(
        dataset_path=addition_jsonl, student=tiny_model_dir, output_dir=tmp_path / "straight", spec=spec
    )

    out = tmp_path / "crashed"
    with pytest.raises(RuntimeError, match="crash at step 6"):
        train(
            dataset_path=addition_jsonl,
            student=tiny_model_dir,
            output_dir=out,
            spec=spec,
            callbacks=[CrashAt(6)],
        )
    assert not (out / "final").exists()
    resumed = train(dataset_path=addition_jsonl, student=tiny_model_dir, output_dir=out, spec=spec)

    assert resumed.resumed_from
    assert Path(resumed.resumed_from).name == "checkpoint-4"
    assert resumed.global_step == 12
    rows = read_metrics(out / "metrics.jsonl")
    assert [row["step"] for row in rows] == [2, 4, 6, 8, 10, 12], "one row per step, steps 5-6 re-logged"
    expected = {row["step"]: row["loss"] for row in read_metrics(tmp_path / "straight" / "metrics.jsonl")}
    for row in rows:
        assert row["loss"] == pytest.approx(expected[row["step"]], rel=1e-4), (
            f"same batches at step {row['step']}"
        )
    assert straight.global_step == 12

    with pytest.raises(CheckpointError, match="already holds checkpoints"):
        train(dataset_path=addition_jsonl, student=tiny_model_dir, output_dir=out, spec=spec, resume=False)


def test_student_from_scratch_builds_once_and_trains(addition_jsonl: Path, tmp_path: Path) -> None:
    shapes = {"layers": 1, "hidden": 32, "heads": 2, "vocab": 300}
    out = tmp_path / "scratch"
    spec = TrainingSpec(**FAST, max_steps=4, save_steps=2)
    first = train(dataset_path=addition_jsonl, student=None, from_scratch=shapes, output_dir=out, spec=spec)
    init_weights = (out / "init" / "model.safetensors").read_bytes()
    model, tokenizer = _load(first.model_path)
    assert model.config.hidden_size == 32
    assert tokenizer.eos_token == "<|im_end|>"

    again = train(
        dataset_path=addition_jsonl,
        student=None,
        from_scratch=shapes,
        output_dir=out,
        spec=TrainingSpec(**FAST, max_steps=6, save_steps=2),
    )
    assert again.global_step == 6
    assert again.resumed_from is not None
    assert (out / "init" / "model.safetensors").read_bytes() == init_weights, "the init student is reused"
    with pytest.raises(StudentError, match="other shapes"):
        train(
            dataset_path=addition_jsonl,
            student=None,
            from_scratch={**shapes, "layers": 2},
            output_dir=out,
            spec=spec,
        )


def test_bad_inputs_fail_before_step_one(addition_jsonl: Path, tiny_model_dir: Path, tmp_path: Path) -> None:
    import shutil

    spec = TrainingSpec(**FAST, max_steps=2)
    with pytest.raises(StudentError, match="cannot load"):
        train(
            dataset_path=addition_jsonl, student=tmp_path / "no-model", output_dir=tmp_path / "a", spec=spec
        )
    with pytest.raises(StudentError, match="either a student"):
        train(dataset_path=addition_jsonl, student=None, output_dir=tmp_path / "b", spec=spec)
    with pytest.raises(StudentError, match="unknown tiny-model key"):
        train(
            dataset_path=addition_jsonl,
            student=None,
            from_scratch={"width": 3},
            output_dir=tmp_path / "c",
            spec=spec,
        )

    broken = tmp_path / "broken-template"
    shutil.copytree(tiny_model_dir, broken)
    (broken / "chat_template.jinja").write_text(
        "{%- for m in messages %}{%- if m['role'] != 'assistant' %}{{ m['content'] }}\n"
        "{%- endif %}{%- endfor %}"
    )
    with pytest.raises(MaskError, match="drops the answer"):
        train(dataset_path=addition_jsonl, student=broken, output_dir=tmp_path / "d", spec=spec)
    assert not list((tmp_path / "d").glob("checkpoint-*")), "refused before step 1"


class StopAt(TrainerCallback):  # type: ignore[misc]
    """Ask the Trainer to stop (what a cancel does)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if state.global_step == self.step:
            control.should_training_stop = True


def test_a_callback_can_stop_training_early(
    addition_jsonl: Path, tiny_model_dir: Path, tmp_path: Path
) -> None:
    result = train(
        dataset_path=addition_jsonl,
        student=tiny_model_dir,
        output_dir=tmp_path / "stopped",
        spec=TrainingSpec(**FAST, max_steps=50),
        callbacks=[StopAt(3)],
    )
    assert result.global_step == 3
    assert result.total_steps == 50
    assert (Path(result.model_path) / "model.safetensors").exists()
