"""Default training schedule from the dataset size and the kind of student: one rule, pure, no imports.

A run that leaves hyper-parameters unset gets them from `default_schedule(train_rows, student_kind)`
once the worker knows how many training rows the version has. Values the user set always win.

The rule (constants below; `bench/distill_tasks.py` measures them on real tasks through the service):

- **scratch** (a random-init tiny model): it needs many passes over small data, and a fixed step
  count tuned on one task does not carry over (the demo's 1,500 steps at batch 64 fit 5,000 rows of
  2-digit addition; on a new task with 1,616 rows the same schedule left the student at 73.7%). So
  the budget is in optimizer steps, turned into epochs: `epochs = clamp(SCRATCH_TARGET_STEPS * batch / rows,
  SCRATCH_MIN_EPOCHS, SCRATCH_MAX_EPOCHS)`. The budget is generous on purpose: in-training accuracy
  with a target and a plateau patience stops the run once it has learned. Batch 64 (smaller when
  there are few rows, so an epoch still has `MIN_STEPS_PER_EPOCH` steps), learning rate 2e-3, cosine
  decay, 3% warm-up, weight decay 0.1 (the demo's calibrated settings).
- **full** (a pretrained model, every weight trained): a few epochs at TRL's learning rate 2e-5,
  fewer as data grows (`PRETRAINED_EPOCHS` by row count), with at least `PRETRAINED_MIN_STEPS`
  steps in all when the data is small (capped at `PRETRAINED_MAX_EPOCHS`); batch 16, cosine, 3% warm-up.
- **lora** (a pretrained model with adapters): as full, learning rate 2e-4.
"""

from __future__ import annotations

import math
from typing import Any, Literal

StudentKind = Literal["scratch", "full", "lora"]

# --- from scratch ---
SCRATCH_TARGET_STEPS = 2_500
SCRATCH_MIN_EPOCHS = 1
SCRATCH_MAX_EPOCHS = 300
SCRATCH_BATCH = 64
SCRATCH_LEARNING_RATE = 2e-3
SCRATCH_WEIGHT_DECAY = 0.1

# --- pretrained (full fine-tuning or LoRA) ---
PRETRAINED_BATCH = 16
# (largest row count, epochs): the first entry whose bound holds wins.
PRETRAINED_EPOCHS: tuple[tuple[float, float], ...] = ((2_000, 3.0), (20_000, 2.0), (math.inf, 1.0))
PRETRAINED_MIN_STEPS = 100
PRETRAINED_MAX_EPOCHS = 10.0
LEARNING_RATE = {"full": 2e-5, "lora": 2e-4}

# --- shared ---
WARMUP_RATIO = 0.03
LR_SCHEDULER = "cosine"
MIN_BATCH = 4
# An epoch should hold at least this many optimizer steps (else shrink the batch, down to MIN_BATCH).
MIN_STEPS_PER_EPOCH = 10


def default_schedule(train_rows: int, student_kind: StudentKind) -> dict[str, Any]:
    """Hyper-parameters (`TrainingSpec` field names) for `train_rows` training rows and a student kind.

    Returns learning_rate, num_train_epochs, max_steps (-1: epochs decide), per_device_train_batch_size,
    warmup_ratio, lr_scheduler_type and weight_decay. See the module docstring for the rule.

    Raises:
        ValueError: an unknown student kind or a negative row count.
    """
    if student_kind not in ("scratch", "full", "lora"):
        raise ValueError(f"unknown student kind {student_kind!r} (scratch, full or lora)")
    if train_rows < 0:
        raise ValueError(f"train_rows must be >= 0 (got {train_rows})")
    rows = max(train_rows, 1)
    if student_kind == "scratch":
        batch = _batch_for(rows, SCRATCH_BATCH)
        epochs = _clamp(SCRATCH_TARGET_STEPS * batch / rows, SCRATCH_MIN_EPOCHS, SCRATCH_MAX_EPOCHS)
        learning_rate, weight_decay = SCRATCH_LEARNING_RATE, SCRATCH_WEIGHT_DECAY
    else:
        batch = _batch_for(rows, PRETRAINED_BATCH)
        by_size = next(epochs for bound, epochs in PRETRAINED_EPOCHS if rows <= bound)
        floor = PRETRAINED_MIN_STEPS * batch / rows
        epochs = _clamp(max(by_size, floor), by_size, max(by_size, PRETRAINED_MAX_EPOCHS))
        learning_rate, weight_decay = LEARNING_RATE[student_kind], 0.0
    return {
        "learning_rate": learning_rate,
        "num_train_epochs": float(round(epochs, 1)),
        "max_steps": -1,
        "per_device_train_batch_size": batch,
        "warmup_ratio": WARMUP_RATIO,
        "lr_scheduler_type": LR_SCHEDULER,
        "weight_decay": weight_decay,
    }


def default_eval_every(total_steps: int, evaluations: int = 20, minimum: int = 10) -> int:
    """Steps between in-training scorings: about `evaluations` over the run, never under `minimum`."""
    return max(minimum, math.ceil(max(total_steps, 1) / evaluations))


def _batch_for(rows: int, preferred: int) -> int:
    """The preferred batch, halved until an epoch has MIN_STEPS_PER_EPOCH steps (not under MIN_BATCH)."""
    batch = preferred
    while batch > MIN_BATCH and rows / batch < MIN_STEPS_PER_EPOCH:
        batch //= 2
    return max(batch, 1)


def _clamp(value: float, low: float, high: float) -> float:
    return min(max(value, low), high)
