"""`hardlabel submit` (a recipe file → a job over the API, followed live if asked) and `hardlabel status`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
from rich import box
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table

from service.cli import CliError
from service.cli.api_client import ApiClient, api_options
from service.cli.display import duration, follow, rate, when
from service.cli.runs import read_document_file
from service.statuses import ALL_STATUSES

# Seed sources read from files; the CLI inlines them so the job does not depend on the server's disk.
FILE_SOURCE_KEYS = ("path", "format", "hf_dataset", "split")


def self_contained_spec(recipe_file: Path) -> dict[str, Any]:
    """The recipe as JSON with file-based seeds replaced by their rows (read relative to the file).

    Validated locally first, so a bad recipe or template fails here with one line.
    """
    from generator.recipe import RecipeError, load_recipe, validate_recipe
    from generator.seeds import SeedSpec, rows_from_spec
    from generator.templates import TemplateError

    base_dir = recipe_file.resolve().parent
    try:
        recipe = load_recipe(recipe_file)
        validate_recipe(recipe, base_dir)
    except (RecipeError, TemplateError) as exc:
        raise CliError(f"{recipe_file}: {exc}") from exc
    spec: dict[str, Any] = recipe.model_dump(mode="json", by_alias=True, exclude_unset=True)
    seeds = dict(spec["seeds"])
    source = {key: seeds.pop(key) for key in FILE_SOURCE_KEYS if key in seeds}
    if "path" in source or "hf_dataset" in source:
        try:
            # The source's rows only: values/shuffle/sample/limit stay in the spec and apply on the server.
            seeds["records"] = rows_from_spec(SeedSpec(**source), seed=recipe.seed, base_dir=base_dir)
        except (RecipeError, ValueError) as exc:
            raise CliError(f"{recipe_file}: {exc}") from exc
        spec["seeds"] = seeds
    return spec


def parse_teacher_option(option: str) -> tuple[str, Any]:
    key, sep, raw = option.partition("=")
    if not sep or not key.strip():
        raise CliError(f"--teacher-option {option!r}: expected KEY=VALUE (e.g. enforce_eager=true)")
    try:
        value = json.loads(raw)
    except ValueError:
        value = raw  # plain text, e.g. dtype=float32
    return key.strip(), value


def teacher_config(
    model: str, engine: str | None, base_url: str | None, options: tuple[str, ...]
) -> dict[str, Any]:
    local = Path(model).expanduser()
    # A local folder is sent as an absolute path (workers may run elsewhere in the tree); a hub id
    # or a path that exists only on the worker machines goes as given.
    config: dict[str, Any] = {"model": str(local.resolve()) if local.exists() else model}
    if engine:
        config["engine"] = engine
    if base_url:
        config["base_url"] = base_url
        config.setdefault("engine", "openai")
    for option in options:
        key, value = parse_teacher_option(option)
        config[key] = value
    return config


# What a running job's phase means to a person watching it.
PHASE_LABEL = {"starting": "starting teacher", "generating": "generating"}


def money(value: float | None) -> str:
    """A cost in the price's currency: four significant digits, enough for cents of small jobs."""
    return "-" if value is None else f"{value:.4g}"


def usage_lines(job: dict[str, Any]) -> list[str]:
    """Cost, estimate and budget lines of a job (from its `usage`); none for an unpriced, unbudgeted one."""
    usage = job.get("usage") or {}
    total = usage.get("total") or {}
    estimate = usage.get("estimate")
    budget = usage.get("budget")
    lines = []
    if total.get("cost") is not None and (total.get("prompt_tokens") or total.get("completion_tokens")):
        teachers = usage.get("teachers") or []
        price = (teachers[0].get("price_per_million_tokens") or {}) if teachers else {}
        lines.append(
            f"cost {money(total['cost'])} (per million tokens: in {price.get('input', '-')} / "
            f"out {price.get('output', '-')})"
        )
    if estimate:
        cost = f" · cost ~{money(estimate['cost'])}" if estimate.get("cost") is not None else ""
        completion = (
            f"≤ {estimate['completion_tokens']:,}"
            if estimate["completion_tokens_bounded"]
            else f"~{estimate['completion_tokens']:,} (a list stage has no max_items: no bound)"
        )
        lines.append(
            f"estimate {estimate['requests']:,} requests · completion tokens {completion} · "
            f"prompt tokens ~{estimate['prompt_tokens']:,}{cost}"
        )
    if budget:
        limits = [
            f"{key} {budget[key]:,}" if isinstance(budget[key], int) else f"{key} {budget[key]:g}"
            for key in ("max_cost", "max_completion_tokens")
            if budget.get(key) is not None
        ]
        reached = f" · reached: {budget['reached']}" if budget.get("reached") else ""
        lines.append(f"budget {' · '.join(limits)}{reached}")
    return lines


def follow_job(client: ApiClient, job_id: int, *, interval: float, console: Console) -> dict[str, Any]:
    """Show a live progress bar until the job finishes; returns the final job."""
    columns = (
        TextColumn("job {task.fields[job_id]} [bold]{task.fields[status]}[/]"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn(
            "items · {task.fields[samples]} samples · {task.fields[tokens]}{task.fields[cost]} · "
            "ETA {task.fields[eta]}"
        ),
    )
    with Progress(*columns, console=console, transient=False) as progress:
        bar = progress.add_task(
            "job", total=None, job_id=job_id, status="", samples=0, tokens="-", cost="", eta="-"
        )

        def show(job: dict[str, Any]) -> None:
            p = job["progress"]
            progress.update(
                bar,
                total=p["items_total"] or None,
                completed=p["items_done"],
                status=PHASE_LABEL.get(p["phase"], job["status"]),
                samples=f"{p['samples_written']:,}",
                tokens=rate(p["tokens_out_per_second"], "tok/s"),
                cost=_cost_field(job),
                eta=duration(p["eta_seconds"]),
            )

        def fetch() -> dict[str, Any]:
            job: dict[str, Any] = client.get(f"/v1/jobs/{job_id}")
            return job

        return follow(fetch(), fetch, show, interval)


def _cost_field(job: dict[str, Any]) -> str:
    spent = ((job.get("usage") or {}).get("total") or {}).get("cost")
    return "" if spent is None else f" · cost {money(spent)}"


@click.command("submit")
@click.argument("recipe", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--teacher",
    "models",
    multiple=True,
    help="Teacher model: a local folder, or a model id. Repeat it for several teachers (each answers "
    "every item); --engine, --base-url and -o apply to each.",
)
@click.option(
    "--teachers-file",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    default=None,
    help="Several teachers of different engines or options: a YAML/JSON list of teacher configs.",
)
@click.option(
    "--engine", type=click.Choice(["vllm", "openai"]), default=None, help="Teacher backend (default vllm)."
)
@click.option("--base-url", default=None, help="OpenAI-compatible server URL (implies --engine openai).")
@click.option(
    "--teacher-option",
    "-o",
    "teacher_options",
    multiple=True,
    metavar="KEY=VALUE",
    help="More teacher settings, e.g. -o enforce_eager=true -o dtype=float32 (JSON values when they parse).",
)
@click.option(
    "--seed", type=click.IntRange(min=0), default=None, help="Sampling seed (default: the recipe's)."
)
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Generate at most this many items.")
@click.option("--priority", type=int, default=0, show_default=True, help="Higher runs first.")
@click.option("--shard-size", type=click.IntRange(min=1), default=None, help="Items per queue task.")
@click.option("--chunk-size", type=click.IntRange(min=1), default=None, help="Items per checkpoint.")
@click.option(
    "--max-cost",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Budget: stop the job (samples kept) once it has cost this much (needs the teacher's "
    'price_per_million_tokens, e.g. -o \'price_per_million_tokens={"input": 0.5, "output": 1.5}\').',
)
@click.option(
    "--max-completion-tokens",
    type=click.IntRange(min=1),
    default=None,
    help="Budget: stop the job (samples kept) once the teacher has written this many tokens.",
)
@click.option("--idempotency-key", default=None, help="Resubmitting with the same key returns the same job.")
@click.option("--follow", is_flag=True, help="Show a live progress bar until the job ends.")
@click.option(
    "--interval",
    type=click.FloatRange(min=0.1),
    default=1.0,
    show_default=True,
    help="--follow poll period (s).",
)
@api_options
def submit(
    recipe: Path,
    models: tuple[str, ...],
    teachers_file: Path | None,
    engine: str | None,
    base_url: str | None,
    teacher_options: tuple[str, ...],
    seed: int | None,
    limit: int | None,
    priority: int,
    shard_size: int | None,
    chunk_size: int | None,
    max_cost: float | None,
    max_completion_tokens: int | None,
    idempotency_key: str | None,
    follow: bool,
    interval: float,
    api_url: str | None,
    token: str | None,
) -> None:
    """Submit RECIPE (YAML/JSON) as a generation job; prints the job id."""
    if not recipe.is_file():
        raise CliError(f"recipe file not found: {recipe}")
    body: dict[str, Any] = {
        "recipe": self_contained_spec(recipe),
        **_teachers_body(models, teachers_file, engine, base_url, teacher_options),
        "priority": priority,
    }
    for key, value in (
        ("seed", seed),
        ("limit", limit),
        ("shard_size", shard_size),
        ("chunk_size", chunk_size),
    ):
        if value is not None:
            body[key] = value
    budget = {"max_cost": max_cost, "max_completion_tokens": max_completion_tokens}
    if any(value is not None for value in budget.values()):
        body["budget"] = {key: value for key, value in budget.items() if value is not None}
    headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
    err = Console(stderr=True)
    with ApiClient(api_url, token) as client:
        job = client.post("/v1/jobs", body, headers=headers)
        p = job["progress"]
        err.print(
            f"job {job['id']} {job['status']}: {p['items_total']} items in {len(job['shards'])} shards "
            f"(recipe {job['recipe']['name']} v{job['recipe']['version']})"
        )
        for line in usage_lines(job):
            err.print(line, soft_wrap=True)
        click.echo(job["id"])
        if not follow:
            return
        try:
            final = follow_job(client, job["id"], interval=interval, console=err)
        except KeyboardInterrupt:
            err.print(f"stopped following; the job goes on (`hardlabel status {job['id']}`)")
            raise SystemExit(130) from None
    p = final["progress"]
    for line in usage_lines(final):
        err.print(line, soft_wrap=True)
    if final["status"] != "succeeded":
        reason = final.get("last_error") or final.get("error") or final["status"]
        err.print(f"job {final['id']} {final['status']}: {reason}")
        raise SystemExit(1)
    elapsed = p["elapsed_seconds"] or 0.0
    err.print(
        f"job {final['id']} succeeded: {p['items_done']} items, {p['samples_written']} samples, "
        f"{p['tokens_out']:,} tokens out in {elapsed:.1f}s ({rate(p['items_per_second'], 'items/s')})"
    )


def _teachers_body(
    models: tuple[str, ...],
    teachers_file: Path | None,
    engine: str | None,
    base_url: str | None,
    options: tuple[str, ...],
) -> dict[str, Any]:
    """`{"teacher": ...}` for one teacher, `{"teachers": [...]}` for several."""
    if teachers_file is not None:
        if models:
            raise CliError("give --teacher or --teachers-file, not both")
        configs = read_document_file(teachers_file, "--teachers-file")
        if not isinstance(configs, list) or not all(isinstance(c, dict) for c in configs):
            raise CliError(f"--teachers-file {teachers_file}: expected a list of teacher configs")
        if engine or base_url or options:
            raise CliError(
                "--engine, --base-url and -o do not apply to --teachers-file: set them in the file"
            )
    elif models:
        configs = [teacher_config(model, engine, base_url, options) for model in models]
    else:
        raise CliError("give --teacher MODEL (repeat it for several teachers) or --teachers-file")
    return {"teacher": configs[0]} if len(configs) == 1 else {"teachers": configs}


def _jobs_table(jobs: list[dict[str, Any]]) -> Table:
    table = Table("id", box=box.SIMPLE_HEAD)
    # A status is never cut ("succee…"): the other columns give way on a narrow terminal.
    table.add_column("status", no_wrap=True, min_width=len("cancelled"))
    for header in ("recipe", "items", "%", "samples", "items/s", "ETA", "created"):
        table.add_column(header)
    for job in jobs:
        p = job["progress"]
        table.add_row(
            str(job["id"]),
            job["status"],
            str(job["recipe_id"]),
            f"{p['items_done']}/{p['items_total']}",
            f"{100 * p['fraction']:.0f}",
            f"{p['samples_written']:,}",
            rate(p["items_per_second"], ""),
            duration(p["eta_seconds"]),
            when(job["created_at"]),
        )
    return table


def _samples_per_second(job: dict[str, Any]) -> float | None:
    rate_: float | None = ((job.get("usage") or {}).get("total") or {}).get("samples_per_second")
    return rate_


def _job_report(job: dict[str, Any], console: Console) -> None:
    p = job["progress"]
    recipe = job["recipe"]
    teachers = job.get("teachers") or [job["teacher"]]
    named = ", ".join(f"{t.get('model')} ({t.get('engine', 'vllm')})" for t in teachers)
    lines = [
        f"[bold]job {job['id']}[/] {job['status']} · "
        f"recipe {recipe['name']} v{recipe['version']} (id {recipe['id']})",
        f"{'teachers' if len(teachers) > 1 else 'teacher'} {named} · seed {job['seed']} · "
        f"priority {job['priority']}",
        f"items {p['items_done']}/{p['items_total']} ({100 * p['fraction']:.0f}%) · "
        f"samples {p['samples_written']:,} · tokens in {p['tokens_in']:,} / out {p['tokens_out']:,}",
        f"{rate(p['items_per_second'], 'items/s')} · {rate(_samples_per_second(job), 'samples/s')} · "
        f"{rate(p['tokens_out_per_second'], 'tok/s')} · ETA {duration(p['eta_seconds'])}",
        f"created {when(job['created_at'])} · started {when(job['started_at'])} · "
        f"finished {when(job['finished_at'])}",
    ]
    for line in lines:
        console.print(line)
    for line in usage_lines(job):  # whole lines: a test or a log grep finds them as printed
        console.print(line, soft_wrap=True)
    several = len(teachers) > 1
    if several:
        for one in (job.get("usage") or {}).get("teachers") or []:
            console.print(
                f"teacher {one['index']} {one['model']}: items {one['items_done']} · samples "
                f"{one['samples']:,} · tokens in {one['prompt_tokens']:,} / out {one['completion_tokens']:,}"
                + (f" · cost {money(one['cost'])}" if one.get("cost") is not None else ""),
                soft_wrap=True,
            )
    shards = Table(
        "shard",
        *(["teacher"] if several else []),
        "items",
        "status",
        "done",
        "attempts",
        "worker",
        "last error",
    )
    for shard in job["shards"]:
        shards.add_row(
            str(shard["id"]),
            *([str(shard.get("teacher_index", 0))] if several else []),
            f"{shard['start']}–{shard['end']}",
            shard["status"],
            str(shard["cursor"]),
            f"{shard['attempts']}/{shard['max_attempts']}",
            shard["worker_id"] or "-",
            (shard["last_error"] or "-")[:80],
        )
    console.print(shards)
    if job["last_error"]:
        console.print(f"last error: {job['last_error']}")


@click.command("status")
@click.argument("job_id", type=click.IntRange(min=1), required=False)
@click.option(
    "--status",
    "status_filter",
    type=click.Choice(ALL_STATUSES),
    default=None,
    help="Only jobs in this status (list view).",
)
@click.option("--limit", type=click.IntRange(1, 500), default=20, show_default=True, help="Jobs to list.")
@api_options
def status(
    job_id: int | None, status_filter: str | None, limit: int, api_url: str | None, token: str | None
) -> None:
    """Show recent jobs, or one job's progress and shards."""
    console = Console()
    with ApiClient(api_url, token) as client:
        if job_id is None:
            page = client.get("/v1/jobs", status=status_filter, limit=limit)
            console.print(_jobs_table(page["items"]))
            if page["total"] > len(page["items"]):
                console.print(f"{len(page['items'])} of {page['total']} jobs (use --limit or --status)")
            return
        _job_report(client.get(f"/v1/jobs/{job_id}"), console)


commands: list[click.Command] = [submit, status]
