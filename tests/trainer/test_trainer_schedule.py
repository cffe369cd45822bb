"""The default schedule rule (trainer/schedule.py) and how a spec's unset fields are resolved with it."""

from __future__ import annotations

from typing import Any

import pytest

from trainer import schedule
from trainer.config import build_sft_config
from trainer.schedule import default_eval_every, default_schedule
from trainer.spec import SCHEDULED_FIELDS, TrainingSpec


def steps_per_run(rows: int, values: dict[str, Any]) -> float:
    return float(rows / values["per_device_train_batch_size"] * values["num_train_epochs"])


S = schedule  # the constants another engineer tunes from bench/distill_tasks.py measurements


def scratch_epochs(rows: int, batch: int) -> float:
    return min(max(S.SCRATCH_TARGET_STEPS * batch / rows, S.SCRATCH_MIN_EPOCHS), S.SCRATCH_MAX_EPOCHS)


# (rows, kind) -> the batch and the epochs the rule must give.
TABLE: list[tuple[int, str, int, float]] = [
    # From scratch: a budget of optimizer steps turned into epochs, so small data gets many epochs.
    (5_000, "scratch", S.SCRATCH_BATCH, scratch_epochs(5_000, S.SCRATCH_BATCH)),  # the demo's task
    # The under-trained case of issue #11: the same steps as on 5,000 rows, so ~3x the epochs.
    (1_616, "scratch", S.SCRATCH_BATCH, scratch_epochs(1_616, S.SCRATCH_BATCH)),
    # Few rows: the batch halves until an epoch holds MIN_STEPS_PER_EPOCH steps.
    (200, "scratch", 16, scratch_epochs(200, 16)),
    (20, "scratch", S.MIN_BATCH, S.SCRATCH_MAX_EPOCHS),
    (500_000, "scratch", S.SCRATCH_BATCH, S.SCRATCH_MIN_EPOCHS),  # big data: at least a full pass
    # Pretrained: a few epochs, fewer as data grows; at least PRETRAINED_MIN_STEPS on tiny data.
    (1_000, "full", S.PRETRAINED_BATCH, S.PRETRAINED_EPOCHS[0][1]),
    (10_000, "full", S.PRETRAINED_BATCH, S.PRETRAINED_EPOCHS[1][1]),
    (100_000, "lora", S.PRETRAINED_BATCH, S.PRETRAINED_EPOCHS[-1][1]),
    (50, "lora", S.MIN_BATCH, min(S.PRETRAINED_MIN_STEPS * S.MIN_BATCH / 50, S.PRETRAINED_MAX_EPOCHS)),
]


@pytest.mark.parametrize(("rows", "kind", "batch", "epochs"), TABLE)
def test_default_schedule_fits_the_data(rows: int, kind: Any, batch: int, epochs: float) -> None:
    values = default_schedule(rows, kind)
    assert set(values) == set(SCHEDULED_FIELDS)
    assert values["per_device_train_batch_size"] == batch
    assert values["num_train_epochs"] == pytest.approx(epochs, abs=0.05)
    assert values["max_steps"] == -1, "epochs decide; the run stops early once it has learned"
    assert values["lr_scheduler_type"] == S.LR_SCHEDULER
    assert values["warmup_ratio"] == S.WARMUP_RATIO
    expected_lr = {"scratch": S.SCRATCH_LEARNING_RATE, **S.LEARNING_RATE}[kind]
    assert values["learning_rate"] == expected_lr


def test_small_data_gets_more_epochs_not_fewer_steps() -> None:
    demo, small = default_schedule(5_000, "scratch"), default_schedule(1_616, "scratch")
    assert small["num_train_epochs"] > 2.5 * demo["num_train_epochs"]
    assert steps_per_run(1_616, small) == pytest.approx(steps_per_run(5_000, demo), rel=0.01)
    for rows in (50, 1_000, 100_000):
        pretrained = default_schedule(rows, "full")
        assert pretrained["num_train_epochs"] <= default_schedule(rows, "scratch")["num_train_epochs"]


def test_default_schedule_refuses_unknown_kinds_and_negative_rows() -> None:
    with pytest.raises(ValueError, match="unknown student kind"):
        default_schedule(100, "qlora")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="train_rows"):
        default_schedule(-1, "full")


@pytest.mark.parametrize(("total", "every"), [(1, 10), (100, 10), (1_000, 50), (2_500, 125), (-1, 10)])
def test_default_eval_every(total: int, every: int) -> None:
    assert default_eval_every(total) == every


def test_unset_fields_are_resolved_and_set_ones_win() -> None:
    spec = TrainingSpec(learning_rate=1e-3, max_steps=40, warmup_steps=3)
    resolved, chosen = spec.with_schedule(1_616, "scratch")
    assert chosen == ["num_train_epochs", "per_device_train_batch_size", "lr_scheduler_type", "weight_decay"]
    assert resolved.learning_rate == 1e-3
    assert resolved.max_steps == 40
    assert (resolved.warmup_steps, resolved.warmup_ratio) == (3, None), "a warm-up in steps is kept"
    assert resolved.num_train_epochs == 99.0
    assert resolved.per_device_train_batch_size == 64
    # Resolving a resolved spec changes nothing (a resumed run trains on the stored schedule).
    assert resolved.with_schedule(10, "full") == (resolved, [])

    everything, chosen = TrainingSpec(method="lora").with_schedule(1_000, "lora")
    assert chosen == list(SCHEDULED_FIELDS)
    assert everything.learning_rate == 2e-4
    assert (everything.warmup_ratio, everything.warmup_steps) == (schedule.WARMUP_RATIO, 0)


def test_an_unresolved_spec_maps_onto_trl_defaults(tmp_path: Any) -> None:
    config = build_sft_config(TrainingSpec(), tmp_path)
    assert (config.num_train_epochs, config.max_steps, config.per_device_train_batch_size) == (1.0, -1, 8)
    assert config.lr_scheduler_type == "linear"
    resolved, _ = TrainingSpec().with_schedule(5_000, "scratch")
    config = build_sft_config(resolved, tmp_path)
    assert config.learning_rate == schedule.SCRATCH_LEARNING_RATE
    assert config.warmup_steps == schedule.WARMUP_RATIO, "transformers reads warmup_steps < 1 as a ratio"
    assert config.weight_decay == schedule.SCRATCH_WEIGHT_DECAY
