"""`hardlabel run submit|status|follow|cancel|resume|results|items`: training runs on the service.

Thin clients of /v1/training-runs (HARDLABEL_API_URL + HARDLABEL_TOKEN), so the CLI shows what the
API stores. `hardlabel train` is the standalone trainer without a service; this group is the
service's queued, tracked and evaluated runs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
import yaml
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table

from service.cli import CliError
from service.cli.api_client import ApiClient, api_options
from service.cli.display import duration, follow, when
from service.statuses import ALL_STATUSES

ITEM_FILTERS = ("all", "disagreements", "student_wrong", "teacher_wrong")
SCORERS = ("exact", "normalized", "numeric", "regex")
# (row label, results key) of the evaluation table, in the order models are scored.
RESULT_ROWS = (
    ("teacher", "teacher"),
    ("student before", "student_before"),
    ("student after", "student_after"),
)
ANSWER_CHARS = 60


def read_document_file(path: Path, option: str) -> Any:
    """A JSON or YAML file's document (YAML is a superset of JSON, so one parser reads both)."""
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise CliError(f"{option} {path}: {exc.strerror or exc}") from exc
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        line = f" line {where.line + 1}" if where is not None else ""
        raise CliError(f"{option} {path}:{line} not JSON or YAML ({getattr(exc, 'problem', exc)})") from exc


def read_mapping_file(path: Path, option: str) -> dict[str, Any]:
    """A JSON or YAML file holding one mapping."""
    document = read_document_file(path, option)
    if not isinstance(document, dict):
        raise CliError(f"{option} {path}: expected a mapping of settings, got {type(document).__name__}")
    return document


def parse_setting(option: str, flag: str) -> tuple[str, Any]:
    key, sep, raw = option.partition("=")
    if not sep or not key.strip():
        raise CliError(f"{flag} {option!r}: expected KEY=VALUE (e.g. max_steps=200)")
    try:
        value = json.loads(raw)
    except ValueError:
        value = raw
    return key.strip(), value


def local_or_given(path: str) -> str:
    """A path that exists here is sent absolute (the workers may run elsewhere in the tree)."""
    local = Path(path).expanduser()
    return str(local.resolve()) if local.exists() else path


def student_spec(
    student: str | None, from_scratch: bool, shapes: dict[str, int | None], spec: dict[str, Any]
) -> dict[str, Any]:
    given_shapes = {key: value for key, value in shapes.items() if value is not None}
    if student and (from_scratch or given_shapes):
        raise CliError("give --student MODEL or --from-scratch (with its shape options), not both")
    if student:
        return {"model": local_or_given(student)}
    if from_scratch or given_shapes:
        earlier = (spec.get("student") or {}).get("from_scratch") or {}
        return {"from_scratch": {**earlier, **given_shapes}}
    if spec.get("student"):
        return dict(spec["student"])
    raise CliError("no student: give --student MODEL (a folder or hub id) or --from-scratch")


def evaluation_spec(
    base: dict[str, Any],
    *,
    enabled: bool | None,
    eval_set: str | None,
    scorer: str | None,
    pattern: str | None,
    max_items: int | None,
    reference_field: str | None,
    max_new_tokens: int | None,
) -> dict[str, Any]:
    evaluation = dict(base)
    if enabled is not None:
        evaluation["enabled"] = enabled
    if eval_set is not None:
        evaluation["eval_set"] = {**(evaluation.get("eval_set") or {}), "path": local_or_given(eval_set)}
    for key, value in (
        ("scorer", scorer),
        ("pattern", pattern),
        ("max_items", max_items),
        ("reference_field", reference_field),
        ("max_new_tokens", max_new_tokens),
    ):
        if value is not None:
            evaluation[key] = value
    if evaluation.get("eval_set") and evaluation["eval_set"].get("path"):
        evaluation["eval_set"]["path"] = local_or_given(str(evaluation["eval_set"]["path"]))
    return evaluation


# --- output ------------------------------------------------------------------------------------


def _console(*, stderr: bool = False) -> Console:
    """Messages stay one line (soft wrap) whatever the terminal width; tables use the width."""
    return Console(stderr=stderr, soft_wrap=True)


def _pct(score: dict[str, Any] | None) -> str:
    return f"{100 * score['accuracy']:.1f}%" if score else "-"


def results_table(results: dict[str, Any]) -> Table:
    """Teacher / student before / student after, and the after/teacher ratio, as one table."""
    ratio = results.get("ratio")
    table = Table(
        "model",
        "path",
        "correct",
        "accuracy",
        title=f"{results['items']:,} items from {results['source']} · scorer {results['scorer']}",
        caption=f"student after / teacher: {ratio:.3f}" if ratio is not None else "ratio: pending",
    )
    for label, key in RESULT_ROWS:
        score = results.get(key)
        table.add_row(
            label,
            score["model"] if score else "-",
            f"{score['correct']:,}/{score['items']:,}" if score else "-",
            _pct(score),
        )
    return table


def _short(text: str | None) -> str:
    if text is None:
        return "-"
    flat = " ".join(text.split())
    return flat if len(flat) <= ANSWER_CHARS else flat[: ANSWER_CHARS - 1] + "…"


def _answer(answer: dict[str, Any] | None) -> str:
    if answer is None:
        return "-"
    return f"{'✓' if answer['correct'] else '✗'} {_short(answer['answer'])}"


def items_table(items: list[dict[str, Any]], *, before: bool) -> Table:
    columns = [
        "#",
        "question",
        "reference",
        "teacher",
        *(["student before"] if before else []),
        "student after",
    ]
    table = Table(*columns)
    for item in items:
        cells = [
            str(item["index"]),
            _short(item["question"]),
            _short(item["reference"]),
            _answer(item["teacher"]),
        ]
        if before:
            cells.append(_answer(item["student_before"]))
        cells.append(_answer(item["student_after"]))
        table.add_row(*cells)
    return table


def _student_name(run: dict[str, Any]) -> str:
    student = run["student"]
    return str(student.get("model") or "from scratch")


def _steps(progress: dict[str, Any]) -> str:
    total = progress["total_steps"]
    return f"{progress['step']:,}/{total:,}" if total else f"{progress['step']:,}"


def run_report(run: dict[str, Any], console: Console) -> None:
    p = run["progress"]
    dataset = run["dataset"]
    console.print(
        f"[bold]training run {run['id']}[/] {run['status']} · phase {p['phase'] or '-'} · "
        f"{run['method']} fine-tune of {_student_name(run)} on {dataset['name']} v{dataset['version']} "
        f"(id {dataset['id']})"
    )
    rate = f"{p['tokens_per_second']:,.0f} tok/s" if p["tokens_per_second"] else "- tok/s"
    eta = duration(p["eta_seconds"])
    console.print(f"step {_steps(p)} ({100 * p['fraction']:.0f}%) · {rate} · ETA {eta}")
    console.print(
        f"created {when(run['created_at'])} · started {when(run['started_at'])} · "
        f"finished {when(run['finished_at'])} · attempts {run['attempts']}"
    )
    if run["model_path"]:
        console.print(f"model {run['model_path']}")
    if run["last_error"]:
        console.print(f"last error: {run['last_error']}")
    if run["results"]:
        console.print(results_table(run["results"]))


def runs_table(runs: list[dict[str, Any]]) -> Table:
    table = Table("id", "status", "phase", "dataset", "student", "method", "step", "ETA", "created")
    for run in runs:
        p = run["progress"]
        table.add_row(
            str(run["id"]),
            run["status"],
            p["phase"] or "-",
            str(run["dataset_id"]),
            _short(_student_name(run)),
            run["method"],
            _steps(p),
            duration(p["eta_seconds"]),
            when(run["created_at"]),
        )
    return table


# --- following ---------------------------------------------------------------------------------


def latest_loss(client: ApiClient, run_id: int, after_step: int | None) -> tuple[int | None, float | None]:
    """(last logged step, its loss) after `after_step`, reading the metric pages to the end."""
    last_step, loss = after_step, None
    while True:
        page = client.get(f"/v1/training-runs/{run_id}/metrics", after_step=last_step)
        for metric in page["items"]:
            last_step = metric["step"]
            if metric["loss"] is not None:
                loss = metric["loss"]
        if len(page["items"]) >= page["total"] or not page["items"]:
            return last_step, loss


def follow_run(client: ApiClient, run_id: int, *, interval: float, console: Console) -> dict[str, Any]:
    """A live bar (step/total, loss, ETA, phase) until the run ends; returns the final run."""
    run = client.get(f"/v1/training-runs/{run_id}")
    columns = (
        TextColumn("run {task.fields[run_id]} [bold]{task.fields[status]}[/] {task.fields[phase]}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("steps · loss {task.fields[loss]} · ETA {task.fields[eta]}"),
    )
    last_step: int | None = None
    loss: float | None = None
    with Progress(*columns, console=console, transient=False) as progress:
        bar = progress.add_task("run", total=None, run_id=run_id, status="", phase="", loss="-", eta="-")

        def show(run: dict[str, Any]) -> None:
            nonlocal last_step, loss
            step, new_loss = latest_loss(client, run_id, last_step)
            last_step, loss = step, new_loss if new_loss is not None else loss
            p = run["progress"]
            progress.update(
                bar,
                total=p["total_steps"] or None,
                completed=p["step"],
                status=run["status"],
                phase=p["phase"] if p["phase"] not in (None, run["status"]) else "",
                loss=f"{loss:.4f}" if loss is not None else "-",
                eta=duration(p["eta_seconds"]),
            )

        return follow(run, lambda: client.get(f"/v1/training-runs/{run_id}"), show, interval)


def follow_to_end(client: ApiClient, run_id: int, interval: float) -> None:
    """Follow, then print the results table (stdout); exit 1 when the run did not succeed."""
    err = _console(stderr=True)
    try:
        final = follow_run(client, run_id, interval=interval, console=err)
    except KeyboardInterrupt:
        err.print(f"stopped following; the run goes on (`hardlabel run status {run_id}`)")
        raise SystemExit(130) from None
    if final["status"] != "succeeded":
        err.print(f"training run {run_id} {final['status']}: {final.get('last_error') or final['status']}")
        raise SystemExit(1)
    if final["results"]:
        _console().print(results_table(final["results"]))
    else:
        err.print(f"training run {run_id} succeeded (not evaluated); model {final['model_path']}")


interval_option = click.option(
    "--interval", type=click.FloatRange(min=0.1), default=2.0, show_default=True, help="Poll period (s)."
)


# --- commands ----------------------------------------------------------------------------------


@click.group("run")
def run_group() -> None:
    """Training runs on the service: submit, status, follow, cancel, resume, results, items."""


@run_group.command("submit")
@click.argument("dataset_id", type=click.IntRange(min=1))
@click.option("--student", default=None, help="Student model: a local folder or a model id.")
@click.option("--from-scratch", is_flag=True, help="Train a new tiny Llama instead (shapes below).")
@click.option("--layers", type=click.IntRange(min=1), default=None, help="--from-scratch: layers.")
@click.option("--hidden", type=click.IntRange(min=8), default=None, help="--from-scratch: hidden size.")
@click.option("--heads", type=click.IntRange(min=1), default=None, help="--from-scratch: attention heads.")
@click.option("--vocab", type=click.IntRange(min=1), default=None, help="--from-scratch: tokenizer vocab.")
@click.option("--method", type=click.Choice(["full", "lora"]), default=None, help="Default full.")
@click.option(
    "--spec",
    "spec_file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="A whole training-run body (JSON/YAML, as POSTed to /v1/training-runs); options override it.",
)
@click.option(
    "--hyperparameters",
    "hyperparameters_file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="TRL SFT settings as a JSON/YAML mapping (learning_rate, max_steps, ...).",
)
@click.option(
    "--set",
    "settings",
    multiple=True,
    metavar="KEY=VALUE",
    help="One hyper-parameter, e.g. --set max_steps=200 (JSON values when they parse); repeat.",
)
@click.option(
    "--evaluation",
    "evaluation_file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="The evaluation block as a JSON/YAML mapping (eval_set, scorer, max_items, teacher, ...).",
)
@click.option("--eval/--no-eval", "evaluate", default=None, help="Score teacher vs student (default on).")
@click.option(
    "--eval-set", default=None, help="Score on this JSONL/Parquet/HF file instead of the test split."
)
@click.option("--scorer", type=click.Choice(SCORERS), default=None, help="Default normalized.")
@click.option("--pattern", default=None, help="--scorer regex: the final-answer pattern.")
@click.option("--max-items", type=click.IntRange(min=1), default=None, help="Score at most this many items.")
@click.option("--reference-field", default=None, help="Reference from the seed row's inputs[FIELD].")
@click.option("--max-new-tokens", type=click.IntRange(min=1), default=None, help="Answer length cap.")
@click.option("--priority", type=int, default=None, help="Higher runs first.")
@click.option("--follow", is_flag=True, help="Show a live progress bar until the run ends, then the results.")
@interval_option
@api_options
def submit(
    dataset_id: int,
    student: str | None,
    from_scratch: bool,
    layers: int | None,
    hidden: int | None,
    heads: int | None,
    vocab: int | None,
    method: str | None,
    spec_file: Path | None,
    hyperparameters_file: Path | None,
    settings: tuple[str, ...],
    evaluation_file: Path | None,
    evaluate: bool | None,
    eval_set: str | None,
    scorer: str | None,
    pattern: str | None,
    max_items: int | None,
    reference_field: str | None,
    max_new_tokens: int | None,
    priority: int | None,
    follow: bool,
    interval: float,
    api_url: str | None,
    token: str | None,
) -> None:
    """Queue a student fine-tune on a dataset version.

    Trains on version DATASET_ID and prints the run id (with --follow: then its progress and results).
    """
    spec = read_mapping_file(spec_file, "--spec") if spec_file else {}
    body: dict[str, Any] = {**spec, "dataset_id": dataset_id}
    shapes = {"layers": layers, "hidden": hidden, "heads": heads, "vocab": vocab}
    body["student"] = student_spec(student, from_scratch, shapes, spec)
    if method is not None:
        body["method"] = method
    hyperparameters = dict(spec.get("hyperparameters") or {})
    if hyperparameters_file is not None:
        hyperparameters.update(read_mapping_file(hyperparameters_file, "--hyperparameters"))
    hyperparameters.update(parse_setting(option, "--set") for option in settings)
    if hyperparameters:
        body["hyperparameters"] = hyperparameters
    evaluation = dict(spec.get("evaluation") or {})
    if evaluation_file is not None:
        evaluation.update(read_mapping_file(evaluation_file, "--evaluation"))
    evaluation = evaluation_spec(
        evaluation,
        enabled=evaluate,
        eval_set=eval_set,
        scorer=scorer,
        pattern=pattern,
        max_items=max_items,
        reference_field=reference_field,
        max_new_tokens=max_new_tokens,
    )
    if evaluation:
        body["evaluation"] = evaluation
    if priority is not None:
        body["priority"] = priority
    err = _console(stderr=True)
    with ApiClient(api_url, token) as client:
        run = client.post("/v1/training-runs", body)
        dataset = run["dataset"]
        err.print(
            f"training run {run['id']} {run['status']}: {run['method']} fine-tune of {_student_name(run)} "
            f"on {dataset['name']} v{dataset['version']}"
        )
        click.echo(run["id"])
        if follow:
            follow_to_end(client, int(run["id"]), interval)


@run_group.command("status")
@click.argument("run_id", type=click.IntRange(min=1), required=False)
@click.option(
    "--status",
    "status_filter",
    type=click.Choice(ALL_STATUSES),
    default=None,
    help="Only runs in this status (list view).",
)
@click.option(
    "--dataset", "dataset_id", type=click.IntRange(min=1), default=None, help="Only runs on this version."
)
@click.option("--limit", type=click.IntRange(1, 500), default=20, show_default=True, help="Runs to list.")
@api_options
def status(
    run_id: int | None,
    status_filter: str | None,
    dataset_id: int | None,
    limit: int,
    api_url: str | None,
    token: str | None,
) -> None:
    """Show recent runs, or one run's progress and results."""
    console = _console()
    with ApiClient(api_url, token) as client:
        if run_id is None:
            page = client.get("/v1/training-runs", status=status_filter, dataset_id=dataset_id, limit=limit)
            console.print(runs_table(page["items"]))
            if page["total"] > len(page["items"]):
                console.print(f"{len(page['items'])} of {page['total']} runs (use --limit or --status)")
            return
        run_report(client.get(f"/v1/training-runs/{run_id}"), console)


@run_group.command("follow")
@click.argument("run_id", type=click.IntRange(min=1))
@interval_option
@api_options
def follow_command(run_id: int, interval: float, api_url: str | None, token: str | None) -> None:
    """Follow a run live until it ends, then print its results.

    The bar shows step/total, the latest loss, the ETA and the phase.
    """
    with ApiClient(api_url, token) as client:
        follow_to_end(client, run_id, interval)


@run_group.command("cancel")
@click.argument("run_id", type=click.IntRange(min=1))
@api_options
def cancel(run_id: int, api_url: str | None, token: str | None) -> None:
    """Cancel a queued or running run.

    Its checkpoints stay on disk; `hardlabel run resume RUN_ID` continues from the last one.
    """
    with ApiClient(api_url, token) as client:
        run = client.post(f"/v1/training-runs/{run_id}/cancel")
    click.echo(f"training run {run['id']} {run['status']} at step {_steps(run['progress'])}")


@run_group.command("resume")
@click.argument("run_id", type=click.IntRange(min=1))
@click.option("--follow", is_flag=True, help="Show a live progress bar until the run ends.")
@interval_option
@api_options
def resume(run_id: int, follow: bool, interval: float, api_url: str | None, token: str | None) -> None:
    """Queue a cancelled or failed run again.

    It continues from its last checkpoint.
    """
    with ApiClient(api_url, token) as client:
        run = client.post(f"/v1/training-runs/{run_id}/resume")
        _console(stderr=True).print(
            f"training run {run['id']} {run['status']}: continues from step {run['progress']['step']:,}"
        )
        if follow:
            follow_to_end(client, run_id, interval)


@run_group.command("results")
@click.argument("run_id", type=click.IntRange(min=1))
@click.option("--json", "as_json", is_flag=True, help="Print the results object as JSON.")
@api_options
def results(run_id: int, as_json: bool, api_url: str | None, token: str | None) -> None:
    """Print a run's results table.

    Teacher, student before and after training (correct, accuracy) and the after/teacher ratio.
    """
    with ApiClient(api_url, token) as client:
        run = client.get(f"/v1/training-runs/{run_id}")
    table = run["results"]
    if not table:
        phase = run["progress"]["phase"] or run["status"]
        enabled = run["evaluation"].get("enabled", True)
        why = "evaluation is disabled for it" if not enabled else f"it is {phase}"
        raise CliError(f"training run {run_id} has no results: {why}")
    if as_json:
        click.echo(json.dumps(table, indent=2, ensure_ascii=False))
        return
    _console().print(results_table(table))


@run_group.command("items")
@click.argument("run_id", type=click.IntRange(min=1))
@click.option(
    "--filter",
    "item_filter",
    type=click.Choice(ITEM_FILTERS),
    default="all",
    show_default=True,
    help="disagreements: teacher and trained student differ in correctness or answer text.",
)
@click.option("--limit", type=click.IntRange(1, 500), default=20, show_default=True, help="Items per page.")
@click.option("--offset", type=click.IntRange(min=0), default=0, show_default=True, help="Items to skip.")
@click.option("--before", is_flag=True, help="Also show the student's answers before training.")
@click.option("--json", "as_json", is_flag=True, help="Print the page as JSON.")
@api_options
def items(
    run_id: int,
    item_filter: str,
    limit: int,
    offset: int,
    before: bool,
    as_json: bool,
    api_url: str | None,
    token: str | None,
) -> None:
    """List a run's scored evaluation items.

    The teacher's and the student's answers side by side, with each verdict (✓/✗).
    """
    with ApiClient(api_url, token) as client:
        page = client.get(
            f"/v1/training-runs/{run_id}/evaluation/items", filter=item_filter, limit=limit, offset=offset
        )
    if as_json:
        click.echo(json.dumps(page, indent=2, ensure_ascii=False))
        return
    console = _console()
    console.print(items_table(page["items"], before=before))
    shown = f"{offset + 1}–{offset + len(page['items'])}" if page["items"] else "none"
    console.print(f"items {shown} of {page['total']:,} ({item_filter})")


commands: list[click.Command] = [run_group]
