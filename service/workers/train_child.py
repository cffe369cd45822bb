"""The training run's child process: `python -m service.workers.train_child {train|evaluate} REQUEST.json`.

The train worker runs each phase of a run in a child so that cancelling (kill) and crashes (an OOM,
a segfault in a kernel) never leave the worker half-alive, and memory is returned between runs.
The child talks to its parent through files in the run's output folder only (no database):

- `train`: `trainer.sft.train` with resume; metrics.jsonl (the trainer's callback), progress.json
  (step, total steps, latest metrics; replaced atomically), resolved_spec.json (the schedule as
  chosen), train_result.json at the end. With in-training scoring, the scorer is the evaluation's
  verifier comparison, handed to the trainer as a callable.
- `evaluate`: `service.workers.evaluate.evaluate_models`; one line per scored model in scores.jsonl.
- on failure, child_error.json: {"permanent": bool, "error": "Kind: message"}.

Exit codes: 0 done, 1 crashed (the worker retries), 2 bad input (the run fails), 3 stopped on
SIGTERM (training saved a checkpoint first). The child dies with its parent (PR_SET_PDEATHSIG plus a
watchdog), and holds an exclusive lock on the output folder, so a worker killed with -9 never
leaves a training process behind that would write into the folder a resumed run now uses.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

EXIT_OK, EXIT_CRASHED, EXIT_BAD_INPUT, EXIT_STOPPED = 0, 1, 2, 3
REQUEST_FILE = "child_request.json"
PROGRESS_FILE = "progress.json"
RESULT_FILE = "train_result.json"
ERROR_FILE = "child_error.json"
SCORES_FILE = "scores.jsonl"
LOCK_FILE = ".run.lock"
LOG_FILE = "child.log"
# How long a new child waits for the lock of an old one that is still dying.
LOCK_WAIT_SECONDS = 120.0
PROGRESS_EVERY_SECONDS = 0.5
PR_SET_PDEATHSIG = 1

logger = logging.getLogger("hardlabel.train_child")


class Stop:
    """Set on SIGTERM. Before training starts the child exits at once; during training the
    trainer saves a checkpoint at the end of the current step and stops."""

    def __init__(self) -> None:
        self.requested = threading.Event()
        self.training = False

    def install(self) -> None:
        signal.signal(signal.SIGTERM, self._on_signal)

    def _on_signal(self, signum: int, frame: Any) -> None:
        self.requested.set()
        if not self.training:
            raise SystemExit(EXIT_STOPPED)
        logger.info("SIGTERM: saving a checkpoint after this step, then stopping")


def die_with_parent(parent_pid: int) -> None:
    """Exit when the worker that started this process goes away (even by SIGKILL)."""
    if sys.platform.startswith("linux"):
        import ctypes

        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent_pid:
        os._exit(EXIT_CRASHED)

    def watch() -> None:
        while True:
            time.sleep(1.0)
            if os.getppid() != parent_pid:
                os._exit(EXIT_CRASHED)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


@contextlib.contextmanager
def exclusive(folder: Path, wait_seconds: float = LOCK_WAIT_SECONDS) -> Iterator[None]:
    """Hold an exclusive lock on the run folder (released by the kernel when this process dies)."""
    import fcntl

    folder.mkdir(parents=True, exist_ok=True)
    with (folder / LOCK_FILE).open("a") as handle:
        deadline = time.monotonic() + wait_seconds
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"another process still holds {folder / LOCK_FILE} after {wait_seconds:.0f}s"
                    ) from None
                time.sleep(0.5)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def write_json_atomic(path: Path, data: Any) -> None:
    staging = path.with_name(f".{path.name}.{os.getpid()}")
    staging.write_text(json.dumps(data, default=str), encoding="utf-8")
    os.replace(staging, path)


class ProgressFile:
    """The trainer's per-step progress, written at most every PROGRESS_EVERY_SECONDS (and at the end)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._last = 0.0

    def __call__(self, state: dict[str, Any]) -> None:
        now = time.monotonic()
        last_step = state.get("total_steps") and state.get("step") == state.get("total_steps")
        if now - self._last >= PROGRESS_EVERY_SECONDS or last_step:
            self._last = now
            write_json_atomic(self.path, {**state, "time": time.time()})


def in_training_scoring(settings: dict[str, Any]) -> Any:
    """`trainer.accuracy.AccuracySettings` from the worker's request: items from their file, scored by
    the verifier comparison the evaluation uses (the trainer library knows no service, so it gets
    the scorer as a plain callable)."""
    from service.filters.specs import VerifierParams
    from service.workers.evaluate import EvalItem, read_items, score_answers
    from trainer.accuracy import AccuracySettings

    items = read_items(Path(settings["items_path"]))
    params = VerifierParams.model_validate(settings["verifier"])

    def score(answers: Sequence[str], references: Sequence[str]) -> list[bool]:
        return score_answers(answers, [EvalItem(question="", reference=ref) for ref in references], params)

    return AccuracySettings(
        prompts=[item.messages() for item in items],
        references=[item.reference for item in items],
        score=score,
        every_steps=settings.get("every_steps"),
        max_new_tokens=settings.get("max_new_tokens"),
        max_new_tokens_cap=int(settings.get("max_new_tokens_cap", 64)),
        batch_size=int(settings.get("batch_size", 64)),
        patience=settings.get("patience"),
        min_delta=float(settings.get("min_delta", 0.0)),
        target_score=settings.get("target_score"),
    )


def run_training(request: dict[str, Any], stop: Stop) -> int:
    from transformers import TrainerCallback

    from trainer.sft import train
    from trainer.spec import TrainingSpec

    out = Path(request["output_dir"])

    class StopOnRequest(TrainerCallback):  # type: ignore[misc]
        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            stop.training = True
            if stop.requested.is_set():
                control.should_training_stop = True

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if stop.requested.is_set():
                control.should_save = True
                control.should_training_stop = True

    spec = TrainingSpec.model_validate(request["spec"])
    accuracy = in_training_scoring(request["accuracy"]) if request.get("accuracy") else None
    try:
        result = train(
            dataset_path=Path(request["dataset_path"]),
            student=request.get("student"),
            from_scratch=request.get("from_scratch"),
            output_dir=out,
            spec=spec,
            resume=True,
            lineage=request.get("lineage"),
            callbacks=[StopOnRequest()],
            progress=ProgressFile(out / PROGRESS_FILE),
            accuracy=accuracy,
        )
    except ValueError as exc:
        # DatasetError, StudentError, MaskError, CheckpointError, a refused SFTConfig value: all are
        # raised before the first step; later a ValueError is a crash like any other.
        if stop.training:
            raise
        write_json_atomic(out / ERROR_FILE, {"permanent": True, "error": f"{type(exc).__name__}: {exc}"})
        logger.error("bad input: %s: %s", type(exc).__name__, exc)
        return EXIT_BAD_INPUT
    if stop.requested.is_set():
        logger.info("stopped at step %d (checkpoint saved)", result.global_step)
        return EXIT_STOPPED
    write_json_atomic(out / RESULT_FILE, result.to_dict())
    logger.info("trained %d steps: %s", result.global_step, result.model_path)
    return EXIT_OK


def run_evaluation(request: dict[str, Any], stop: Stop) -> int:
    from generator.engines.base import TeacherConfig
    from service.filters.specs import VerifierParams
    from service.workers.evaluate import append_score, evaluate_models, read_items, read_scores

    out = Path(request["output_dir"])
    scores_path = Path(request["scores_path"])
    items = read_items(Path(request["items_path"]))
    params = VerifierParams.model_validate(request["verifier"])
    models = [(entry["name"], TeacherConfig.model_validate(entry["config"])) for entry in request["models"]]
    try:
        evaluate_models(
            models,
            items,
            params,
            int(request["max_new_tokens"]),
            done=read_scores(scores_path),
            on_scored=lambda score: append_score(scores_path, score),
        )
    except (OSError, ValueError) as exc:
        # A model folder vLLM cannot load (missing, unsupported shape) fails the same way every time.
        write_json_atomic(out / ERROR_FILE, {"permanent": True, "error": f"{type(exc).__name__}: {exc}"})
        logger.error("evaluation failed: %s: %s", type(exc).__name__, exc)
        return EXIT_BAD_INPUT
    return EXIT_OK


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in ("train", "evaluate"):
        print("usage: python -m service.workers.train_child {train|evaluate} REQUEST.json", file=sys.stderr)
        return EXIT_BAD_INPUT
    phase, request_path = argv
    request = json.loads(Path(request_path).read_text(encoding="utf-8"))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    die_with_parent(int(request["parent_pid"]))
    stop = Stop()
    stop.install()
    out = Path(request["output_dir"])
    try:
        with exclusive(out):
            (out / ERROR_FILE).unlink(missing_ok=True)
            logger.info("%s phase of training run %s (pid %d)", phase, request.get("run_id"), os.getpid())
            if phase == "train":
                return run_training(request, stop)
            return run_evaluation(request, stop)
    except SystemExit:
        raise
    except BaseException as exc:
        logger.exception("%s phase crashed", phase)
        with contextlib.suppress(OSError):
            write_json_atomic(out / ERROR_FILE, {"permanent": False, "error": f"{type(exc).__name__}: {exc}"})
        return EXIT_CRASHED


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
