"""`hardlabel demo`: the whole hard-label distillation loop in one command, driven through the REST API.

0. Service: the database (the embedded Postgres under HARDLABEL_HOME when HARDLABEL_DATABASE_URL is
   unset), the API and a worker for every task kind, what `hardlabel up` runs (`server`).
1. Teacher: without --teacher, a tiny Llama learns 2-digit addition from ground truth until it
   answers enough validation questions right; cached under HOME/demo/teacher/ (`teacher`).
2. Generation: a job of the arithmetic recipe (examples/demo/) over fresh questions, answered through vLLM.
3. Curation: verifier, exact dedup and length filters; a frozen dataset version with a test split;
   its export in TRL's prompt–completion format.
4. Student: a training run of a smaller student and its evaluation against the teacher, before and
   after training, on held-out questions (`plan` chooses them).
5. A results table and the UI's address; the service keeps running until Ctrl-C (--no-serve exits).

`--task NAME` runs the same loop on a real pretrained teacher (`tasks`): step 1 pulls it offline
(`hardlabel models pull`) instead of training one, the recipe's own seed rows are the questions (some
held out), and the student is that teacher with LoRA adapters (or, with --student-layers, a pruned
copy of it, fine-tuned in full).
"""

from __future__ import annotations

import logging
import os
import signal
from pathlib import Path

import click
from click.core import ParameterSource
from rich.console import Console

from service.cli import CliError
from service.cli.demo.loop import DEFAULT_STUDENT_STEPS, Demo, Options
from service.cli.demo.plan import VALIDATION_ITEMS, build_plan
from service.cli.demo.server import bind_demo_socket, nvidia_gpu
from service.cli.demo.tasks import TASKS, DemoTask, find_task
from service.settings import get_settings

DEFAULT_ITEMS = 5000
DEFAULT_EVAL_ITEMS = 200
DEFAULT_TEACHER_MAX_STEPS = 2000
DEFAULT_TEACHER_TARGET = 0.95


def worker_environment(home: Path, on_gpu: bool, threads: int | None) -> dict[str, str]:
    """Environment of the worker, and through it of its training and evaluation processes."""
    env = {"HARDLABEL_HOME": str(home), "TOKENIZERS_PARALLELISM": "false"}
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    if not on_gpu and "VLLM_ENABLE_V1_MULTIPROCESSING" not in os.environ:
        # On CPU an in-process engine starts in seconds; the multiprocess one adds a process per model.
        env["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
    return env


def default_threads(on_gpu: bool) -> int | None:
    """Torch threads for training on CPU: 1 unless OMP_NUM_THREADS says otherwise.

    The demo's models are tiny: a second thread gains little on a quiet machine, and on a busy one
    the threads wait for each other (measured here under load: 0.62 s/step with 1 thread, 4.7 s/step
    with 2, for the teacher). With a GPU, torch's defaults.
    """
    if on_gpu:
        return None
    configured = os.environ.get("OMP_NUM_THREADS", "")
    return int(configured) if configured.isdigit() and int(configured) > 0 else 1


# Options a --task decides for itself: giving one of them with --task is refused.
TASK_DECIDES = {
    "teacher": "--teacher",
    "student": "--student",
    "recipe": "--recipe",
    "teacher_max_steps": "--teacher-max-steps",
    "teacher_target": "--teacher-target",
}


@click.command("demo")
@click.option("--no-serve", is_flag=True, help="Exit after the results instead of serving until Ctrl-C.")
@click.option(
    "--task",
    "task_name",
    default=None,
    metavar="NAME",
    help=f"Run on a real pretrained teacher, pulled offline: {', '.join(sorted(TASKS))}. "
    "Default: the built-in tiny addition teacher.",
)
@click.option(
    "--student-layers",
    type=click.IntRange(min=1),
    default=None,
    help="With --task: the student is the teacher pruned to N decoder layers, fully fine-tuned "
    "(default: LoRA adapters on the teacher).",
)
@click.option(
    "--teacher",
    default=None,
    metavar="MODEL",
    help="Teacher model (folder or hub id). Default: train a tiny addition teacher here (cached).",
)
@click.option(
    "--student",
    default=None,
    metavar="MODEL",
    help="Student model (folder or hub id). Default: a tiny Llama from scratch.",
)
@click.option(
    "--recipe",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Recipe file (default: examples/demo/arithmetic.yaml). Seeds with a `reference` get the verifier.",
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
    type=click.IntRange(1, 100_000),
    default=DEFAULT_EVAL_ITEMS,
    show_default=True,
    help="Held-out questions teacher and student are scored on.",
)
@click.option(
    "--home",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="State folder (default: HARDLABEL_HOME or .hardlabel): database, cached teacher, exports, runs.",
)
@click.option("--host", default=None, help="Address of the API (default: HARDLABEL_HOST or 127.0.0.1).")
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=None,
    help="Port of the API (default: HARDLABEL_PORT, else 8000 when free, else any free port).",
)
@click.option(
    "--student-steps",
    type=click.IntRange(min=1),
    default=None,
    help=f"Student training steps (default: {DEFAULT_STUDENT_STEPS} from scratch, one epoch with --student).",
)
@click.option(
    "--teacher-max-steps",
    type=click.IntRange(min=1),
    default=DEFAULT_TEACHER_MAX_STEPS,
    show_default=True,
    help="Most steps the tiny teacher trains.",
)
@click.option(
    "--teacher-target",
    type=click.FloatRange(0, 1),
    default=DEFAULT_TEACHER_TARGET,
    show_default=True,
    help="The tiny teacher trains until this share of validation questions is right.",
)
@click.option(
    "--threads",
    type=click.IntRange(min=1),
    default=None,
    help="Torch threads per training process (default on CPU: OMP_NUM_THREADS, else 1).",
)
def demo(
    no_serve: bool,
    task_name: str | None,
    student_layers: int | None,
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
    threads: int | None,
) -> None:
    """The whole distillation loop: teacher → samples → filters → dataset → student, through the API.

    Starts the database, the API and a worker; trains (or reuses) a tiny teacher; generates, filters,
    freezes and exports a dataset; trains a smaller student and scores it against the teacher on
    held-out questions. About 10 minutes on 2 CPU cores the first time, less once the teacher is
    cached. With a GPU and a hub: hardlabel demo --teacher MODEL --student MODEL --recipe FILE.
    With --task NAME: a real teacher pulled offline, its right answers kept by a verifier, and a
    student made from it (--task smollm2-addition: 16 minutes measured on 2 busy CPU cores).
    """
    for name, value in (("--teacher", teacher), ("--student", student)):
        if value is not None and not value.strip():
            raise CliError(f"{name}: give a model folder or hub id")
    if recipe is not None and not recipe.is_file():
        raise CliError(f"--recipe: file not found: {recipe}")
    settings = get_settings()
    settings = settings.model_copy(update={"home": (home or settings.home).expanduser().resolve()})
    # Everything that can be refused is refused before anything starts.
    task: DemoTask | None = None
    if task_name is not None:
        task = find_task(task_name)
        context = click.get_current_context()

        def given(parameter: str) -> bool:
            return context.get_parameter_source(parameter) not in (ParameterSource.DEFAULT, None)

        for parameter, flag in TASK_DECIDES.items():
            if given(parameter):
                raise CliError(
                    f"{flag} and --task: the task {task.name} brings its own teacher, recipe and student"
                )
        items = items if given("items") else task.items
        eval_items = eval_items if given("eval_items") else task.eval_items
        plan = task.plan(settings.home / "models", items, eval_items)
    else:
        if student_layers is not None:
            raise CliError("--student-layers needs --task (the built-in student is built from scratch)")
        plan = build_plan(recipe, teacher, items, eval_items, VALIDATION_ITEMS)
    demo_dir = settings.home / "demo"
    try:
        demo_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CliError(f"--home: cannot create {demo_dir}: {exc.strerror or exc}") from exc
    configured_port = settings.port if "HARDLABEL_PORT" in os.environ else None
    sock = bind_demo_socket(host or settings.host, port if port is not None else configured_port)
    on_gpu = nvidia_gpu()
    threads = threads or default_threads(on_gpu)
    options = Options(
        teacher=teacher,
        student=student,
        eval_items=eval_items,
        student_steps=student_steps,
        teacher_max_steps=teacher_max_steps,
        teacher_target=teacher_target,
        threads=threads,
        task=task,
        student_layers=student_layers if student_layers is not None or task is None else task.student_layers,
    )

    # This process's logs (API, demo) go to a file: the terminal is the narration's.
    log = logging.FileHandler(demo_dir / "demo.log", encoding="utf-8")
    log.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(log)
    root.setLevel(logging.INFO)
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
    console = Console(highlight=False)
    runner = Demo(console, options, plan, settings)
    finished = interrupted = False
    try:
        runner.run(sock, worker_environment(settings.home, on_gpu, threads))
        finished = True
        if not no_serve:
            console.print()
            console.print("[bold]The service keeps running[/] (API, UI, worker): Ctrl-C stops it.")
            assert runner.service is not None
            runner.service.serve_forever()
    except KeyboardInterrupt:
        # After the results, Ctrl-C is the documented way to stop serving; before, it interrupts.
        interrupted = not finished
        console.print("\ninterrupted" if interrupted else "")
        runner.cancel_active()
    finally:
        try:
            runner.close()
        finally:
            signal.signal(signal.SIGTERM, previous)
            root.removeHandler(log)
            log.close()
    if interrupted:
        raise SystemExit(130)


commands: list[click.Command] = [demo]
