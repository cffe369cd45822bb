"""In-training accuracy with real TRL: scored by generation while training, best model kept, early stops.

The task is one a tiny random student learns within a few steps (every answer is "42"), so the
tests are bounded by steps, not by time.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from tests.trainer.trainer_factories import write_jsonl
from trainer.accuracy import AccuracySettings
from trainer.evaluate import exact_match, generate_answers_hf
from trainer.metrics import read_metrics
from trainer.run_folder import BEST_DIR, BEST_STATE
from trainer.schedule import default_schedule
from trainer.sft import RESOLVED_SPEC_FILE, StudentError, train
from trainer.spec import TrainingSpec

FAST = {"learning_rate": 3e-3, "per_device_train_batch_size": 16, "max_length": 64, "logging_steps": 2}


def constant_rows(count: int, seed: int = 3) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    rows = []
    for _ in range(count):
        a, b = rng.randint(0, 99), rng.randint(0, 99)
        rows.append(
            {
                "prompt": [{"role": "user", "content": f"What is {a}+{b}?"}],
                "completion": [{"role": "assistant", "content": "42"}],
            }
        )
    return rows


@pytest.fixture(scope="module")
def constant_jsonl(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_jsonl(tmp_path_factory.mktemp("constant") / "train.jsonl", constant_rows(64))


def exact(predictions: Sequence[str], references: Sequence[str]) -> list[bool]:
    return [exact_match(p, r) for p, r in zip(predictions, references, strict=True)]


def scoring(**rules: Any) -> AccuracySettings:
    items = constant_rows(12, seed=99)  # held out: other questions than the training rows
    return AccuracySettings(
        prompts=[row["prompt"] for row in items], references=["42"] * len(items), score=exact, **rules
    )


def weights(folder: Path) -> dict[str, Any]:
    from safetensors.torch import load_file

    return load_file(str(folder / "model.safetensors"))


def same_weights(a: dict[str, Any], b: dict[str, Any]) -> bool:
    import torch

    shared = a.keys() & b.keys()
    return bool(shared) and all(torch.equal(a[name], b[name]) for name in shared)


def test_plateau_stops_early_and_the_final_model_is_the_best_steps(
    constant_jsonl: Path, tiny_model_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    result = train(
        dataset_path=constant_jsonl,
        student=tiny_model_dir,
        output_dir=out,
        spec=TrainingSpec(**FAST, max_steps=200, save_steps=4, save_total_limit=None),
        accuracy=scoring(every_steps=4, patience=3),
    )

    assert result.stopped == "plateau"
    assert result.best_step is not None
    assert result.best_score == 1.0
    # Three scorings after the best one without improving on it, then the run ends.
    assert result.global_step == result.best_step + 3 * 4 < result.total_steps == 200
    assert result.evaluations == result.global_step // 4
    # The final model holds the best step's weights, not the last step's.
    final = weights(Path(result.model_path))
    assert same_weights(final, weights(out / f"checkpoint-{result.best_step}"))
    assert not same_weights(final, weights(out / f"checkpoint-{result.global_step}"))
    answers = generate_answers_hf(result.model_path, scoring().prompts, max_new_tokens=8)
    assert exact(answers, ["42"] * len(answers)) == [True] * len(answers)

    series = [row for row in read_metrics(out / "metrics.jsonl") if row.get("eval_accuracy") is not None]
    assert [row["step"] for row in series] == list(range(4, result.global_step + 1, 4))
    assert all(row["eval_items"] == 12 and row["eval_seconds"] > 0 for row in series)
    assert all(row["loss"] is not None for row in series if row["step"] % 2 == 0), "merged with the loss"
    # Its cost is measured as a share of the training time (scoring runs inside the training loop).
    assert 0 < result.eval_seconds < result.train_seconds
    assert result.eval_share == pytest.approx(result.eval_seconds / result.train_seconds, abs=1e-3)
    assert result.eval_max_new_tokens == 2 + 8, '"42" is two tokens (digits split) plus the margin'
    facts = json.loads((Path(result.model_path) / "hardlabel_training.json").read_text())
    assert facts["result"]["best_step"] == result.best_step


def test_a_target_stops_at_the_first_scoring_that_reaches_it(
    constant_jsonl: Path, tiny_model_dir: Path, tmp_path: Path
) -> None:
    result = train(
        dataset_path=constant_jsonl,
        student=tiny_model_dir,
        output_dir=tmp_path / "run",
        spec=TrainingSpec(**FAST, max_steps=200),
        accuracy=scoring(every_steps=2, target_score=1.0, patience=None),
    )
    assert result.stopped == "target"
    assert result.best_score == 1.0
    assert result.best_step == result.global_step < 200
    state = json.loads((tmp_path / "run" / BEST_DIR / BEST_STATE).read_text())
    accuracies = [entry["accuracy"] for entry in state["history"]]
    assert accuracies[-1] == 1.0
    assert all(value < 1.0 for value in accuracies[:-1]), "stopped at the first scoring at the target"


def test_time_budget_stops_the_run(constant_jsonl: Path, tiny_model_dir: Path, tmp_path: Path) -> None:
    result = train(
        dataset_path=constant_jsonl,
        student=tiny_model_dir,
        output_dir=tmp_path / "run",
        spec=TrainingSpec(**FAST, max_steps=500, max_minutes=0.001),
    )
    assert result.stopped == "time_budget"
    assert 1 <= result.global_step < 500


def test_unset_hyperparameters_follow_the_schedule_rule(
    constant_jsonl: Path, tiny_model_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    result = train(
        dataset_path=constant_jsonl,
        student=tiny_model_dir,
        output_dir=out,
        spec=TrainingSpec(max_length=64, logging_steps=4, num_train_epochs=1),
        accuracy=scoring(every_steps=1_000),
    )
    rule = default_schedule(64, "full")
    assert result.schedule_defaults == [
        "learning_rate",
        "max_steps",
        "per_device_train_batch_size",
        "warmup_ratio",
        "lr_scheduler_type",
        "weight_decay",
    ]
    assert result.spec["num_train_epochs"] == 1, "a value the user set wins"
    for name in result.schedule_defaults:
        assert result.spec[name] == rule[name]
    assert result.global_step == 64 // rule["per_device_train_batch_size"]
    # Scored at the last step even when that is not a multiple of every_steps.
    assert (result.evaluations, result.best_step) == (1, result.global_step)
    written = json.loads((out / RESOLVED_SPEC_FILE).read_text())
    assert written["spec"] == result.spec
    defaults = {"fields": result.schedule_defaults, "train_rows": 64, "student_kind": "full"}
    assert written["defaults"] == defaults


def test_from_scratch_student_reuses_a_tokenizer_folder(
    constant_jsonl: Path, tiny_model_dir: Path, tmp_path: Path
) -> None:
    from transformers import AutoConfig, AutoTokenizer

    teacher_tokenizer = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    result = train(
        dataset_path=constant_jsonl,
        student=None,
        from_scratch={"layers": 1, "hidden": 32, "heads": 1, "tokenizer": str(tiny_model_dir)},
        output_dir=tmp_path / "run",
        spec=TrainingSpec(**FAST, max_steps=2),
    )
    student_tokenizer = AutoTokenizer.from_pretrained(result.model_path)
    config = AutoConfig.from_pretrained(result.model_path)
    assert config.vocab_size == len(teacher_tokenizer)
    assert student_tokenizer.get_vocab() == teacher_tokenizer.get_vocab()
    assert student_tokenizer.chat_template == teacher_tokenizer.chat_template
    assert (config.eos_token_id, config.pad_token_id) == (
        teacher_tokenizer.eos_token_id,
        teacher_tokenizer.pad_token_id,
    )
    assert "weight_decay" in result.schedule_defaults
    assert result.spec["weight_decay"] == default_schedule(64, "scratch")["weight_decay"]

    not_a_tokenizer = tmp_path / "empty"
    not_a_tokenizer.mkdir()
    with pytest.raises(StudentError, match=r"from_scratch\.tokenizer: .*holds no tokenizer"):
        train(
            dataset_path=constant_jsonl,
            student=None,
            from_scratch={"layers": 1, "hidden": 32, "heads": 1, "tokenizer": str(not_a_tokenizer)},
            output_dir=tmp_path / "bad",
            spec=TrainingSpec(**FAST, max_steps=2),
        )


def test_a_resumed_run_keeps_its_best_model_and_scores_each_step_once(
    constant_jsonl: Path, tiny_model_dir: Path, tmp_path: Path
) -> None:
    from transformers import TrainerCallback

    class CrashAt(TrainerCallback):  # type: ignore[misc]
        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if state.global_step == 7:
                raise RuntimeError("crash at step 7")

    out = tmp_path / "run"
    common: dict[str, Any] = {
        "dataset_path": constant_jsonl,
        "student": tiny_model_dir,
        "output_dir": out,
        "spec": TrainingSpec(**{**FAST, "learning_rate": 5e-4}, max_steps=12, save_steps=4),
    }
    with pytest.raises(RuntimeError, match="crash at step 7"):
        train(**common, accuracy=scoring(every_steps=2, patience=None), callbacks=[CrashAt()])
    before = json.loads((out / BEST_DIR / BEST_STATE).read_text())
    assert [entry["step"] for entry in before["history"]] == [2, 4, 6]

    result = train(**common, accuracy=scoring(every_steps=2, patience=None))
    assert Path(result.resumed_from or "").name == "checkpoint-4"
    after = json.loads((out / BEST_DIR / BEST_STATE).read_text())
    steps = [entry["step"] for entry in after["history"]]
    # Step 6 was trained again after the resume from step 4, and scored again: once in the history.
    assert steps == [2, 4, 6, 8, 10, 12]
    best = max(after["history"], key=lambda entry: entry["accuracy"])
    assert result.best_score == best["accuracy"]
    assert result.evaluations == 6
