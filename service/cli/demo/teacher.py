"""The demo's tiny teacher: a Llama trained from scratch on addition until it answers well enough.

Training runs in a child process (`spawn`), so torch and the model never load into the process that
serves the API, and its memory is returned when it ends. The child reports through a queue: steps
and loss as they go, the validation accuracy of every checkpoint, then the result. Every checkpoint
is scored on the validation questions (greedy answers, plain transformers) and training stops once
the target is reached. The folder is named by a digest of everything that shapes the teacher, so a
second demo finds it finished and skips training, and an interrupted one resumes from its last
checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import queue
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from service.cli.demo.plan import EvalItem, TeacherData

logger = logging.getLogger("hardlabel.demo.teacher")

RESULT_FILE = "teacher.json"
LOGGING_STEPS = 10
# The child reports its step at most this often.
REPORT_SECONDS = 0.2


@dataclass(frozen=True)
class TeacherJob:
    """What the training process needs (picklable: it crosses a process boundary)."""

    folder: str
    data_path: str
    validation: list[EvalItem]
    shapes: dict[str, Any]
    schedule: dict[str, Any]
    max_steps: int
    round_steps: int
    target: float
    scorer: str
    max_new_tokens: int
    log_path: str
    threads: int | None


def teacher_key(data: TeacherData, shapes: Mapping[str, Any], settings: Mapping[str, Any]) -> str:
    """Names a teacher by its data, validation items, model shapes and training settings."""
    digest = hashlib.sha256()
    for row in data.rows:
        digest.update(json.dumps(row, sort_keys=True).encode() + b"\n")
    for item in data.validation:
        digest.update(json.dumps(item.to_json(), sort_keys=True).encode() + b"\n")
    digest.update(json.dumps({"shapes": shapes, **settings}, sort_keys=True).encode())
    return digest.hexdigest()[:16]


def cached_teacher(folder: Path) -> dict[str, Any] | None:
    """The result of a finished teacher in `folder` (its model still there), or None."""
    try:
        result: dict[str, Any] = json.loads((folder / RESULT_FILE).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    return result if Path(str(result.get("model_path"))).is_dir() else None


def write_training_data(folder: Path, data: TeacherData) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "truth.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in data.rows), encoding="utf-8")
    return path


def run_teacher_training(job: TeacherJob, poll_seconds: float) -> Iterator[dict[str, Any]]:
    """Train in a child process; yields its events ({"kind": "step" | "validation" | "done", ...}).

    Raises:
        RuntimeError: the training failed or its process died (one line, naming the log).
    """
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    events = context.Queue()
    process = context.Process(target=teacher_process, args=(job, events), name="hardlabel-demo-teacher")
    process.start()
    try:
        while True:
            try:
                event: dict[str, Any] = events.get(timeout=poll_seconds)
            except queue.Empty:
                if not process.is_alive():
                    raise RuntimeError(
                        f"the teacher's training process exited with code {process.exitcode} "
                        f"(log: {job.log_path})"
                    ) from None
                yield {"kind": "waiting"}
                continue
            if event["kind"] == "error":
                raise RuntimeError(f"{event['message']} (log: {job.log_path})")
            yield event
            if event["kind"] == "done":
                process.join(30)
                return
    finally:
        if process.is_alive():
            process.terminate()
            process.join(10)


def teacher_process(job: TeacherJob, events: Any) -> None:
    """Child process entry point: train, report through `events`, print nothing (output goes to the log)."""
    with open(job.log_path, "ab", buffering=0) as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        if job.threads:
            import torch

            torch.set_num_threads(job.threads)
        result = train_teacher(job, events.put)
    except KeyboardInterrupt:
        return
    except BaseException as exc:
        logger.exception("teacher training failed")
        text = str(exc).strip()
        events.put(
            {"kind": "error", "message": f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"}
        )
        return
    events.put({"kind": "done", **result})


def train_teacher(job: TeacherJob, report: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    """Train until the validation accuracy reaches the target (scored at every checkpoint)."""
    from transformers import TrainerCallback

    from answers.match import answers_match
    from trainer.evaluate import generate_answers_hf
    from trainer.sft import train
    from trainer.spec import TrainingSpec
    from trainer.tiny_model import read_tiny_model_info

    prompts = [item.messages() for item in job.validation]
    references = [item.answer for item in job.validation]
    scores: list[tuple[int, float]] = []

    def accuracy_of(model_dir: Path) -> float:
        answers = generate_answers_hf(model_dir, prompts, max_new_tokens=job.max_new_tokens, batch_size=256)
        verdicts = answers_match(answers, references, job.scorer)
        return sum(verdicts) / len(verdicts) if verdicts else 0.0

    class StopWhenAccurate(TrainerCallback):  # type: ignore[misc]
        """Scores each checkpoint on the validation items; stops training once the target is reached."""

        def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
            accuracy = accuracy_of(Path(args.output_dir) / f"checkpoint-{state.global_step}")
            scores.append((state.global_step, accuracy))
            report({"kind": "validation", "step": state.global_step, "accuracy": accuracy})
            if accuracy >= job.target:
                control.should_training_stop = True
            return control

    last_report = 0.0

    def progress(update: dict[str, Any]) -> None:
        nonlocal last_report
        now = time.monotonic()
        if now - last_report >= REPORT_SECONDS:
            last_report = now
            report({"kind": "step", "step": update.get("step"), "loss": update.get("loss")})

    spec = TrainingSpec(
        **job.schedule,
        max_steps=job.max_steps,
        logging_steps=LOGGING_STEPS,
        save_steps=job.round_steps,
        save_total_limit=1,
    )
    started = time.perf_counter()
    result = train(
        dataset_path=Path(job.data_path),
        student=None,
        from_scratch=job.shapes,
        output_dir=Path(job.folder),
        spec=spec,
        callbacks=[StopWhenAccurate()],
        progress=progress,
    )
    if not scores or scores[-1][0] != result.global_step:
        scores.append((result.global_step, accuracy_of(Path(result.model_path))))
    outcome = {
        "model_path": result.model_path,
        "steps": result.global_step,
        "accuracy": scores[-1][1],
        "target": job.target,
        "validation_items": len(job.validation),
        "seconds": round(time.perf_counter() - started, 1),
        "parameters": read_tiny_model_info(Path(job.folder) / "init").get("parameters"),
        "shapes": job.shapes,
    }
    (Path(job.folder) / RESULT_FILE).write_text(json.dumps(outcome, indent=2), encoding="utf-8")
    return outcome
