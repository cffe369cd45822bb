"""Training metrics as JSON lines: one line per log event, keyed by step.

The service tails this file and upserts rows by step. Two events can share a step (a train log
and an eval log); each line carries the merged values of its step so far, so "last line wins per
step" never loses a value. A resumed run re-logs the steps after its last checkpoint: readers keep
the last line of each step (`read_metrics`).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

FIELDS = (
    "step",
    "total_steps",
    "epoch",
    "loss",
    "learning_rate",
    "grad_norm",
    "eval_loss",
    "tokens_per_second",
    "mean_token_accuracy",
    "eval_accuracy",
)
# What the in-training accuracy callback records into the step's row (`record`): the score on the
# held-out items, how many there were, and the seconds generating and scoring them took.
RECORDED = ("eval_accuracy", "eval_items", "eval_seconds")
# The end-of-training summary is not a step of the series (TrainResult carries it).
SUMMARY_KEYS = {"train_runtime", "train_loss", "train_samples_per_second", "train_steps_per_second"}


class JsonlMetricsCallback(TrainerCallback):  # type: ignore[misc]
    """Append one JSON line per log event: step, loss, lr, grad norm, eval loss, tokens/s, epoch."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._row: dict[str, Any] = {}
        self.latest: dict[str, Any] = {}  # the last row written
        self._last_time = time.monotonic()
        self._last_tokens = 0.0

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # TRL counts tokens from zero in every process, also when resuming.
        self._last_time = time.monotonic()
        self._last_tokens = 0.0
        self._row = {}

    def on_log(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        logs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        if not logs or SUMMARY_KEYS & logs.keys():
            return
        if self._row.get("step") != state.global_step:
            self._row = {name: None for name in FIELDS}
        row = self._row
        row.update(step=state.global_step, total_steps=state.max_steps, time=time.time())
        row["epoch"] = _number(logs.get("epoch", state.epoch))
        for name in ("loss", "learning_rate", "grad_norm", "eval_loss", "mean_token_accuracy"):
            if name in logs:
                row[name] = _number(logs[name])
        for name in RECORDED:
            if name in logs:
                row[name] = _number(logs[name])
        if "num_tokens" in logs and "loss" in logs:
            now = time.monotonic()
            tokens = float(logs["num_tokens"])
            elapsed = now - self._last_time
            if elapsed > 0 and tokens >= self._last_tokens:
                row["tokens_per_second"] = round((tokens - self._last_tokens) / elapsed, 2)
            self._last_time, self._last_tokens = now, tokens
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(row) + "\n")
        self.latest = dict(row)

    def record(self, state: TrainerState, values: dict[str, Any]) -> None:
        """Merge values measured outside the Trainer's logs (in-training accuracy) into the step's row."""
        self.on_log(None, state, None, logs={"epoch": state.epoch, **values})  # type: ignore[arg-type]


class StepProgressCallback(TrainerCallback):  # type: ignore[misc]
    """Report progress after every optimizer step: step, total steps, epoch and the last logged metrics."""

    def __init__(self, metrics: JsonlMetricsCallback, report: Callable[[dict[str, Any]], None]) -> None:
        self._metrics = metrics
        self._report = report

    def _send(self, state: TrainerState) -> None:
        latest = {key: value for key, value in self._metrics.latest.items() if value is not None}
        self._report(
            {**latest, "step": state.global_step, "total_steps": state.max_steps, "epoch": state.epoch}
        )

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        self._send(state)

    def on_step_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        self._send(state)

    def on_log(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        self._send(state)


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """The metric series, one row per step (the last line of each step wins), ordered by step."""
    rows: dict[int, dict[str, Any]] = {}
    path = Path(path)
    if not path.exists():
        return []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut by a crash
        if isinstance(row, dict) and isinstance(row.get("step"), int):
            rows[row["step"]] = row
    return [rows[step] for step in sorted(rows)]


def _number(value: Any) -> float | None:
    """JSON has no NaN/inf: a diverged loss is written as null."""
    if value is None:
        return None
    number = float(value)
    return number if math.isfinite(number) else None
