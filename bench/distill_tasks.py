"""Hard-label distillation on three small tasks of different shapes, through the service, defaults only.

Tasks (each a recipe whose seed rows carry the question, its fields and the `reference`):

- addition:   "What is 37+48?" -> "85"                       (numbers; verifier numeric)
- reversal:   "Reverse: k q a z" -> "z a q k"                 (letter strings of 3-5 letters, spelled
                                                                out so every letter is a token; exact)
- extraction: "Mia, 27, lives in Oslo. What is the city?" -> "Oslo"   (copy one field of a sentence
                                                                in one of three shapes; exact)

For each task a tiny teacher (2x128 Llama from scratch, the demo's settings) learns the ground
truth outside the service (`trainer.sft.train` with a callback scoring validation items every
--teacher-eval-every steps) until --teacher-target or --teacher-max-steps. Two teachers come out of
that one run:

- clean: the end of training;
- noisy: the checkpoint whose validation accuracy was closest to --noisy-accuracy (0.80) — a
  deliberately under-trained teacher, wrong on about a fifth of the items in whatever way an
  unfinished model is wrong.

Teachers are cached under --work by a digest of their data and settings. Then, for each task and
variant, through the service (scratch database, the FastAPI app in-process, in-process workers, as
bench/training.py): a generation job where the teacher answers fresh questions (vLLM); a filter run
(verifier against the seed row's reference); a frozen dataset version (clean: every answer; noisy:
only the verified ones); `POST /v1/training-runs` with only `dataset_id`, `student` (the same
from-scratch shape for every task) and an evaluation block (the held-out items, scorer) — no
hyper-parameters — and the run's own scoring of teacher and student on the same held-out items.

Goals: clean: student >= 0.95 x teacher; noisy: student > teacher (the verifier's work). A missed
goal is printed, not an error (exit code 0); a failure of any step exits 1.

`explore` trains students directly with TRL on ground-truth rows of each task at several data
sizes under one candidate schedule (the evidence for `trainer/schedule.py`'s default rule).

    .venv/bin/python bench/distill_tasks.py                          # the whole bench
    .venv/bin/python bench/distill_tasks.py --tasks addition --variants noisy
    .venv/bin/python bench/distill_tasks.py explore --rows 1000,2000,5000 --lr 2e-3
    .venv/bin/python bench/distill_tasks.py table         # one table of the saved results (per-task runs)

One process per task and variant (the teacher first, then both variants side by side) is how it ran
on a shared 2-core machine: each writes results/<tasks>.<variants>.json, `table` joins them.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import sys
import time
import traceback
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

if TYPE_CHECKING:
    from fastapi.testclient import TestClient

    from service.settings import Settings

REFERENCE_FIELD = "reference"
DEFAULT_SERVER = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"

# --- the tasks ----------------------------------------------------------------------------------

NAMES = (
    "Mia", "Leo", "Ava", "Noah", "Emma", "Liam", "Zoe", "Omar", "Ines", "Hugo", "Lena", "Ivan",
    "Sara", "Tom", "Nina", "Yuki", "Ravi", "Ella", "Finn", "Lara", "Axel", "Maya", "Otto", "Rosa",
)  # fmt: skip
CITIES = (
    "Oslo", "Paris", "Lima", "Rome", "Cairo", "Delhi", "Tokyo", "Quito", "Dakar", "Kyiv", "Bern",
    "Riga", "Seoul", "Perth", "Turin", "Porto", "Lagos", "Hanoi", "Accra", "Malmo", "Split", "Graz",
    "Cork", "Minsk",
)  # fmt: skip
EXTRACTION_FIELDS = ("name", "city", "age")
# Three sentence shapes: the fields move, so the answer must be found, not read at a fixed place.
SENTENCES = (
    "{name}, {age}, lives in {city}.",
    "{name} from {city} is {age} years old.",
    "In {city} lives {name}, aged {age}.",
)
LETTERS = "abcdefghijklmnopqrstuvwxyz"


def addition_row(rng: random.Random) -> dict[str, Any]:
    a, b = rng.randrange(100), rng.randrange(100)
    return {"a": a, "b": b, "question": f"What is {a}+{b}?", REFERENCE_FIELD: str(a + b)}


def reversal_row(rng: random.Random) -> dict[str, Any]:
    word = "".join(rng.choice(LETTERS) for _ in range(rng.randint(3, 5)))
    return {
        "word": word,
        "question": f"Reverse: {' '.join(word)}",
        REFERENCE_FIELD: " ".join(reversed(word)),
    }


def extraction_row(rng: random.Random) -> dict[str, Any]:
    values = {"name": rng.choice(NAMES), "city": rng.choice(CITIES), "age": str(rng.randint(18, 89))}
    sentence = rng.choice(SENTENCES).format(**values)
    asked = rng.choice(EXTRACTION_FIELDS)
    return {
        **values,
        "field": asked,
        "question": f"{sentence} What is the {asked}?",
        REFERENCE_FIELD: values[asked],
    }


@dataclass(frozen=True)
class DistillTask:
    """A task: how to draw a seed row, how answers are checked, how long an answer may be."""

    name: str
    make_row: Callable[[random.Random], dict[str, Any]]
    verifier_mode: str  # the verifier filter's and the evaluation's scorer
    max_new_tokens: int


TASKS: dict[str, DistillTask] = {
    task.name: task
    for task in (
        DistillTask("addition", addition_row, "numeric", 8),
        DistillTask("reversal", reversal_row, "exact", 16),
        DistillTask("extraction", extraction_row, "exact", 8),
    )
}


@dataclass(frozen=True)
class TaskSplit:
    """Disjoint sets of seed rows of one task (no question in two sets)."""

    held_out: list[dict[str, Any]]  # the evaluation's items: no model ever trains on them
    validation: list[dict[str, Any]]  # the teacher's stop criterion and the explore runs' score
    truth: list[dict[str, Any]]  # the teacher's ground truth
    fresh: list[dict[str, Any]]  # the questions the teacher answers for the student


def split_task(
    task: DistillTask, *, truth: int, fresh: int, held_out: int, validation: int, seed: int = 0
) -> TaskSplit:
    """Draw distinct questions and deal them out; the same arguments always give the same split.

    The held-out and validation rows are drawn first, so their content never depends on the sizes
    of the other sets.

    Raises:
        ValueError: the task has fewer distinct questions than asked for.
    """
    rng = random.Random(f"{task.name}:{seed}")
    wanted = held_out + validation + truth + fresh
    rows: list[dict[str, Any]] = []
    seen: set[str] = set()
    misses = 0
    while len(rows) < wanted:
        row = task.make_row(rng)
        if row["question"] in seen:
            misses += 1
            if misses > 50 * wanted:
                raise ValueError(f"{task.name}: fewer than {wanted} distinct questions")
            continue
        seen.add(row["question"])
        rows.append(row)
    ends = [held_out, held_out + validation, held_out + validation + truth]
    return TaskSplit(
        held_out=rows[: ends[0]],
        validation=rows[ends[0] : ends[1]],
        truth=rows[ends[1] : ends[2]],
        fresh=rows[ends[2] :],
    )


def prompt_of(row: Mapping[str, Any]) -> list[dict[str, str]]:
    return [{"role": "user", "content": str(row["question"])}]


def prompt_completion(row: Mapping[str, Any], answer: str | None = None) -> dict[str, Any]:
    """A TRL conversational prompt–completion row (the reference unless another answer is given)."""
    content = str(row[REFERENCE_FIELD]) if answer is None else answer
    return {"prompt": prompt_of(row), "completion": [{"role": "assistant", "content": content}]}


def recipe_for(task: DistillTask, rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The generation job's recipe: one greedy answer stage over the seed rows' questions."""
    return {
        "name": f"distill-{task.name}",
        "seed": 0,
        "seeds": {"records": [dict(row) for row in rows]},
        "stages": [
            {
                "name": "answer",
                "messages": [{"role": "user", "content": "{{ question }}"}],
                "sampling": {"temperature": 0.0, "max_tokens": task.max_new_tokens},
                "parser": {"type": "text"},
            }
        ],
    }


def verifier_params(task: DistillTask) -> dict[str, Any]:
    return {"reference_field": REFERENCE_FIELD, "mode": task.verifier_mode}


def answers_match(task: DistillTask, answers: Sequence[str], references: Sequence[str]) -> list[bool]:
    """Each answer against its reference, by the verifier's mode (`answers.match`, the evaluation's too)."""
    from answers import match

    return match.answers_match(answers, references, task.verifier_mode)


def write_jsonl(path: Path, rows: Iterable[Mapping[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def digest_of(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


# --- scoring while training ------------------------------------------------------------------------


@dataclass
class Score:
    step: int
    seconds: float  # training seconds up to this step (scoring excluded)
    accuracy: float


def score_callback(
    task: DistillTask,
    rows: Sequence[Mapping[str, Any]],
    every: int,
    *,
    stop_at: float | None = None,
    on_score: Callable[[Score, Any, Any], None] | None = None,
    label: str = "",
    dense: tuple[float, float, int] | None = None,
) -> Any:
    """A TrainerCallback scoring the model being trained on `rows` every `every` steps (and at the end).

    Stops training at the first score >= `stop_at`; `on_score(score, model, tokenizer)` sees every score.
    `dense` = (low, high, steps): while the last score lies in [low, high), score every `steps` instead
    (accuracy can jump by half in 50 steps: the noisy teacher's window needs a closer look).
    """
    from transformers import TrainerCallback

    from trainer.evaluate import generate_answers

    prompts = [prompt_of(row) for row in rows]
    references = [str(row[REFERENCE_FIELD]) for row in rows]

    class ScoreEvery(TrainerCallback):  # type: ignore[misc]
        def __init__(self) -> None:
            self.scores: list[Score] = []
            self.started = 0.0
            self.scoring_seconds = 0.0

        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.started, self.scoring_seconds = time.perf_counter(), 0.0

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
            last = self.scores[-1].accuracy if self.scores else 0.0
            close = dense is not None and dense[0] <= last < dense[1]
            gap = dense[2] if dense is not None and close else every
            if state.global_step % gap and state.global_step < state.max_steps:
                return control
            began = time.perf_counter()
            model, tokenizer = kwargs["model"], kwargs["processing_class"]
            answers = generate_answers(model, tokenizer, prompts, task.max_new_tokens, batch_size=256)
            accuracy = sum(answers_match(task, answers, references)) / len(references)
            score = Score(state.global_step, began - self.started - self.scoring_seconds, accuracy)
            self.scores.append(score)
            if on_score is not None:
                on_score(score, model, tokenizer)
            self.scoring_seconds += time.perf_counter() - began
            print(
                f"  {label} step {score.step:5d}  {score.seconds:7.1f} s  accuracy {accuracy:.3f}", flush=True
            )
            if stop_at is not None and accuracy >= stop_at:
                control.should_training_stop = True
            return control

    return ScoreEvery()


# --- teachers (trained outside the service) ------------------------------------------------------


@dataclass
class Teachers:
    """One teacher run of a task: the clean teacher (its end) and the noisy one (a checkpoint)."""

    clean: Path
    noisy: Path
    clean_accuracy: float  # on the validation items
    noisy_accuracy: float
    noisy_step: int
    steps: int
    seconds: float
    parameters: int


def noisy_window(args: argparse.Namespace) -> tuple[float, float, int] | None:
    """Where the teacher is scored more often: from well below the noisy aim to a little above it."""
    if not args.teacher_dense_every:
        return None
    return (args.noisy_accuracy - 0.4, args.noisy_accuracy + 0.05, args.teacher_dense_every)


def nearer_to(aim: float, kept: float | None, candidate: float) -> bool:
    """Whether a checkpoint scoring `candidate` replaces the one kept (scoring `kept`) as the noisy teacher.

    The nearest to `aim` wins; on a tie the earlier one stays (the more under-trained).
    """
    return kept is None or abs(candidate - aim) < abs(kept - aim)


def train_teachers(task: DistillTask, split: TaskSplit, work: Path, args: argparse.Namespace) -> Teachers:
    """Train (or find cached) the task's teacher; keep the checkpoint nearest --noisy-accuracy as well."""
    from service.cli.demo.loop import TEACHER_SCHEDULE, TEACHER_SHAPES
    from trainer.sft import train
    from trainer.spec import TrainingSpec

    settings = {
        "shapes": TEACHER_SHAPES,
        "schedule": TEACHER_SCHEDULE,
        "max_steps": args.teacher_max_steps,
        "target": args.teacher_target,
        "every": args.teacher_eval_every,
        "noisy": args.noisy_accuracy,
    }
    if noisy_window(args) is not None:
        settings["dense"] = noisy_window(args)
    folder = work / "teachers" / f"{task.name}-{digest_of(split.truth, split.validation, settings)}"
    result_file = folder / "teachers.json"
    if result_file.exists():
        cached = json.loads(result_file.read_text(encoding="utf-8"))
        print(f"{task.name}: cached teachers in {folder}", flush=True)
        return Teachers(**{**cached, "clean": Path(cached["clean"]), "noisy": Path(cached["noisy"])})
    shutil.rmtree(folder, ignore_errors=True)
    noisy_dir = folder / "noisy"
    nearest: list[Score] = []

    def keep_nearest(score: Score, model: Any, tokenizer: Any) -> None:
        if not nearer_to(args.noisy_accuracy, nearest[0].accuracy if nearest else None, score.accuracy):
            return
        nearest[:] = [score]
        use_cache = model.config.use_cache
        model.config.use_cache = True  # as trainer.sft saves its final model: for generation
        model.save_pretrained(noisy_dir, safe_serialization=True)
        tokenizer.save_pretrained(noisy_dir)
        model.config.use_cache = use_cache

    print(
        f"{task.name}: training the teacher ({TEACHER_SHAPES['layers']}x{TEACHER_SHAPES['hidden']}) on "
        f"{len(split.truth):,} ground-truth rows until {args.teacher_target:.0%} of "
        f"{len(split.validation)} validation items", flush=True,
    )  # fmt: skip
    scorer = score_callback(
        task,
        split.validation,
        args.teacher_eval_every,
        stop_at=args.teacher_target,
        on_score=keep_nearest,
        label=f"{task.name} teacher",
        dense=noisy_window(args),
    )
    spec = TrainingSpec(
        **TEACHER_SCHEDULE,
        num_train_epochs=1.0,  # max_steps decides
        max_steps=args.teacher_max_steps,
        logging_steps=50,
        save_steps=args.teacher_max_steps,
        save_total_limit=1,
    )
    data = write_jsonl(folder / "truth.jsonl", (prompt_completion(row) for row in split.truth))
    started = time.perf_counter()
    result = train(
        dataset_path=data,
        student=None,
        from_scratch=TEACHER_SHAPES,
        output_dir=folder / "run",
        spec=spec,
        callbacks=[scorer],
    )
    info = json.loads((folder / "run" / "init" / "hardlabel_tiny_model.json").read_text())
    teachers = Teachers(
        clean=Path(result.model_path),
        noisy=noisy_dir,
        clean_accuracy=scorer.scores[-1].accuracy,
        noisy_accuracy=nearest[0].accuracy,
        noisy_step=nearest[0].step,
        steps=result.global_step,
        seconds=round(time.perf_counter() - started, 1),
        parameters=int(info["parameters"]),
    )
    result_file.write_text(
        json.dumps(
            {**teachers.__dict__, "clean": str(teachers.clean), "noisy": str(teachers.noisy)}, indent=2
        )
    )
    return teachers


# --- explore: the evidence for the default schedule ----------------------------------------------


def student_shapes() -> dict[str, Any]:
    """The one from-scratch student of every task: the demo's 2x96 (heads of 32 dims for vLLM on CPU)."""
    from service.cli.demo.loop import STUDENT_SHAPES

    return dict(STUDENT_SHAPES)


def explore(args: argparse.Namespace) -> None:
    """Students trained directly (TRL via trainer.sft.train) on ground truth: steps/seconds to the target."""
    from trainer.sft import train
    from trainer.spec import TrainingSpec

    sizes = [int(size) for size in args.rows.split(",")]
    work = args.work.resolve() / "explore"
    table: list[tuple[str, int, int, str, float, float, int]] = []
    for name in args.tasks:
        task = TASKS[name]
        split = split_task(
            task, truth=max(sizes), fresh=0, held_out=args.eval_items, validation=args.eval_items
        )
        for size in sizes:
            rows = split.truth[:size]
            batch = args.batch
            steps_per_epoch = -(-size // batch)
            max_steps = args.max_steps or round(args.epochs * steps_per_epoch)
            if args.min_steps:
                max_steps = max(max_steps, args.min_steps)
            spec = TrainingSpec(
                learning_rate=args.lr,
                num_train_epochs=1.0,  # max_steps decides
                max_steps=max_steps,
                per_device_train_batch_size=batch,
                max_length=64,
                warmup_steps=round(args.warmup_ratio * max_steps),
                lr_scheduler_type=args.scheduler,
                weight_decay=args.weight_decay,
                logging_steps=50,
                save_steps=max_steps,
                save_total_limit=1,
                seed=0,
            )
            label = f"{name} {size}"
            print(f"{label}: {max_steps} steps ({max_steps / steps_per_epoch:.1f} epochs)", flush=True)
            scorer = score_callback(
                task,
                split.validation,
                args.eval_every,
                stop_at=None if args.no_stop else args.target,
                label=label,
            )
            out = work / f"{name}-{size}"
            shutil.rmtree(out, ignore_errors=True)
            data = write_jsonl(out / "rows.jsonl", (prompt_completion(row) for row in rows))
            train(
                dataset_path=data,
                student=None,
                from_scratch=student_shapes(),
                output_dir=out / "run",
                spec=spec,
                callbacks=[scorer],
            )
            reached = next((s for s in scorer.scores if s.accuracy >= args.target), None)
            best = max(s.accuracy for s in scorer.scores)
            where = f"{reached.step}" if reached else f"not in {scorer.scores[-1].step}"
            seconds = reached.seconds if reached else scorer.scores[-1].seconds
            table.append((name, size, max_steps, where, seconds, best, round(os.getloadavg()[0] * 100)))
            shutil.rmtree(out / "run", ignore_errors=True)
            print(f"{label}: target {where}, best {best:.3f}", flush=True)
    print()
    print(
        f"schedule: lr {args.lr} {args.scheduler}, warm-up {args.warmup_ratio:.0%}, batch {args.batch}, "
        f"weight decay {args.weight_decay}, epochs {args.epochs} (min steps {args.min_steps}); "
        f"student {student_shapes()}; torch threads {torch_threads()}"
    )
    print(
        f"{'task':11} {'rows':>6} {'steps':>6} {'to ' + format(args.target, '.0%'):>12} "
        f"{'train s':>8} {'best':>6} {'load':>5}"
    )
    for name, size, max_steps, where, seconds, best, load in table:
        print(f"{name:11} {size:6d} {max_steps:6d} {where:>12} {seconds:8.1f} {best:6.3f} {load / 100:5.2f}")


def torch_threads() -> int:
    import torch

    return int(torch.get_num_threads())


# --- the bench: through the service --------------------------------------------------------------

VARIANTS = ("clean", "noisy")
CLEAN_GOAL = 0.95  # clean: student >= CLEAN_GOAL x teacher; noisy: student > teacher
TINY_ENGINE: dict[str, Any] = {
    "engine": "vllm",
    "dtype": "float32",
    "enforce_eager": True,
    "kv_cache_memory_bytes": 256 << 20,
    "max_model_len": 512,
}


@dataclass
class Row:
    """One line of the results table."""

    task: str
    variant: str
    teacher_validation: float  # the teacher's accuracy on the validation items (when it was chosen)
    generated: int = 0
    verified: int = 0  # answers the verifier judged right
    trained_on: int = 0  # rows of the dataset version
    teacher: float | None = None  # held-out accuracy, scored by the training run
    student: float | None = None
    student_before: float | None = None
    steps: int = 0
    total_steps: int | None = None
    train_minutes: float | None = None  # run claimed -> last training metric (export, child start included)
    trainer_minutes: float | None = None  # the trainer's own training seconds (in-training scoring included)
    run_minutes: float | None = None  # run created -> finished (evaluation included)
    stopped: str = ""
    error: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def ratio(self) -> float | None:
        if self.teacher is None or self.student is None or not self.teacher:
            return None
        return self.student / self.teacher

    @property
    def goal(self) -> str:
        return f">= {CLEAN_GOAL} x teacher" if self.variant == "clean" else "> teacher"

    @property
    def met(self) -> bool:
        if self.ratio is None or self.student is None or self.teacher is None:
            return False
        return self.ratio >= CLEAN_GOAL if self.variant == "clean" else self.student > self.teacher


def admin_headers(url: str) -> dict[str, str]:
    from service.auth import issue_token
    from service.db.session import transaction

    with transaction(url) as session:
        _, secret = issue_token(session, role="admin", name="bench-distill-tasks")
    return {"Authorization": f"Bearer {secret}"}


class BenchError(RuntimeError):
    """A step of the bench failed (not a missed goal)."""


def api(client: TestClient, method: str, path: str, headers: dict[str, str], **kwargs: Any) -> Any:
    response = client.request(method, path, headers=headers, **kwargs)
    if response.status_code >= 300:
        raise BenchError(f"{method} {path}: {response.status_code} {response.text[:500]}")
    return response.json()


def work_until_idle(settings: Settings, kind: str) -> None:
    from service.workers.runner import run_worker

    run_worker(settings, [kind], exit_when_idle=True)


def training_request(
    task: DistillTask,
    variant: str,
    dataset_id: int,
    eval_set: Path,
    eval_items: int,
    args: argparse.Namespace,
) -> dict[str, Any]:
    """The run's body: the dataset, a from-scratch student, where and how to score; no hyper-parameters.

    The early stop is the product's own (in-training accuracy on the evaluation items, best model
    kept): clean stops at --clean-target x the teacher, noisy at --noisy-target x the teacher (above
    1: the student must beat it). In-training scoring uses every held-out item, so the target is
    checked on the items the final table scores.
    """
    target = args.clean_target if variant == "clean" else args.noisy_target
    evaluation: dict[str, Any] = {
        "eval_set": {"path": str(eval_set)},
        "scorer": task.verifier_mode,
        "max_new_tokens": task.max_new_tokens,
        "max_items": eval_items,
        "during_training": {"items": eval_items, "target": {"of_teacher": target}},
    }
    evaluation.update(args.evaluation_extra)
    shapes = student_shapes()
    if "tokenizer" in args.student_extra:  # a reused tokenizer decides the vocabulary
        shapes = {key: value for key, value in shapes.items() if key not in ("vocab", "split_digits")}
    student: dict[str, Any] = {"from_scratch": {**shapes, **args.student_extra}}
    body: dict[str, Any] = {"dataset_id": dataset_id, "student": student, "evaluation": evaluation}
    if args.quick:
        # A smoke run of every step, not a measurement: the one place the bench sets a hyper-parameter.
        body["hyperparameters"] = {"max_steps": args.quick_steps}
    return body


def distill_through_service(
    client: TestClient,
    headers: dict[str, str],
    settings: Settings,
    task: DistillTask,
    split: TaskSplit,
    variant: str,
    teacher: Path,
    row: Row,
    work: Path,
    args: argparse.Namespace,
) -> None:
    """Job -> verifier -> version -> training run with defaults -> the run's own scores, into `row`."""
    from datetime import datetime

    from service.workers.teachers import TEACHERS

    job = api(
        client,
        "POST",
        "/v1/jobs",
        headers,
        json={
            "recipe": recipe_for(task, split.fresh),
            "teacher": {"model": str(teacher), **TINY_ENGINE},
            "shard_size": 1000,
            "chunk_size": 500,
        },
    )
    try:
        work_until_idle(settings, "generate")
    finally:
        TEACHERS.close()  # the teacher's vLLM engine leaves this process
    job = api(client, "GET", f"/v1/jobs/{job['id']}", headers)
    if job["status"] != "succeeded":
        raise BenchError(f"job {job['id']} {job['status']}: {job.get('last_error')}")
    row.generated = int(job["progress"]["samples_written"])

    run = api(
        client,
        "POST",
        "/v1/filter-runs",
        headers,
        json={
            "selection": {"job_ids": [job["id"]]},
            "filters": [{"type": "verifier", "params": verifier_params(task)}],
        },
    )
    work_until_idle(settings, "filter")
    run = api(client, "GET", f"/v1/filter-runs/{run['id']}", headers)
    if run["status"] != "succeeded":
        raise BenchError(f"filter run {run['id']} {run['status']}")
    row.verified = int(run["counts"]["verifier"]["passed"])

    # clean: every answer the teacher wrote (the verifier only counts); noisy: the verified ones.
    query: dict[str, Any] = {"job_ids": [job["id"]]}
    if variant == "noisy":
        query.update(require_passed=["verifier"], review_status="accepted_or_unreviewed_passed_all")
    else:
        query.update(review_status=["pending", "accepted"])
    version = api(
        client,
        "POST",
        "/v1/datasets",
        headers,
        json={"name": f"distill-{task.name}-{variant}", "query": query},
    )
    work_until_idle(settings, "freeze")  # the version is queued (202); a worker copies its rows
    version = api(client, "GET", f"/v1/datasets/{version['id']}", headers)
    if version["status"] != "succeeded":
        raise BenchError(f"dataset version {version['id']} {version['status']}: {version['error']}")
    if (
        version.get("status", "succeeded") != "succeeded"
    ):  # a queued freeze: a `freeze` worker copies the rows
        work_until_idle(settings, "freeze")
        version = api(client, "GET", f"/v1/datasets/{version['id']}", headers)
        if version.get("status") != "succeeded":
            raise BenchError(
                f"dataset version {version['id']} {version.get('status')}: {version.get('error')}"
            )
    row.trained_on = int(version["row_counts"]["train"])

    eval_set = write_jsonl(
        work / f"held-out-{task.name}.jsonl",
        ({"question": r["question"], "answer": r[REFERENCE_FIELD]} for r in split.held_out),
    )
    body = training_request(task, variant, int(version["id"]), eval_set, len(split.held_out), args)
    created = api(client, "POST", "/v1/training-runs", headers, json=body)
    print(f"  {task.name}/{variant}: training run {created['id']}: {json.dumps(body)}", flush=True)
    work_until_idle(settings, "train")
    detail = api(client, "GET", f"/v1/training-runs/{created['id']}", headers)
    if detail["status"] != "succeeded":
        raise BenchError(f"training run {detail['id']} {detail['status']}: {detail.get('last_error')}")
    results = detail.get("results") or {}
    row.teacher = (results.get("teacher") or {}).get("accuracy")
    row.student = (results.get("student_after") or {}).get("accuracy")
    row.student_before = (results.get("student_before") or {}).get("accuracy")
    row.steps = int(detail["progress"]["step"])
    row.total_steps = detail["progress"].get("total_steps")
    row.stopped = describe_stop(detail)
    outcome = detail.get("training") or {}
    if outcome.get("train_seconds") is not None:
        row.trainer_minutes = float(outcome["train_seconds"]) / 60
    if outcome.get("best_step") is not None:
        row.notes.append(
            f"kept step {outcome['best_step']} (in-training score {percent(outcome.get('best_score'))}, "
            f"target {percent(outcome.get('target_score'))}, teacher in-training "
            f"{percent(outcome.get('teacher_score'))}; {outcome.get('evaluations')} scorings every "
            f"{outcome.get('eval_every')} steps on {outcome.get('eval_items')} items, "
            f"{outcome.get('eval_seconds') or 0:.0f} s of scoring)"
        )
    metrics = stored_metrics(client, headers, int(detail["id"]))
    started = datetime.fromisoformat(detail["started_at"]).timestamp()
    times = [float(m["time"]) for m in metrics if isinstance(m.get("time"), int | float)]
    if times:
        row.train_minutes = (max(times) - started) / 60
    finished = datetime.fromisoformat(detail["finished_at"]).timestamp()
    row.run_minutes = (finished - datetime.fromisoformat(detail["created_at"]).timestamp()) / 60
    config = detail.get("config") or {}
    row.notes.append(
        "schedule "
        + ", ".join(
            f"{key} {config[key]}"
            for key in ("learning_rate", "num_train_epochs", "max_steps", "per_device_train_batch_size",
                        "warmup_ratio", "lr_scheduler_type", "weight_decay")
            if key in config
        )
    )  # fmt: skip


def describe_stop(detail: Mapping[str, Any]) -> str:
    """Why training ended, as the run reports it: the target, a plateau, the time budget, or the schedule."""
    stopped = (detail.get("training") or {}).get("stopped")
    if stopped:
        return str(stopped)
    total = detail["progress"].get("total_steps")
    step = detail["progress"]["step"]
    return "schedule end" if total and step >= total else f"stopped at {step}/{total}"


def stored_metrics(client: TestClient, headers: dict[str, str], run_id: int) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    while True:
        page = api(
            client,
            "GET",
            f"/v1/training-runs/{run_id}/metrics",
            headers,
            params={"limit": 100, "offset": len(rows)},
        )
        rows.extend(item["values"] for item in page["items"])
        if not page["items"] or len(rows) >= page["total"]:
            return rows


def percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def print_table(rows: Sequence[Row], load: str, threads: str | None = None) -> None:
    header = (
        f"{'task':10} {'variant':7} {'teacher(val)':>12} {'teacher':>8} {'verified':>13} {'trained':>7} "
        f"{'student':>8} {'ratio':>6} {'goal':>17} {'met':>4} {'stop':>8} {'steps':>11} {'train min':>9} "
        f"{'run min':>7}"
    )
    print()
    print(header)
    print("-" * len(header))
    for r in rows:
        ratio = "-" if r.ratio is None else f"{r.ratio:.3f}"
        verified = f"{r.verified}/{r.generated}" if r.generated else "-"
        steps = f"{r.steps}/{r.total_steps}" if r.total_steps else str(r.steps)
        shown = r.trainer_minutes if r.trainer_minutes is not None else r.train_minutes
        minutes = "-" if shown is None else f"{shown:.1f}"
        run_minutes = "-" if r.run_minutes is None else f"{r.run_minutes:.1f}"
        met = "ERR" if r.error else ("yes" if r.met else "NO")
        print(
            f"{r.task:10} {r.variant:7} {percent(r.teacher_validation):>12} {percent(r.teacher):>8} "
            f"{verified:>13} {r.trained_on:>7} {percent(r.student):>8} {ratio:>6} {r.goal:>17} {met:>4} "
            f"{r.stopped[:8]:>8} {steps:>11} {minutes:>9} {run_minutes:>7}"
        )
    threads = threads or os.environ.get("OMP_NUM_THREADS") or "torch default"
    print(f"load average {load}; torch threads {threads}")
    print(
        "teacher(val): the teacher's accuracy on its validation items when it was kept; teacher, student: "
        "the run's own scores on the held-out items (vLLM, greedy); verified: answers the verifier passed "
        "of those generated; trained: train rows of the version (clean: all answers, noisy: verified "
        "only); stop: why training ended (target = the early stop on x teacher); steps: trained/"
        "scheduled; train min: the trainer's training time incl. in-training scoring; run min: run "
        "created -> finished (child starts, final evaluation included)"
    )
    for r in rows:
        for note in [
            *r.notes,
            *([r.error] if r.error else []),
        ]:
            print(f"  {r.task}/{r.variant}: {note}")
    missed = [f"{r.task}/{r.variant} ({r.goal})" for r in rows if not r.error and not r.met]
    failed = [f"{r.task}/{r.variant}" for r in rows if r.error]
    print(f"goals missed: {', '.join(missed) if missed else 'none'}")
    if failed:
        print(f"failed: {', '.join(failed)}")


def print_saved_tables(work: Path) -> int:
    """One table of every results file under `work/results` (benches run one task per process)."""
    rows: list[Row] = []
    loads = []
    threads: set[str] = set()
    for path in sorted((work / "results").glob("*.json")):
        saved = json.loads(path.read_text(encoding="utf-8"))
        loads.append(f"{path.stem}: {saved['load']}")
        threads.add(str(saved.get("threads") or "not recorded"))
        rows.extend(Row(**row) for row in saved["rows"])
    if not rows:
        print(f"no results under {work / 'results'}")
        return 1
    print_table(
        rows,
        "; ".join(loads) + " (at the end of each bench); now " + load_average(),
        ", ".join(sorted(threads)),
    )
    return 0


def run_name(args: argparse.Namespace) -> str:
    """Names this bench's service home and results file: benches of other tasks or variants run beside it."""
    return f"{'-'.join(args.tasks)}.{'-'.join(args.variants)}"


def load_average() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def run_bench(args: argparse.Namespace) -> int:
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # the engine in-process: seconds on CPU
    from fastapi.testclient import TestClient

    from service.app import create_app
    from service.db.scratch import scratch_database
    from service.settings import Settings

    if args.quick:
        args.teacher_rows, args.items, args.eval_items = 1000, 400, 50
        args.teacher_max_steps = min(args.teacher_max_steps, 300)
    work = args.work.resolve()
    tmp = work / "tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("TMPDIR", str(tmp))  # vLLM leaves ZMQ socket files there
    started = time.perf_counter()
    print(f"start: load average {load_average()}", flush=True)
    splits = {
        name: split_task(
            TASKS[name], truth=args.teacher_rows, fresh=args.items, held_out=args.eval_items,
            validation=args.eval_items,
        )
        for name in args.tasks
    }  # fmt: skip
    teachers = {name: train_teachers(TASKS[name], splits[name], work, args) for name in args.tasks}
    for name, found in teachers.items():
        print(
            f"{name}: teacher {found.parameters:,} parameters, {found.steps} steps ({found.seconds:.0f} s "
            f"the first time); clean {percent(found.clean_accuracy)}, noisy {percent(found.noisy_accuracy)} "
            f"(step {found.noisy_step}) of the validation items",
            flush=True,
        )
    rows: list[Row] = []
    # A new database numbers runs from 1: no old run folder may remain (one home per set of tasks, so
    # benches of different tasks can run side by side).
    home = work / f"service-home-{run_name(args)}"
    shutil.rmtree(home, ignore_errors=True)
    with scratch_database(args.database_url, "hardlabel_bench_distill") as url:
        settings = Settings(database_url=url, home=home)
        headers = admin_headers(url)
        with TestClient(create_app(settings)) as client:
            for name in args.tasks:
                task, found = TASKS[name], teachers[name]
                for variant in args.variants:
                    teacher = found.clean if variant == "clean" else found.noisy
                    accuracy = found.clean_accuracy if variant == "clean" else found.noisy_accuracy
                    row = Row(task=name, variant=variant, teacher_validation=accuracy)
                    rows.append(row)
                    print(f"{name}/{variant}: through the service (load {load_average()})", flush=True)
                    try:
                        distill_through_service(
                            client, headers, settings, task, splits[name], variant, teacher, row, work, args
                        )
                    except Exception as exc:  # one failed row must not lose the others
                        text = str(exc).strip().splitlines()
                        row.error = f"{type(exc).__name__}: {text[0] if text else ''}"[:300]
                        traceback.print_exc()
                        print(f"  {name}/{variant} failed: {row.error}", flush=True)
                    print(
                        f"  {name}/{variant}: teacher {percent(row.teacher)}, "
                        f"student {percent(row.student)}, {row.steps} steps, "
                        f"{row.train_minutes or 0:.1f} min (load {load_average()})",
                        flush=True,
                    )
    load = load_average()
    results = work / "results" / f"{run_name(args)}.json"
    results.parent.mkdir(parents=True, exist_ok=True)
    results.write_text(
        json.dumps(
            {"load": load, "threads": os.environ.get("OMP_NUM_THREADS"), "rows": [r.__dict__ for r in rows]},
            indent=2,
        ),
        encoding="utf-8",
    )
    print_table(rows, load)
    print(f"whole bench {(time.perf_counter() - started) / 60:.1f} min; results in {results}")
    return 1 if any(r.error for r in rows) else 0


# --- command line --------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("mode", nargs="?", choices=("bench", "explore", "table"), default="bench")
    parser.add_argument("--tasks", type=lambda text: text.split(","), default=list(TASKS))
    parser.add_argument("--work", type=Path, default=ROOT / ".tmp" / "distill_tasks")
    parser.add_argument("--eval-items", type=int, default=200, help="held-out (and validation) items")
    parser.add_argument("--threads", type=int, help="torch threads here and in the workers (OMP_NUM_THREADS)")
    bench = parser.add_argument_group("bench")
    bench.add_argument("--variants", type=lambda text: text.split(","), default=["clean", "noisy"])
    bench.add_argument("--teacher-rows", type=int, default=4000, help="ground truth of each teacher")
    bench.add_argument("--items", type=int, default=3000, help="fresh questions each teacher answers")
    bench.add_argument("--teacher-target", type=float, default=0.95)
    bench.add_argument("--teacher-max-steps", type=int, default=2000)
    bench.add_argument("--teacher-eval-every", type=int, default=50)
    bench.add_argument(
        "--teacher-dense-every",
        type=int,
        default=10,
        help="score the teacher every N steps near the noisy aim (0: every --teacher-eval-every)",
    )
    bench.add_argument("--noisy-accuracy", type=float, default=0.80, help="the noisy teacher's aim")
    bench.add_argument(
        "--quick", action="store_true", help="fewer items and steps: a smoke run of every step"
    )
    bench.add_argument("--quick-steps", type=int, default=100, help="--quick: the student's steps")
    bench.add_argument(
        "--evaluation",
        dest="evaluation_extra",
        type=json.loads,
        default={},
        help="JSON merged into the run's evaluation block (e.g. an early-stop target)",
    )
    bench.add_argument(
        "--student",
        dest="student_extra",
        type=json.loads,
        default={},
        help='JSON merged into the from-scratch shapes (e.g. {"tokenizer": "teacher"})',
    )
    bench.add_argument("--clean-target", type=float, default=0.95, help="early stop: x the teacher")
    bench.add_argument("--noisy-target", type=float, default=1.05, help="early stop: x the teacher")
    bench.add_argument(
        "--database-url", default=os.environ.get("HARDLABEL_TEST_DATABASE_URL") or DEFAULT_SERVER
    )
    schedule = parser.add_argument_group("explore (one candidate schedule)")
    schedule.add_argument("--rows", default="1000,2000,5000")
    schedule.add_argument("--lr", type=float, default=2e-3)
    schedule.add_argument("--batch", type=int, default=64)
    schedule.add_argument("--epochs", type=float, default=20.0)
    schedule.add_argument("--min-steps", type=int, default=0)
    schedule.add_argument("--max-steps", type=int, default=0, help="fixed steps (instead of --epochs)")
    schedule.add_argument("--warmup-ratio", type=float, default=0.05)
    schedule.add_argument("--scheduler", default="cosine")
    schedule.add_argument("--weight-decay", type=float, default=0.1)
    schedule.add_argument("--eval-every", type=int, default=100)
    schedule.add_argument("--target", type=float, default=0.95)
    schedule.add_argument("--no-stop", action="store_true", help="train every step after the target")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.tasks) - set(TASKS))
    if unknown:
        parser.error(f"unknown task(s) {', '.join(unknown)} (known: {', '.join(TASKS)})")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        os.environ["OMP_NUM_THREADS"] = str(args.threads)
        import torch

        torch.set_num_threads(args.threads)
    import datasets
    from transformers.utils import logging as hf_logging

    datasets.disable_progress_bars()
    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    if args.mode == "explore":
        explore(args)
        return 0
    if args.mode == "table":
        return print_saved_tables(args.work.resolve())
    return run_bench(args)


if __name__ == "__main__":
    sys.exit(main())
