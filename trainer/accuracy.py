"""Task accuracy while training: score the student every N steps, keep the best, stop when it has learned.

Loss says little about whether a student answers right; a fixed step count tuned on one data size
under- or over-trains another. `AccuracyCallback` generates greedy answers to held-out prompts with
the model being trained (batched `generate`, left padding, short `max_new_tokens`, eval mode, no
gradients; then back to train mode), scores them with the caller's scorer (the service passes the
verifier comparison its evaluation uses; this library knows no service), records the score into the
metric series, saves the trainable weights whenever the score improves, and stops training when
the score reaches a target or stops improving for `patience` evaluations. `train` then writes the
best weights as the final model.

The best weights and the history of scores live in `output_dir/best/`, so a resumed run keeps its
best model and does not count evaluations twice (those after the checkpoint it resumes from are
dropped and redone). `TimeBudgetCallback` stops a run after `max_minutes` of training over all its
attempts (the elapsed time is saved with each checkpoint).
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from trainer.evaluate import generate_answers
from trainer.metrics import JsonlMetricsCallback
from trainer.run_folder import BEST_DIR, BEST_STATE, BEST_WEIGHTS
from trainer.schedule import default_eval_every

log = logging.getLogger(__name__)

# (predictions, references) -> one verdict per item.
Scorer = Callable[[Sequence[str], Sequence[str]], Sequence[bool]]
BUDGET_FILE = "time_budget.json"
# Generated tokens beyond the longest answer seen: the end-of-turn token and a little slack.
MAX_NEW_TOKENS_MARGIN = 8
# Training completions measured for the default max_new_tokens.
LENGTH_SAMPLE_ROWS = 2_000

STOP_TARGET, STOP_PLATEAU, STOP_TIME = "target", "plateau", "time_budget"


@dataclass(frozen=True)
class AccuracySettings:
    """Held-out items and the rules for scoring them while training.

    Args:
        prompts: one list of chat messages per item (what the student is asked).
        references: the reference answer of each item, for `score`.
        score: (predictions, references) -> verdicts.
        every_steps: steps between scorings; None: about 20 over the run (`default_eval_every`).
        max_new_tokens: None: the longest reference or training answer in tokens plus a margin,
            capped at `max_new_tokens_cap`.
        patience: stop after this many scorings without improving by more than `min_delta`
            (None: never for a plateau). Not counted while the best score is still 0: a student that
            has not started to learn has not plateaued.
        target_score: stop as soon as the score reaches this accuracy (None: no target).
    """

    prompts: list[list[dict[str, Any]]]
    references: list[str]
    score: Scorer
    every_steps: int | None = None
    max_new_tokens: int | None = None
    max_new_tokens_cap: int = 64
    batch_size: int = 64
    patience: int | None = 8
    min_delta: float = 0.0
    target_score: float | None = None

    def __post_init__(self) -> None:
        if not self.prompts or len(self.prompts) != len(self.references):
            raise ValueError(
                f"in-training scoring needs items: {len(self.prompts)} prompts, "
                f"{len(self.references)} references"
            )


@dataclass
class Evaluation:
    step: int
    accuracy: float
    seconds: float


@dataclass
class AccuracyState:
    """What `output_dir/best/state.json` holds."""

    history: list[Evaluation] = field(default_factory=list)
    best_step: int | None = None
    best_score: float | None = None
    stopped: str | None = None

    def since_best(self) -> int:
        return sum(1 for entry in self.history if self.best_step is not None and entry.step > self.best_step)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def read(cls, path: Path) -> AccuracyState:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            return cls()
        return cls(
            history=[Evaluation(**entry) for entry in data.get("history", [])],
            best_step=data.get("best_step"),
            best_score=data.get("best_score"),
            stopped=data.get("stopped"),
        )


class AccuracyCallback(TrainerCallback):  # type: ignore[misc]
    """Scores the student on held-out items every N steps; saves the best weights; stops early."""

    def __init__(
        self,
        settings: AccuracySettings,
        *,
        tokenizer: Any,
        output_dir: Path,
        metrics: JsonlMetricsCallback | None = None,
        answer_lengths: Sequence[str] = (),
    ) -> None:
        self.settings = settings
        self.tokenizer = tokenizer
        self.best_dir = Path(output_dir) / BEST_DIR
        self.metrics = metrics
        self.state = AccuracyState()
        self.every = settings.every_steps or 1
        self.max_new_tokens = settings.max_new_tokens or self._max_new_tokens(answer_lengths)
        self.eval_seconds = 0.0  # this process's share (all attempts: sum the history)

    def _max_new_tokens(self, answers: Sequence[str]) -> int:
        texts = [*self.settings.references, *answers[:LENGTH_SAMPLE_ROWS]]
        longest = max(
            (len(self.tokenizer(text, add_special_tokens=False)["input_ids"]) for text in texts), default=0
        )
        return max(1, min(self.settings.max_new_tokens_cap, longest + MAX_NEW_TOKENS_MARGIN))

    # --- Trainer events ---

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        self.every = self.settings.every_steps or default_eval_every(state.max_steps)
        previous = AccuracyState.read(self.best_dir / BEST_STATE)
        if not (self.best_dir / BEST_WEIGHTS).exists():
            previous.best_step = previous.best_score = None
        # Steps after the checkpoint this attempt resumes from are trained (and scored) again.
        previous.history = [
            entry
            for entry in previous.history
            if entry.step <= state.global_step or entry.step == previous.best_step
        ]
        previous.stopped = None
        self.state = previous

    def on_step_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        step = state.global_step
        # At the last step the Trainer's own flow callback has already asked to stop: still score,
        # so the final weights compete. Any other stop (cancel, time budget) skips the scoring.
        last = step >= state.max_steps
        if (control.should_training_stop and not last) or not (step % self.every == 0 or last):
            return
        if any(entry.step == step for entry in self.state.history):
            return
        self._evaluate(state, control, kwargs["model"])

    # --- scoring ---

    def _evaluate(self, state: TrainerState, control: TrainerControl, model: Any) -> None:
        settings = self.settings
        started = time.monotonic()
        answers = generate_answers(
            model, self.tokenizer, settings.prompts, self.max_new_tokens, settings.batch_size
        )
        verdicts = list(settings.score(answers, settings.references))
        accuracy = sum(bool(v) for v in verdicts) / len(verdicts)
        seconds = time.monotonic() - started
        self.eval_seconds += seconds
        step = state.global_step
        best = self.state.best_score
        # Ties keep the earlier model, except while nothing is right yet: then the later one, which
        # has trained longer, is the better guess.
        improved = best is None or accuracy > best + settings.min_delta or (best == 0 and accuracy == 0)
        self.state.history.append(Evaluation(step, accuracy, round(seconds, 4)))
        # Every process of a multi-GPU run scores the same items on the same weights, so all of them
        # reach the same stop decision; only the main one writes files.
        writer = state.is_world_process_zero
        if improved:
            if writer:
                self._save_best(model)
            self.state.best_step, self.state.best_score = step, accuracy
        if settings.target_score is not None and accuracy >= settings.target_score:
            self.state.stopped = STOP_TARGET
        elif (
            settings.patience is not None
            and (self.state.best_score or 0.0) > 0
            and self.state.since_best() >= settings.patience
        ):
            self.state.stopped = STOP_PLATEAU
        if self.state.stopped:
            control.should_training_stop = True
            log.info("accuracy %.4f at step %d: stopping (%s)", accuracy, step, self.state.stopped)
        if writer:
            self._write_state()
        if self.metrics is not None:
            self.metrics.record(
                state, {"eval_accuracy": accuracy, "eval_items": len(verdicts), "eval_seconds": seconds}
            )

    def _save_best(self, model: Any) -> None:
        from safetensors.torch import save_file

        self.best_dir.mkdir(parents=True, exist_ok=True)
        # Only what training changes (every weight of a full fine-tune, the adapters of LoRA);
        # `named_parameters` lists tied weights once, which safetensors needs.
        weights = {
            name: parameter.detach().to("cpu").contiguous()
            for name, parameter in model.named_parameters()
            if parameter.requires_grad
        }
        staging = self.best_dir / f".{BEST_WEIGHTS}.{os.getpid()}"
        save_file(weights, str(staging))
        os.replace(staging, self.best_dir / BEST_WEIGHTS)

    def _write_state(self) -> None:
        self.best_dir.mkdir(parents=True, exist_ok=True)
        staging = self.best_dir / f".{BEST_STATE}.{os.getpid()}"
        staging.write_text(json.dumps(self.state.to_json()), encoding="utf-8")
        os.replace(staging, self.best_dir / BEST_STATE)

    def total_eval_seconds(self) -> float:
        """Seconds spent scoring over all attempts (the kept history)."""
        return sum(entry.seconds for entry in self.state.history)


def restore_best(model: Any, output_dir: Path) -> int | None:
    """Load the best weights `AccuracyCallback` saved into `model`; returns their step (None: none saved)."""
    from safetensors.torch import load_file

    best_dir = Path(output_dir) / BEST_DIR
    state = AccuracyState.read(best_dir / BEST_STATE)
    if state.best_step is None or not (best_dir / BEST_WEIGHTS).exists():
        return None
    weights = load_file(str(best_dir / BEST_WEIGHTS))
    result = model.load_state_dict(weights, strict=False)
    if result.unexpected_keys:
        raise RuntimeError(f"best weights do not fit the model: {', '.join(result.unexpected_keys[:5])}")
    return state.best_step


class TimeBudgetCallback(TrainerCallback):  # type: ignore[misc]
    """Stops training after `max_minutes` of training time, counted over all attempts of the run."""

    def __init__(self, max_minutes: float, output_dir: Path) -> None:
        self.max_seconds = max_minutes * 60.0
        self.path = Path(output_dir) / BUDGET_FILE
        self.before = 0.0  # seconds trained up to the checkpoint this attempt resumed from
        self.started = time.monotonic()
        self.stopped = False

    def elapsed(self) -> float:
        return self.before + time.monotonic() - self.started

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        saved = _read_json(self.path)
        # The time up to the resumed checkpoint; steps after it are redone (and timed) again.
        self.before = float(saved.get(str(state.global_step), 0.0)) if state.global_step else 0.0
        self.started = time.monotonic()

    def on_step_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        if self.elapsed() >= self.max_seconds and not control.should_training_stop:
            self.stopped = True
            control.should_training_stop = True
            log.info(
                "time budget of %.1f minutes spent at step %d: stopping",
                self.max_seconds / 60,
                state.global_step,
            )

    def on_save(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        saved = _read_json(self.path)
        saved[str(state.global_step)] = round(self.elapsed(), 3)
        staging = self.path.with_name(f".{self.path.name}.{os.getpid()}")
        staging.write_text(json.dumps(saved), encoding="utf-8")
        os.replace(staging, self.path)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def eval_share(eval_seconds: float, train_seconds: float) -> float | None:
    """Scoring time as a share of the training time it was part of."""
    if train_seconds <= 0 or not math.isfinite(train_seconds):
        return None
    return round(eval_seconds / train_seconds, 4)
