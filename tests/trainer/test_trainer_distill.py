"""Soft-label distillation: the sparse KL, its pre-flight, and a real TRL run with the blended loss."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.trainer.trainer_factories import addition_rows
from trainer.distill_loss import SoftLabelError, aligned_positions, sparse_forward_kl, teacher_targets
from trainer.sft import train
from trainer.spec import TrainingSpec

FAST = {"learning_rate": 3e-3, "per_device_train_batch_size": 16, "max_length": 64, "logging_steps": 2}
K = 4


def soft_rows(model_dir: Path, count: int, *, shift_ids: int = 0) -> list[dict[str, Any]]:
    """Addition rows with a real teacher's top-k (the tiny model itself) at every completion token."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModelForCausalLM.from_pretrained(str(model_dir)).eval()
    rows = addition_rows(count, seed=3)
    for row in rows:
        prompt = tokenizer.apply_chat_template(row["prompt"], add_generation_prompt=True, tokenize=False)
        full = tokenizer.apply_chat_template(row["prompt"] + row["completion"], tokenize=False)
        prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        full_ids = tokenizer(full, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            logprobs = torch.log_softmax(model(torch.tensor([full_ids])).logits[0], dim=-1)
        completion = full_ids[len(prompt_ids) :]
        top = logprobs[len(prompt_ids) - 1 : len(full_ids) - 1].topk(K, dim=-1)
        vocab = len(tokenizer)
        row["completion_token_ids"] = [(t + shift_ids) % vocab for t in completion]
        row["teacher_topk_ids"] = [[(t + shift_ids) % vocab for t in ids] for ids in top.indices.tolist()]
        row["teacher_topk_logprobs"] = top.values.tolist()
    return rows


def write(rows: list[dict[str, Any]], path: Path) -> Path:
    from datasets import Dataset, DatasetDict

    DatasetDict({"train": Dataset.from_list(rows)}).save_to_disk(str(path))
    return path


def test_kl_is_zero_when_the_student_is_the_teacher_and_positive_otherwise() -> None:
    import torch

    teacher = torch.log_softmax(torch.tensor([[0.0, 2.0, -1.0]]), dim=-1)  # vocab of 3 = k
    ids = torch.tensor([[[0, 1, 2], [0, 1, 2]]])
    logprobs = torch.stack([teacher[0], teacher[0]])[None]
    mask = torch.tensor([[False, True]])
    same = torch.tensor([[[0.0, 2.0, -1.0], [9.0, 9.0, 9.0]]])
    assert float(sparse_forward_kl(same, ids, logprobs, mask)) == pytest.approx(0.0, abs=1e-6)
    other = torch.tensor([[[3.0, 0.0, 0.0], [9.0, 9.0, 9.0]]])
    assert float(sparse_forward_kl(other, ids, logprobs, mask)) > 0.1
    padded = logprobs.clone()
    padded[..., 2] = float("-inf")  # a slot the teacher padded has probability 0: no NaN
    assert torch.isfinite(sparse_forward_kl(other, ids, padded, mask))


def test_alignment_follows_the_trained_tokens_up_to_the_first_difference() -> None:
    labels = [-100, -100, 5, 6, 7, 8]
    assert aligned_positions(labels, [5, 6, 9, 8]) == [(2, 0), (3, 1)]
    assert aligned_positions(labels, None) == []
    example = {
        "labels": labels,
        "completion_token_ids": [5, 6],
        "teacher_topk_ids": [[5, -1], [6, 1]],
        "teacher_topk_logprobs": [[-0.1, float("-inf")], [-0.2, -2.0]],
    }
    targets = teacher_targets([example], 6)
    assert targets["teacher_mask"][0].tolist() == [False, False, True, True, False, False]
    assert targets["teacher_topk_ids"][0, 2].tolist() == [5, 0]


@pytest.mark.parametrize("alpha", [0.5, 1.0])
def test_soft_label_run_trains_with_the_blended_loss(
    tiny_model_dir: Path, tmp_path: Path, alpha: float
) -> None:
    from transformers import TrainerCallback

    logs: list[dict[str, Any]] = []

    class Capture(TrainerCallback):  # type: ignore[misc]
        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kwargs: Any) -> None:
            captured.append(dict(logs or {}))

    captured = logs
    data = write(soft_rows(tiny_model_dir, 48), tmp_path / "soft")
    result = train(
        dataset_path=data,
        student=tiny_model_dir,
        output_dir=tmp_path / "run",
        spec=TrainingSpec(**FAST, max_steps=6, save_steps=6, eval_split=0.0, soft_label_alpha=alpha),
        teacher_tokenizer=tiny_model_dir,
        callbacks=[Capture()],
    )
    # alpha 1: the loss is the KL alone; the backward pass fails unless the KL carries gradients.
    logged = [row for row in logs if "soft_label_kl" in row]
    assert logged
    assert all(row["soft_label_kl"] >= 0 for row in logged)
    assert result.tokens_per_second > 0
    assert result.global_step == 6
    assert result.train_loss is not None
    assert result.train_loss == result.train_loss  # not NaN
    assert "align with the teacher's" in result.soft_labels
    assert result.spec["soft_label_alpha"] == alpha


def test_soft_labels_of_another_tokenizer_are_refused_before_step_1(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    data = write(soft_rows(tiny_model_dir, 16, shift_ids=1), tmp_path / "shifted")
    with pytest.raises(SoftLabelError, match="tokenizers differ"):
        train(
            dataset_path=data,
            student=tiny_model_dir,
            output_dir=tmp_path / "run",
            spec=TrainingSpec(**FAST, max_steps=2, eval_split=0.0, soft_label_alpha=0.5),
        )
    assert not (tmp_path / "run" / "checkpoint-1").exists()


def test_a_hard_label_dataset_is_refused_for_soft_label_training(
    addition_jsonl: Path, tiny_model_dir: Path, tmp_path: Path
) -> None:
    with pytest.raises(SoftLabelError, match="soft_labels=true"):
        train(
            dataset_path=addition_jsonl,
            student=tiny_model_dir,
            output_dir=tmp_path / "run",
            spec=TrainingSpec(**FAST, max_steps=2, eval_split=0.0, soft_label_alpha=0.3),
        )
