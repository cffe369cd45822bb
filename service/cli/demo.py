"""`hardlabel demo`: the whole hard-label distillation loop in one command, driven through the REST API.

0. Service: the database (the embedded Postgres under HARDLABEL_HOME when HARDLABEL_DATABASE_URL is
   unset), the API (uvicorn, in a thread of this process) and a worker for every task kind (a child
   process) — the pieces `hardlabel up` runs — plus an admin token for this demo.
1. Teacher: without --teacher, a tiny Llama learns 2-digit addition from ground truth in a child
   process, in rounds, until it answers enough validation questions right. It is cached under
   HOME/demo/teacher/<key of its data and settings>, so the next demo skips this step.
2. Generation: a job of the recipe (examples/arithmetic.yaml) over fresh questions, answered by the
   teacher through vLLM in the worker.
3. Curation: a filter run (verifier against the seed row's reference, exact dedup, length), a frozen
   dataset version of the samples that passed them all (with a test split), exported in TRL's
   prompt–completion format.
4. Student: a training run of a smaller student (from scratch by default), then the run's own
   evaluation of the teacher and the student before and after training, on the same held-out items.
5. A results table and the UI's address; the service keeps running until Ctrl-C (--no-serve exits).

The addition questions: the 10,000 pairs a+b (0 <= a, b < 100) are shuffled once. The teacher's
ground truth and validation questions come from one end, the held-out evaluation questions and the
fresh questions the teacher labels from the other, so no evaluated question is ever trained on.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import multiprocessing
import os
import queue
import random
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from service.cli import CliError
from service.cli.api_client import ApiClient
from service.cli.database import resolve_database
from service.cli.jobs import self_contained_spec, teacher_config
from service.cli.serve import WorkerSupervisor, bind_socket, build_server, public_url
from service.settings import Settings, get_settings

if TYPE_CHECKING:
    import uvicorn

    from generator.recipe import CompiledStage

logger = logging.getLogger("hardlabel.demo")

DEFAULT_RECIPE = Path(__file__).resolve().parents[2] / "examples" / "arithmetic.yaml"
DEMO_DIR = "demo"
STEPS = 5
FINISHED = ("succeeded", "failed", "cancelled")
POLL_SECONDS = 0.5
# A task still queued after this long most likely has no worker: say where its log is.
QUEUED_HINT_SECONDS = 60.0
API_START_TIMEOUT_SECONDS = 60.0
DEFAULT_PORT = 8000

# The built-in task: a+b for 0 <= a, b < 100, shuffled once with this seed.
ADDITION_SEED = 0
OPERAND_RANGE = 100
TEACHER_ROWS = 4000
VALIDATION_ITEMS = 200
DEFAULT_ITEMS = 4000
DEFAULT_EVAL_ITEMS = 200
MAX_ADDITION_QUESTIONS = OPERAND_RANGE * OPERAND_RANGE - TEACHER_ROWS - VALIDATION_ITEMS

# Settings measured by bench/distill_toy.py on 2 CPU cores (split digits, vocab 512, constant LR).
TEACHER_SHAPES: dict[str, Any] = {"layers": 4, "hidden": 128, "heads": 4, "vocab": 512}
# vLLM's CPU attention needs a head size of at least 32: hidden 64 in 2 heads.
STUDENT_SHAPES: dict[str, Any] = {"layers": 2, "hidden": 64, "heads": 2, "vocab": 512}
SCHEDULE: dict[str, Any] = {
    "learning_rate": 3e-3,
    "per_device_train_batch_size": 64,
    "max_length": 64,
    "warmup_steps": 50,
    "lr_scheduler_type": "constant_with_warmup",
    "seed": 0,
}
TEACHER_ROUND_STEPS = 250
DEFAULT_TEACHER_MAX_STEPS = 3000
DEFAULT_TEACHER_TARGET = 0.97
DEFAULT_STUDENT_STEPS = 1500
# A real student (--student) learns from a pretrained start: one epoch at TRL's usual settings.
REAL_STUDENT_HYPERPARAMETERS: dict[str, Any] = {"num_train_epochs": 1.0, "max_length": 1024}
LOGGING_STEPS = 10
TEST_FRACTION = 0.05
RATIO_GOAL = 0.9

# The tiny teacher and students run on vLLM's CPU backend as well as on a GPU with these (ENV.md).
TINY_ENGINE: dict[str, Any] = {
    "dtype": "float32",
    "enforce_eager": True,
    "kv_cache_memory_bytes": 256 << 20,
    "max_model_len": 512,
}
# A real model on a machine without an NVIDIA GPU: no torch.compile, a bounded KV cache.
CPU_ENGINE: dict[str, Any] = {"enforce_eager": True, "kv_cache_memory_bytes": 1 << 30, "max_model_len": 2048}

SPARKS = "▁▂▃▄▅▆▇█"


class DemoError(CliError):
    """A step of the demo failed: one line, exit code 1 (bad options stay CliError, exit code 2)."""

    exit_code = 1


# --- what the demo runs: questions, recipe, evaluation items ------------------------------------


@dataclass(frozen=True)
class AdditionQuestions:
    """Disjoint sets of (a, b) pairs (see the module docstring)."""

    held_out: list[tuple[int, int]]
    fresh: list[tuple[int, int]]
    truth: list[tuple[int, int]]
    validation: list[tuple[int, int]]


def addition_questions(items: int, eval_items: int) -> AdditionQuestions:
    """`eval_items` held-out and `items` fresh questions; the teacher's sets never depend on them."""
    if items + eval_items > MAX_ADDITION_QUESTIONS:
        raise CliError(
            f"--items + --eval-items must be at most {MAX_ADDITION_QUESTIONS:,} "
            f"(2-digit additions left after the teacher's {TEACHER_ROWS + VALIDATION_ITEMS:,}); "
            f"got {items:,} + {eval_items:,}"
        )
    pairs = [(a, b) for a in range(OPERAND_RANGE) for b in range(OPERAND_RANGE)]
    random.Random(ADDITION_SEED).shuffle(pairs)
    teacher_start = len(pairs) - TEACHER_ROWS - VALIDATION_ITEMS
    return AdditionQuestions(
        held_out=pairs[:eval_items],
        fresh=pairs[eval_items : eval_items + items],
        truth=pairs[teacher_start + VALIDATION_ITEMS :],
        validation=pairs[teacher_start : teacher_start + VALIDATION_ITEMS],
    )


def addition_row(a: int, b: int) -> dict[str, Any]:
    return {"a": a, "b": b, "reference": str(a + b)}


@dataclass(frozen=True)
class EvalItem:
    """A held-out question as the student sees it, with its reference answer."""

    question: str
    answer: str
    system: str | None = None

    def messages(self) -> list[dict[str, str]]:
        system = [{"role": "system", "content": self.system}] if self.system else []
        return [*system, {"role": "user", "content": self.question}]


@dataclass
class TeacherData:
    """Ground truth for a tiny addition teacher: prompt–completion rows and validation items."""

    rows: list[dict[str, Any]]
    validation: list[EvalItem]


@dataclass
class Plan:
    """Everything the loop needs that can be decided (and refused) before any service starts."""

    recipe_file: Path
    recipe_name: str
    job_recipe: dict[str, Any]  # the recipe document sent with the job, seeds inline
    limit: int | None  # the job's item limit when the recipe keeps its own seeds
    items: int | None  # items the job will generate, when known
    addition: bool  # the built-in task (its teacher can be trained here)
    verifier_mode: str | None  # None: the seed rows carry no `reference`, so no verifier
    scorer: str
    system: str | None
    max_new_tokens: int
    eval_items: list[EvalItem]  # empty: evaluate on the dataset version's test split
    teacher_data: TeacherData | None
    notes: list[str] = field(default_factory=list)


def verifier_mode(references: Sequence[Any]) -> str:
    """numeric when every reference is a number (e.g. "46"), else normalized text comparison."""

    def is_number(value: Any) -> bool:
        try:
            return math.isfinite(float(str(value).replace(",", "")))
        except ValueError:
            return False

    return "numeric" if references and all(is_number(ref) for ref in references) else "normalized"


def _render(stage: CompiledStage, row: Mapping[str, Any]) -> tuple[list[dict[str, str]], EvalItem]:
    """The stage's chat messages for a seed row and the (question, reference, system) the student sees."""
    messages, question = stage.render(row)
    system = next((m["content"] for m in messages if m["role"] == "system"), None)
    return messages, EvalItem(question=question, answer=str(row.get("reference", "")), system=system)


def build_plan(
    recipe_file: Path | None, teacher: str | None, items: int, eval_items: int, validation_items: int
) -> Plan:
    """Read and check the recipe and choose the questions (CliError with one line when impossible).

    The built-in addition task runs when there is no --recipe, or when there is no --teacher (the
    tiny teacher only knows addition: the recipe must then be templated over `a` and `b`).
    """
    from generator.recipe import compile_stages, load_recipe
    from generator.seeds import load_seed_rows, seed_columns
    from generator.templates import TemplateError

    path = recipe_file or DEFAULT_RECIPE
    if not path.is_file():
        raise CliError(f"recipe file not found: {path}")
    spec = self_contained_spec(path)  # validated; file seeds inlined as records
    recipe = load_recipe(spec)
    stage_index = next(i for i, stage in enumerate(recipe.stages) if stage.name == recipe.answer_stage)
    single_stage = stage_index == 0  # the answer's prompt depends on the seed row only
    addition = teacher is None or recipe_file is None
    max_tokens = recipe.stages[stage_index].sampling.max_tokens
    notes: list[str] = []

    if addition:
        if not single_stage:
            raise CliError(
                f"{path}: without --teacher the demo trains a teacher for 2-digit addition, so the "
                "recipe's answer stage must be its first stage, templated over a and b "
                "(like examples/arithmetic.yaml); give --teacher MODEL for other recipes"
            )
        questions = addition_questions(items, eval_items)
        stage = compile_stages(recipe, ["a", "b", "reference"])[stage_index]
        try:
            eval_set = [_render(stage, addition_row(a, b))[1] for a, b in questions.held_out]
            truth = [_render(stage, addition_row(a, b)) for a, b in questions.truth]
            validation = [
                _render(stage, addition_row(a, b))[1] for a, b in questions.validation[:validation_items]
            ]
        except TemplateError as exc:
            raise CliError(
                f"{path}: the addition questions do not fit the recipe's templates: {exc}"
            ) from exc
        teacher_data = None
        if teacher is None:
            rows = [
                {"prompt": messages, "completion": [{"role": "assistant", "content": item.answer}]}
                for messages, item in truth
            ]
            teacher_data = TeacherData(rows=rows, validation=validation)
        spec["seeds"] = {"records": [addition_row(a, b) for a, b in questions.fresh]}
        return Plan(
            recipe_file=path,
            recipe_name=recipe.name,
            job_recipe=spec,
            limit=None,
            items=len(questions.fresh),
            addition=True,
            verifier_mode="numeric",
            scorer="numeric",
            system=eval_set[0].system if eval_set else None,
            max_new_tokens=max_tokens,
            eval_items=eval_set,
            teacher_data=teacher_data,
            notes=notes,
        )

    # A recipe of the user's with their teacher: its own seed rows.
    base_dir = path.resolve().parent
    rows = load_seed_rows(recipe, base_dir)
    if not rows:
        raise CliError(f"{path}: the recipe's seeds give no rows")
    references = [row.get("reference") for row in rows]
    has_references = all(ref is not None for ref in references)
    mode = verifier_mode(references) if has_references else None
    if not has_references:
        notes.append(
            "the seed rows carry no `reference`: the verifier filter is skipped, and the evaluation "
            "scores agreement with the teacher's answers on the test split"
        )
    stage = compile_stages(recipe, seed_columns(recipe.seeds, base_dir))[stage_index]
    system = None
    eval_set = []
    limit: int | None = items
    known_items: int | None = None
    held = min(eval_items, len(rows) // 5)
    if single_stage and has_references and held >= 1:
        # Hold out seed rows the teacher never answers: the evaluation asks them with their reference.
        order = list(range(len(rows)))
        random.Random(ADDITION_SEED).shuffle(order)
        held_out = set(order[:held])
        try:
            eval_set = [_render(stage, rows[i])[1] for i in sorted(held_out)]
        except TemplateError as exc:
            raise CliError(f"{path}: {exc}") from exc
        generated = [row for i, row in enumerate(rows) if i not in held_out][:items]
        spec["seeds"] = {"records": generated}
        limit, known_items = None, len(generated)
        system = eval_set[0].system
    else:
        if has_references and not single_stage:
            notes.append(
                "the answer stage follows other stages, so no question can be held out before "
                "generation: the evaluation uses the dataset's test split"
            )
        with contextlib.suppress(TemplateError, StopIteration):
            system = _render(stage, rows[0])[1].system if single_stage else None
    return Plan(
        recipe_file=path,
        recipe_name=recipe.name,
        job_recipe=spec,
        limit=limit,
        items=known_items,
        addition=False,
        verifier_mode=mode,
        scorer=mode or "normalized",
        system=system,
        max_new_tokens=max_tokens,
        eval_items=eval_set,
        teacher_data=None,
        notes=notes,
    )


# --- step 1: the teacher, trained in a child process --------------------------------------------


@dataclass(frozen=True)
class TeacherJob:
    """What the teacher's training process needs (picklable: it crosses a process boundary)."""

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


TEACHER_RESULT = "teacher.json"


def teacher_key(data: TeacherData, shapes: Mapping[str, Any], settings: Mapping[str, Any]) -> str:
    """Names a teacher by everything that shapes it: its data, validation items, model and schedule."""
    digest = hashlib.sha256()
    for row in data.rows:
        digest.update(json.dumps(row, sort_keys=True).encode() + b"\n")
    for item in data.validation:
        digest.update(json.dumps([item.question, item.answer, item.system]).encode() + b"\n")
    digest.update(json.dumps({"shapes": shapes, **settings}, sort_keys=True).encode())
    return digest.hexdigest()[:16]


def cached_teacher(folder: Path) -> dict[str, Any] | None:
    """The result of a finished teacher in `folder`, or None."""
    try:
        result: dict[str, Any] = json.loads((folder / TEACHER_RESULT).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    return result if Path(str(result.get("model_path"))).is_dir() else None


def teacher_process(job: TeacherJob, events: Any) -> None:
    """Child process entry point: train, report through `events`, never print a traceback."""
    with open(job.log_path, "ab", buffering=0) as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        result = train_teacher(job, events.put)
    except KeyboardInterrupt:
        return
    except BaseException as exc:
        logger.exception("teacher training failed")
        events.put({"kind": "error", "message": f"{type(exc).__name__}: {_first_line(exc)}"})
        return
    events.put({"kind": "done", **result})


def train_teacher(job: TeacherJob, report: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    """Train until the validation accuracy reaches the target (checked at every checkpoint)."""
    from transformers import TrainerCallback

    from trainer.config import TrainingSpec
    from trainer.evaluate import generate_answers_hf, score_predictions
    from trainer.sft import train
    from trainer.tiny_model import read_tiny_model_info

    prompts = [item.messages() for item in job.validation]
    references = [item.answer for item in job.validation]
    scores: list[tuple[int, float]] = []

    def accuracy_of(model_dir: Path) -> float:
        answers = generate_answers_hf(model_dir, prompts, max_new_tokens=job.max_new_tokens, batch_size=256)
        return score_predictions(answers, references, job.scorer).accuracy

    class StopWhenAccurate(TrainerCallback):  # type: ignore[misc]
        """Scores every checkpoint on the validation items and stops training at the target."""

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
        if now - last_report >= 0.2:
            last_report = now
            report({"kind": "step", **{k: update.get(k) for k in ("step", "total_steps", "loss")}})

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
    (Path(job.folder) / TEACHER_RESULT).write_text(json.dumps(outcome, indent=2), encoding="utf-8")
    return outcome


# --- the service: database, API, worker --------------------------------------------------------


def nvidia_gpu() -> bool:
    """Whether an NVIDIA driver answers (the Makefile's test too); no torch import needed."""
    if shutil.which("nvidia-smi") is None:
        return False
    try:
        return subprocess.run(["nvidia-smi", "-L"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def bind_demo_socket(host: str, port: int | None) -> socket.socket:
    """The asked port; without one, 8000 when free, else any free port."""
    if port is not None:
        return bind_socket(host, port)
    try:
        return bind_socket(host, DEFAULT_PORT)
    except CliError:
        return bind_socket(host, 0)


class DemoService:
    """The database, the API in a thread of this process, a worker child process, and a token."""

    def __init__(self, settings: Settings, sock: socket.socket, demo_dir: Path, worker_env: dict[str, str]):
        self.settings = settings
        self.sock = sock
        self.url = public_url(settings, sock)
        self.worker_log = demo_dir / "worker.log"
        self.worker_env = worker_env
        self.server: uvicorn.Server | None = None
        self.thread: threading.Thread | None = None
        self.supervisor: WorkerSupervisor | None = None
        self.token = ""

    def start(self) -> None:
        assert self.settings.database_url
        self.token = create_admin_token(self.settings.database_url)
        # Access logs of the demo's own polling would drown the narration.
        self.server = build_server(self.settings.model_copy(update={"log_level": "WARNING"}))
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, name="hardlabel-api", daemon=True
        )
        self.thread.start()
        deadline = time.monotonic() + API_START_TIMEOUT_SECONDS
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise DemoError("the API did not start (see the log above)")
            time.sleep(0.05)
        self.supervisor = WorkerSupervisor(self.settings, env=self.worker_env, log_path=self.worker_log)
        self.supervisor.start()

    @property
    def worker_pid(self) -> int | None:
        process = self.supervisor.process if self.supervisor else None
        return process.pid if process else None

    def serve_forever(self) -> None:
        """Until Ctrl-C / SIGTERM (KeyboardInterrupt) or the API stops."""
        while self.thread is not None and self.thread.is_alive():
            self.thread.join(0.5)

    def stop(self) -> None:
        if self.supervisor is not None:
            self.supervisor.stop()
        if self.server is not None:
            self.server.should_exit = True
        if self.thread is not None:
            self.thread.join(10)
        self.sock.close()


def create_admin_token(database_url: str) -> str:
    from service.auth import issue_token
    from service.db.session import transaction

    with transaction(database_url) as session:
        _, secret = issue_token(session, role="admin", name="hardlabel demo")
    return secret


# --- narration ---------------------------------------------------------------------------------


def duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes}:{secs:02d}"


def rate(value: float | None, unit: str) -> str:
    return "–" if not value else f"{value:,.0f} {unit}" if value >= 100 else f"{value:,.1f} {unit}"


def sparkline(values: Sequence[float], width: int = 24) -> str:
    """The whole series squeezed into `width` characters (a falling loss reads left to right)."""
    if not values:
        return ""
    if len(values) > width:
        values = [values[round(i * (len(values) - 1) / (width - 1))] for i in range(width)]
    low, high = min(values), max(values)
    if high - low < 1e-12:
        return SPARKS[0] * len(values)
    return "".join(SPARKS[round((v - low) / (high - low) * (len(SPARKS) - 1))] for v in values)


def percent(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f}%"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _bars(console: Console) -> Progress:
    return Progress(
        SpinnerColumn(finished_text="[green]✓[/]"),
        TextColumn("{task.description}"),
        BarColumn(bar_width=28),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        console=console,
    )


@dataclass
class Options:
    no_serve: bool
    teacher: str | None
    student: str | None
    items: int
    eval_items: int
    student_steps: int | None
    teacher_max_steps: int
    teacher_target: float


@dataclass
class Outcome:
    """What the results table shows."""

    teacher_label: str = ""
    generated: int = 0
    kept: int = 0
    failed_by_filter: dict[str, int] = field(default_factory=dict)
    dataset: dict[str, Any] = field(default_factory=dict)
    export_dir: Path | None = None
    run: dict[str, Any] = field(default_factory=dict)
    train_steps: int = 0
    train_seconds: float = 0.0


class Demo:
    """The loop, one method per step, each narrated and timed."""

    def __init__(self, console: Console, options: Options, plan: Plan, home: Path) -> None:
        self.console = console
        self.options = options
        self.plan = plan
        self.home = home
        self.demo_dir = home / DEMO_DIR
        self.log_path = self.demo_dir / "demo.log"
        self.timings: list[tuple[str, float, str]] = []
        self.outcome = Outcome()
        self.service: DemoService | None = None
        self.client: ApiClient | None = None
        self.teacher: dict[str, Any] = {}
        self.active: tuple[str, int] | None = None  # what to cancel on Ctrl-C: (route, id)
        self.started = time.perf_counter()

    # --- narration helpers ---

    @contextlib.contextmanager
    def step(self, number: int, title: str, note: str = "") -> Iterator[list[str]]:
        """A numbered section; its time is recorded; failures become one-line DemoErrors."""
        self.console.print()
        self.console.rule(f"[bold cyan]{number}/{STEPS}  {title}", align="left")
        started = time.perf_counter()
        notes = [note]
        try:
            yield notes
        except (KeyboardInterrupt, DemoError):
            raise
        except CliError as exc:
            raise DemoError(f"{title.lower()}: {exc.format_message()}") from exc
        except Exception as exc:
            logger.exception("step %s failed", title)
            raise DemoError(
                f"{title.lower()}: {type(exc).__name__}: {_first_line(exc)} (details in {self.log_path})"
            ) from exc
        seconds = time.perf_counter() - started
        self.timings.append((title, seconds, notes[0]))
        self.console.print(f"[green]✓[/] {title.lower()} done in {duration(seconds)}")

    def say(self, text: str) -> None:
        self.console.print(f"  {text}", highlight=False)

    @property
    def api(self) -> ApiClient:
        assert self.client is not None
        return self.client

    def _waiting_hint(self, what: str, since: float, hinted: list[bool]) -> None:
        if not hinted[0] and time.monotonic() - since > QUEUED_HINT_SECONDS:
            hinted[0] = True
            self.say(
                f"[yellow]{what} is still queued after {QUEUED_HINT_SECONDS:.0f} s: is the worker "
                f"running? (log: {self.demo_dir / 'worker.log'})[/]"
            )

    # --- the steps ---

    def run(self, settings: Settings, sock: socket.socket, worker_env: dict[str, str]) -> None:
        self.console.print(
            "[bold]hardlabel demo[/]: a teacher answers questions, filters keep what is right, and a "
            "smaller student learns from the teacher's answers alone — all through the REST API."
        )
        self.start_service(settings, sock, worker_env)
        self.build_teacher()
        job = self.generate()
        dataset_id = self.curate(job)
        self.train_student(dataset_id)
        self.report()

    def start_service(self, settings: Settings, sock: socket.socket, worker_env: dict[str, str]) -> None:
        with self.step(0, "Service"):
            embedded = not settings.database_url
            resolved = resolve_database(settings)
            assert resolved.database_url
            self.service = DemoService(resolved, sock, self.demo_dir, worker_env)
            self.service.start()
            self.client = ApiClient(self.service.url, self.service.token, timeout=300.0)
            self.api.get("/v1/me")
            where = (
                f"embedded Postgres under {settings.home / 'postgres'}"
                if embedded
                else "HARDLABEL_DATABASE_URL"
            )
            self.say(f"database  {where} (migrated)")
            self.say(
                f"API       {self.service.url}  (docs {self.service.url}/docs, UI {self.service.url}/ui)"
            )
            self.say(
                f"worker    pid {self.service.worker_pid}, every task kind (log {self.service.worker_log})"
            )
            self.say("token     an admin token for this demo (shown at the end)")

    def build_teacher(self) -> None:
        options, plan = self.options, self.plan
        with self.step(1, "Teacher") as note:
            if options.teacher is not None:
                config = teacher_config(options.teacher, None, None, ())
                if not nvidia_gpu():
                    config = {**CPU_ENGINE, **config}
                self.teacher = config
                self.outcome.teacher_label = f"{config['model']} (given with --teacher)"
                self.say(f"using {config['model']} (given with --teacher): no teacher to train")
                note[0] = "given"
                return
            data = plan.teacher_data
            assert data is not None
            settings = {
                "schedule": SCHEDULE,
                "max_steps": options.teacher_max_steps,
                "round_steps": TEACHER_ROUND_STEPS,
                "target": options.teacher_target,
                "scorer": plan.scorer,
            }
            folder = self.demo_dir / "teacher" / teacher_key(data, TEACHER_SHAPES, settings)
            result = cached_teacher(folder)
            shape = f"{TEACHER_SHAPES['layers']}×{TEACHER_SHAPES['hidden']} Llama"
            if result is not None:
                self.say(
                    f"cached teacher {result['model_path']}: {percent(result['accuracy'])} of "
                    f"{result['validation_items']} validation questions right after {result['steps']:,} "
                    f"steps — skipping training"
                )
                note[0] = (
                    f"cached (trained {result['steps']:,} steps in {duration(result['seconds'])} before)"
                )
            else:
                self.say(
                    f"training a {shape} from scratch on {len(data.rows):,} ground-truth additions until "
                    f"{percent(options.teacher_target)} of {len(data.validation)} validation questions are "
                    f"right (checked every {TEACHER_ROUND_STEPS} steps, at most "
                    f"{options.teacher_max_steps:,})"
                )
                result = self._train_teacher(folder, data)
                note[0] = f"{result['steps']:,} steps"
                if result["accuracy"] < options.teacher_target:
                    self.say(
                        f"[yellow]the teacher reached only {percent(result['accuracy'])} in "
                        f"{result['steps']:,} steps; the verifier filter keeps its right answers only[/]"
                    )
            params = f", {result['parameters']:,} parameters" if result.get("parameters") else ""
            self.outcome.teacher_label = f"{shape} from scratch{params}"
            self.teacher = {"model": result["model_path"], "engine": "vllm", **TINY_ENGINE}

    def _train_teacher(self, folder: Path, data: TeacherData) -> dict[str, Any]:
        options, plan = self.options, self.plan
        folder.mkdir(parents=True, exist_ok=True)
        data_path = folder / "truth.jsonl"
        data_path.write_text("".join(json.dumps(row) + "\n" for row in data.rows), encoding="utf-8")
        job = TeacherJob(
            folder=str(folder),
            data_path=str(data_path),
            validation=data.validation,
            shapes=TEACHER_SHAPES,
            schedule=SCHEDULE,
            max_steps=options.teacher_max_steps,
            round_steps=TEACHER_ROUND_STEPS,
            target=options.teacher_target,
            scorer=plan.scorer,
            max_new_tokens=plan.max_new_tokens,
            log_path=str(self.demo_dir / "teacher.log"),
        )
        context = multiprocessing.get_context("spawn")
        events = context.Queue()
        process = context.Process(target=teacher_process, args=(job, events), name="hardlabel-demo-teacher")
        process.start()
        validation = "–"
        loss: float | None = None
        try:
            with _bars(self.console) as bars:
                bar = bars.add_task("teacher", total=options.teacher_max_steps, info="starting…")
                while True:
                    try:
                        event = events.get(timeout=POLL_SECONDS)
                    except queue.Empty:
                        if not process.is_alive():
                            raise DemoError(
                                f"the teacher's training process exited with code {process.exitcode} "
                                f"(log: {job.log_path})"
                            ) from None
                        continue
                    kind = event.get("kind")
                    if kind == "step":
                        loss = event.get("loss") if event.get("loss") is not None else loss
                        bars.update(bar, completed=event.get("step") or 0)
                    elif kind == "validation":
                        validation = f"{percent(event['accuracy'])} @ {event['step']:,}"
                        bars.console.print(
                            f"  step {event['step']:>5,}: {percent(event['accuracy'])} of "
                            f"{len(data.validation)} validation questions right",
                            highlight=False,
                        )
                    elif kind == "error":
                        raise DemoError(f"teacher training failed: {event['message']} (log: {job.log_path})")
                    elif kind == "done":
                        bars.update(bar, completed=event["steps"], total=event["steps"])
                        result: dict[str, Any] = event
                        break
                    shown_loss = f"loss {loss:.3f}" if isinstance(loss, int | float) else "loss –"
                    bars.update(bar, info=f"{shown_loss} · validation {validation}")
            process.join(30)
        finally:
            if process.is_alive():
                process.terminate()
                process.join(10)
        self.say(
            f"teacher ready: {result['model_path']} — {percent(result['accuracy'])} of "
            f"{result['validation_items']} validation questions right after {result['steps']:,} steps"
        )
        return result

    def generate(self) -> dict[str, Any]:
        plan = self.plan
        with self.step(2, "Generation") as note:
            body: dict[str, Any] = {
                "recipe": plan.job_recipe,
                "teacher": self.teacher,
                "shard_size": 1000,
                "chunk_size": 250,
            }
            if plan.limit is not None:
                body["limit"] = plan.limit
            job = self.api.post("/v1/jobs", body)
            self.active = ("jobs", job["id"])
            fresh = (
                "fresh questions: none is in the teacher's ground truth or the held-out evaluation set"
                if plan.addition
                else "the recipe's seed rows"
                + (f" (minus {len(plan.eval_items)} held out for the evaluation)" if plan.eval_items else "")
            )
            self.say(
                f"job {job['id']}: recipe {job['recipe']['name']} v{job['recipe']['version']} "
                f"({plan.recipe_file.name}) over {job['progress']['items_total']:,} {fresh}"
            )
            self.say(f"the teacher answers through vLLM in the worker ({self.teacher['model']})")
            job = self._follow_job(job)
            self.active = None
            p = job["progress"]
            if job["status"] != "succeeded":
                raise DemoError(
                    f"job {job['id']} {job['status']}: {job.get('last_error') or job.get('error')}"
                )
            self.outcome.generated = p["samples_written"]
            note[0] = f"{p['samples_written']:,} samples, {rate(p['items_per_second'], 'items/s')}"
            self.say(
                f"{p['samples_written']:,} samples, {p['tokens_out']:,} tokens out "
                f"({rate(p['items_per_second'], 'items/s')}, {rate(p['tokens_out_per_second'], 'tok/s')})"
            )
            return job

    def _follow_job(self, job: dict[str, Any]) -> dict[str, Any]:
        submitted, hinted = time.monotonic(), [False]
        with _bars(self.console) as bars:
            bar = bars.add_task(f"job {job['id']}", total=job["progress"]["items_total"] or None, info="")
            while True:
                p = job["progress"]
                eta = "–" if p["eta_seconds"] is None else duration(p["eta_seconds"])
                info = (
                    f"{job['status']} · {p['samples_written']:,} samples · "
                    f"{rate(p['items_per_second'], 'items/s')} · "
                    f"{rate(p['tokens_out_per_second'], 'tok/s')} · ETA {eta}"
                )
                bars.update(bar, completed=p["items_done"], total=p["items_total"] or None, info=info)
                if job["status"] in FINISHED:
                    return job
                if job["status"] == "queued":
                    self._waiting_hint(f"job {job['id']}", submitted, hinted)
                time.sleep(POLL_SECONDS)
                job = self.api.get(f"/v1/jobs/{job['id']}")

    def curate(self, job: dict[str, Any]) -> int:
        plan = self.plan
        with self.step(3, "Curation") as note:
            filters: list[dict[str, Any]] = []
            if plan.verifier_mode is not None:
                filters.append(
                    {
                        "type": "verifier",
                        "params": {"reference_field": "reference", "mode": plan.verifier_mode},
                    }
                )
            else:
                self.say(
                    "[yellow]no verifier: the seed rows carry no `reference` to check answers against[/]"
                )
            filters.append({"type": "exact_dedup", "params": {"field": "question_and_answer"}})
            filters.append(
                {
                    "type": "length",
                    "params": {"field": "answer", "min": 1, "max": max(64, 8 * plan.max_new_tokens)},
                }
            )
            run = self.api.post(
                "/v1/filter-runs", {"selection": {"job_ids": [job["id"]]}, "filters": filters}
            )
            self.active = ("filter-runs", run["id"])
            described = {
                "verifier": f"verifier ({plan.verifier_mode} match with the seed row's reference)",
                "exact_dedup": "exact dedup (question + answer, normalised)",
                "length": "length (answer of 1 to {max} characters)".format(max=filters[-1]["params"]["max"]),
            }
            self.say(
                f"filter run {run['id']} over {run['selection_size']:,} samples: "
                + ", ".join(described[f["type"]] for f in filters)
            )
            run = self._follow_filter_run(run)
            self.active = None
            if run["status"] != "succeeded":
                raise DemoError(f"filter run {run['id']} {run['status']}: {run.get('error')}")
            table = Table("filter", "passed", "failed", box=None, padding=(0, 2))
            for name, counts in run["counts"].items():
                table.add_row(name, f"{counts['passed']:,}", f"{counts['failed']:,}")
                self.outcome.failed_by_filter[name] = counts["failed"]
            self.console.print(table)

            names = [f["type"] for f in filters]
            version = self.api.post(
                "/v1/datasets",
                {
                    "name": dataset_name(plan.recipe_name),
                    "query": {
                        "job_ids": [job["id"]],
                        "require_passed": names,
                        "review_status": "accepted_or_unreviewed_passed_all",
                    },
                    "split": {"test_fraction": TEST_FRACTION, "seed": 0},
                    **({"system": plan.system} if plan.system else {}),
                },
            )
            counts = version["row_counts"]
            self.outcome.dataset = version
            self.outcome.kept = counts.get("total", 0)
            if not counts.get("train"):
                raise DemoError(
                    f"no sample passed every filter ({', '.join(names)}): nothing to train a student on"
                )
            self.say(
                f"dataset {version['name']} v{version['version']} (id {version['id']}): "
                f"{counts['total']:,} samples that passed every filter — train {counts['train']:,}, "
                f"test {counts['test']:,}; digest {version['digest'][:12]}…"
            )
            export_dir = self._export(version)
            self.outcome.export_dir = export_dir
            note[0] = f"{self.outcome.kept:,} of {self.outcome.generated:,} samples kept"
            return int(version["id"])

    def _follow_filter_run(self, run: dict[str, Any]) -> dict[str, Any]:
        submitted, hinted = time.monotonic(), [False]
        with _bars(self.console) as bars:
            bar = bars.add_task(
                f"filter run {run['id']}", total=run["progress"]["items_total"] or None, info=""
            )
            while True:
                p = run["progress"]
                info = f"{run['status']} · {rate(p['items_per_second'], 'samples/s')}"
                bars.update(bar, completed=p["items_done"], total=p["items_total"] or None, info=info)
                if run["status"] in FINISHED:
                    return run
                if run["status"] == "queued":
                    self._waiting_hint(f"filter run {run['id']}", submitted, hinted)
                time.sleep(POLL_SECONDS)
                run = self.api.get(f"/v1/filter-runs/{run['id']}")

    def _export(self, version: dict[str, Any]) -> Path:
        """Download every split as TRL prompt–completion JSONL, with the dataset card, through the API."""
        folder = self.demo_dir / "exports" / f"{version['name']}-v{version['version']}"
        folder.mkdir(parents=True, exist_ok=True)
        written = []
        for split in ("train", "test"):
            if not version["row_counts"].get(split):
                continue
            response = self.api.request(
                "GET",
                f"/v1/datasets/{version['id']}/export",
                params={"format": "prompt_completion", "container": "jsonl", "split": split},
            )
            (folder / f"{split}.jsonl").write_bytes(response.content)
            written.append(f"{split}.jsonl")
        card = self.api.request(
            "GET", f"/v1/datasets/{version['id']}/card", params={"format": "prompt_completion"}
        )
        (folder / "README.md").write_text(card.text, encoding="utf-8")
        self.say(f"exported (TRL prompt–completion JSONL: {', '.join(written)}, README.md) to {folder}")
        self.say(f"load it with datasets.load_dataset({str(folder)!r})")
        return folder

    def train_student(self, dataset_id: int) -> None:
        options, plan = self.options, self.plan
        with self.step(4, "Student") as note:
            if options.student is not None:
                local = Path(options.student).expanduser()
                student: dict[str, Any] = {
                    "model": str(local.resolve()) if local.exists() else options.student
                }
                hyper = dict(REAL_STUDENT_HYPERPARAMETERS)
                if options.student_steps is not None:
                    hyper["max_steps"] = options.student_steps
                described = f"{student['model']} (given with --student)"
            else:
                student = {"from_scratch": STUDENT_SHAPES}
                hyper = {
                    **SCHEDULE,
                    "max_steps": options.student_steps or DEFAULT_STUDENT_STEPS,
                    "save_steps": 500,
                }
                described = f"a {STUDENT_SHAPES['layers']}×{STUDENT_SHAPES['hidden']} Llama from scratch"
            hyper["logging_steps"] = LOGGING_STEPS
            evaluation: dict[str, Any] = {
                "scorer": plan.scorer,
                "max_new_tokens": plan.max_new_tokens,
                "max_items": len(plan.eval_items) or options.eval_items,
            }
            if plan.eval_items:
                path = self.demo_dir / f"held-out-{dataset_name(plan.recipe_name)}.jsonl"
                path.write_text(
                    "".join(
                        json.dumps({"question": i.question, "answer": i.answer, "system": i.system}) + "\n"
                        for i in plan.eval_items
                    ),
                    encoding="utf-8",
                )
                evaluation["eval_set"] = {"path": str(path), "system_field": "system"}
                where = f"{len(plan.eval_items)} held-out questions no model trained on"
            else:
                evaluation["split"] = "test"
                if plan.verifier_mode is not None:
                    evaluation["reference_field"] = "reference"
                    where = "the dataset's test split, against the seed rows' references"
                else:
                    where = "the dataset's test split, against the teacher's answers (agreement)"
            run = self.api.post(
                "/v1/training-runs",
                {
                    "dataset_id": dataset_id,
                    "student": student,
                    "hyperparameters": hyper,
                    "evaluation": evaluation,
                },
            )
            self.active = ("training-runs", run["id"])
            self.say(
                f"training run {run['id']}: {described} on dataset {dataset_id}, TRL SFT on the answers only"
            )
            self.say(f"then teacher vs student (before and after) on {where}")
            run = self._follow_training(run)
            self.active = None
            if run["status"] != "succeeded":
                raise DemoError(
                    f"training run {run['id']} {run['status']}: {run.get('last_error') or run.get('error')}"
                )
            self.outcome.run = run
            note[0] = f"{self.outcome.train_steps:,} steps in {duration(self.outcome.train_seconds)}" + (
                f" ({self.outcome.train_seconds / self.outcome.train_steps:.2f} s/step)"
                if self.outcome.train_steps
                else ""
            )

    def _follow_training(self, run: dict[str, Any]) -> dict[str, Any]:
        losses: list[float] = []
        last_step = 0
        next_print = 0.0
        submitted, hinted = time.monotonic(), [False]
        training_started: float | None = None
        evaluation_started: float | None = None
        with _bars(self.console) as bars:
            train_bar = bars.add_task(f"run {run['id']} training", total=None, info="queued")
            eval_bar = None
            while True:
                p = run["progress"]
                page = self.api.get(f"/v1/training-runs/{run['id']}/metrics", after_step=last_step, limit=500)
                for metric in page["items"]:
                    last_step = max(last_step, metric["step"])
                    if metric["loss"] is not None:
                        losses.append(metric["loss"])
                        total = p["total_steps"] or 0
                        if total and metric["step"] >= next_print:
                            bars.console.print(
                                f"  step {metric['step']:>5,}/{total:,}  loss {metric['loss']:.4f}",
                                highlight=False,
                            )
                            next_print = metric["step"] + total / 10
                phase = p["phase"] or run["status"]
                if phase == "training" and training_started is None:
                    training_started = time.monotonic()
                if phase == "evaluating" and evaluation_started is None:
                    evaluation_started = time.monotonic()
                loss = f"loss {losses[-1]:.4f} {sparkline(losses)}" if losses else "loss –"
                eta = "" if p["eta_seconds"] is None else f" · ETA {duration(p['eta_seconds'])}"
                speed = rate(p["steps_per_second"], "steps/s")
                bars.update(
                    train_bar,
                    completed=p["step"],
                    total=p["total_steps"] or None,
                    info=f"{loss} · {speed}{eta}" if phase != "queued" else "queued",
                )
                if evaluation_started is not None or run["status"] in FINISHED:
                    results = run.get("results") or {}
                    if eval_bar is None and evaluation_started is not None:
                        eval_bar = bars.add_task("evaluation", total=3, info="loading the teacher…")
                    if eval_bar is not None:
                        scored = [
                            f"{name.replace('_', ' ')} {percent(results[name]['accuracy'])}"
                            for name in ("teacher", "student_before", "student_after")
                            if results.get(name)
                        ]
                        bars.update(eval_bar, completed=len(scored), info=" · ".join(scored) or "loading…")
                if run["status"] in FINISHED:
                    break
                if run["status"] == "queued":
                    self._waiting_hint(f"training run {run['id']}", submitted, hinted)
                time.sleep(POLL_SECONDS)
                run = self.api.get(f"/v1/training-runs/{run['id']}")
        now = time.monotonic()
        self.outcome.train_steps = run["progress"]["step"]
        if training_started is not None:
            self.outcome.train_seconds = (evaluation_started or now) - training_started
        if evaluation_started is not None:
            self.timings.append(("Evaluation", now - evaluation_started, "inside step 4"))
        return run

    def report(self) -> None:
        outcome, plan = self.outcome, self.plan
        with self.step(5, "Results"):
            results = outcome.run.get("results") or {}

            def score(name: str) -> str:
                entry = results.get(name)
                if not entry:
                    return "–"
                return f"{percent(entry['accuracy'])}  ({entry['correct']}/{entry['items']})"

            ratio = results.get("ratio")
            goal = "" if ratio is None else (" [green]✓[/]" if ratio >= RATIO_GOAL else " [red]✗[/]")
            table = Table(
                title="hard-label distillation, end to end", show_header=False, title_justify="left"
            )
            table.add_column(style="bold")
            table.add_column()
            table.add_row("teacher", f"{score('teacher')}   {outcome.teacher_label}")
            table.add_row("student before", score("student_before"))
            table.add_row("student after", score("student_after"))
            shown_ratio = "–" if ratio is None else f"{ratio:.3f}"
            table.add_row("student / teacher", f"{shown_ratio}{goal}   (goal ≥ {RATIO_GOAL})")
            table.add_row(
                "evaluated on",
                f"{results.get('items', 0)} items of {results.get('source', '–')} "
                f"({results.get('scorer', '')} match)",
            )
            filtered = outcome.generated - outcome.kept
            by_filter = ", ".join(f"{name} {n:,}" for name, n in outcome.failed_by_filter.items())
            table.add_row(
                "samples",
                f"{outcome.generated:,} generated → {outcome.kept:,} kept, {filtered:,} filtered out "
                f"(failed: {by_filter})",
            )
            counts = outcome.dataset.get("row_counts", {})
            table.add_row(
                "dataset",
                f"{outcome.dataset.get('name')} v{outcome.dataset.get('version')}: "
                f"train {counts.get('train', 0):,}, test {counts.get('test', 0):,} → {outcome.export_dir}",
            )
            table.add_row("student model", str(outcome.run.get("model_path")))
            self.console.print(table)

            timing = Table(
                "step", "time", "", title="time per step", title_justify="left", box=None, padding=(0, 2)
            )
            for title, seconds, note in self.timings:
                timing.add_row(title.lower(), duration(seconds), note)
            timing.add_row("[bold]total[/]", f"[bold]{duration(time.perf_counter() - self.started)}[/]", "")
            self.console.print(timing)
            for note in plan.notes:
                self.say(f"[yellow]note: {note}[/]")
            assert self.service is not None
            run_id = outcome.run.get("id")
            self.console.print()
            self.say(f"UI        {self.service.url}/ui/training/{run_id}   (sign in with the token below)")
            self.say(f"token     {self.service.token}")
            self.say(
                f"CLI       export HARDLABEL_API_URL={self.service.url} HARDLABEL_TOKEN={self.service.token}"
            )

    def cancel_active(self) -> None:
        """Ctrl-C: cancel the job/run this demo is waiting for, so no worker picks it up later."""
        if self.active is None or self.client is None:
            return
        route, ident = self.active
        with contextlib.suppress(CliError):
            self.client.post(f"/v1/{route}/{ident}/cancel")
            self.console.print(f"cancelled {route.rstrip('s').replace('-', ' ')} {ident}")

    def close(self) -> None:
        if self.client is not None:
            self.client.__exit__()
        if self.service is not None:
            self.console.print("stopping the worker and the API…")
            self.service.stop()


def dataset_name(recipe_name: str) -> str:
    """A dataset name the API accepts ([A-Za-z0-9][A-Za-z0-9._-]*) from a recipe's name."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "-", recipe_name).strip("-._") or "recipe"
    return f"demo-{cleaned}"[:200]


# --- the command -------------------------------------------------------------------------------


def _demo_environment(home: Path, on_gpu: bool) -> dict[str, str]:
    """Environment of the worker (and, through it, of the training and evaluation processes)."""
    env = {"HARDLABEL_HOME": str(home), "TOKENIZERS_PARALLELISM": "false"}
    if not on_gpu and "VLLM_ENABLE_V1_MULTIPROCESSING" not in os.environ:
        # On CPU the engine in-process starts in seconds; the multiprocess engine adds a process per model.
        env["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
    return env


@click.command("demo")
@click.option("--no-serve", is_flag=True, help="Exit after the results instead of serving until Ctrl-C.")
@click.option(
    "--teacher",
    default=None,
    metavar="MODEL",
    help="Teacher model (folder or hub id); default: train a tiny addition teacher here (cached).",
)
@click.option(
    "--student",
    default=None,
    metavar="MODEL",
    help="Student model (folder or hub id); default: a tiny Llama from scratch.",
)
@click.option(
    "--recipe",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Recipe file (default examples/arithmetic.yaml). Seed rows with a `reference` get the verifier.",
)
@click.option(
    "--items",
    type=click.IntRange(min=1),
    default=DEFAULT_ITEMS,
    show_default=True,
    help="Questions the teacher answers.",
)
@click.option(
    "--eval-items",
    type=click.IntRange(min=1, max=100_000),
    default=DEFAULT_EVAL_ITEMS,
    show_default=True,
    help="Held-out questions teacher and student are scored on.",
)
@click.option(
    "--home",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="State folder (default HARDLABEL_HOME or .hardlabel): database, cached teacher, exports, runs.",
)
@click.option("--host", default=None, help="Address of the API (default HARDLABEL_HOST or 127.0.0.1).")
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=None,
    help="Port of the API (default HARDLABEL_PORT, else 8000 when free, else any free port).",
)
@click.option(
    "--student-steps",
    type=click.IntRange(min=1),
    default=None,
    help=f"Student training steps (default {DEFAULT_STUDENT_STEPS} from scratch, one epoch for --student).",
)
@click.option(
    "--teacher-max-steps",
    type=click.IntRange(min=1),
    default=DEFAULT_TEACHER_MAX_STEPS,
    show_default=True,
    help="At most this many steps for the tiny teacher.",
)
@click.option(
    "--teacher-target",
    type=click.FloatRange(0, 1),
    default=DEFAULT_TEACHER_TARGET,
    show_default=True,
    help="The tiny teacher trains until this share of validation questions is right.",
)
def demo(
    no_serve: bool,
    teacher: str | None,
    student: str | None,
    recipe: Path | None,
    items: int,
    eval_items: int,
    home: Path | None,
    host: str | None,
    port: int | None,
    student_steps: int | None,
    teacher_max_steps: int,
    teacher_target: float,
) -> None:
    """The whole distillation loop in one command: teacher → samples → filters → dataset → student.

    Starts the database, the API and a worker; builds (or reuses) a tiny teacher; generates, filters,
    freezes and exports a dataset; trains a smaller student and scores it against the teacher on
    held-out questions — every step through the REST API. About 10 minutes on 2 CPU cores the first
    time. With a GPU: `hardlabel demo --teacher MODEL --student MODEL --recipe FILE`.
    """
    if teacher is not None and not teacher.strip():
        raise CliError("--teacher: give a model folder or hub id")
    if student is not None and not student.strip():
        raise CliError("--student: give a model folder or hub id")
    if recipe is not None and not recipe.is_file():
        raise CliError(f"--recipe: file not found: {recipe}")
    options = Options(
        no_serve=no_serve,
        teacher=teacher,
        student=student,
        items=items,
        eval_items=eval_items,
        student_steps=student_steps,
        teacher_max_steps=teacher_max_steps,
        teacher_target=teacher_target,
    )
    # Everything that can be refused is refused before a server starts.
    plan = build_plan(recipe, teacher, items, eval_items, VALIDATION_ITEMS)
    settings = get_settings()
    if home is not None:
        settings = settings.model_copy(update={"home": home})
    settings = settings.model_copy(update={"home": settings.home.expanduser().resolve()})
    demo_dir = settings.home / DEMO_DIR
    try:
        demo_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CliError(f"--home: cannot create {demo_dir}: {exc.strerror or exc}") from exc
    port_given = port is not None or "HARDLABEL_PORT" in os.environ
    sock = bind_demo_socket(
        host or settings.host, port if port is not None else settings.port if port_given else None
    )

    handler = logging.FileHandler(demo_dir / "demo.log", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    previous_term = signal.signal(signal.SIGTERM, signal.default_int_handler)
    console = Console(highlight=False)
    runner = Demo(console, options, plan, settings.home)
    code = 0
    try:
        runner.run(settings, sock, _demo_environment(settings.home, nvidia_gpu()))
        if not no_serve:
            console.print()
            console.print("[bold]The service keeps running[/] (API, UI, worker): Ctrl-C stops it.")
            assert runner.service is not None
            runner.service.serve_forever()
    except KeyboardInterrupt:
        console.print("\ninterrupted")
        runner.cancel_active()
        code = 130
    finally:
        try:
            runner.close()
        finally:
            signal.signal(signal.SIGTERM, previous_term)
            root.removeHandler(handler)
            handler.close()
    if code:
        raise SystemExit(code)


commands: list[click.Command] = [demo]
