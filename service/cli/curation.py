"""Curation over the API: `hardlabel filter`, `hardlabel review`, `hardlabel dataset create|list|show`.

Each command is a thin client of a /v1 route, so the CLI shows exactly what the API stores.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from service.cli import CliError
from service.cli.api_client import ApiClient, api_options
from service.cli.display import count_bar, follow
from service.cli.filter_types import filter_types_help


def parse_filter(option: str) -> dict[str, Any]:
    """`TYPE`, `TYPE:key=value,key=value` (values read as JSON when they parse), or a JSON object.

    A `name=...` pair names the verdicts; e.g. `length:min=5,max=2000`, `verifier:mode=numeric`,
    `regex:name=no_refusal,pattern=as an AI,ignore_case=true`.
    """
    text = option.strip()
    if text.startswith("{"):
        try:
            document = json.loads(text)
        except ValueError as exc:
            raise CliError(f"--filter {option!r}: not JSON ({exc})") from exc
        if not isinstance(document, dict):
            raise CliError(f"--filter {option!r}: expected a JSON object")
        return document
    kind, _, rest = text.partition(":")
    if not kind:
        raise CliError(f"--filter {option!r}: expected TYPE or TYPE:key=value,...")
    params: dict[str, Any] = {}
    for pair in filter(None, (p.strip() for p in rest.split(","))):
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise CliError(f"--filter {option!r}: {pair!r} is not key=value")
        try:
            params[key.strip()] = json.loads(raw)
        except ValueError:
            params[key.strip()] = raw
    spec: dict[str, Any] = {"type": kind}
    if "name" in params:
        spec["name"] = str(params.pop("name"))
    spec["params"] = params
    return spec


def follow_run(client: ApiClient, run: dict[str, Any], console: Console, interval: float) -> dict[str, Any]:
    """Poll a filter run until it has finished, with a bar of the samples judged."""
    with count_bar(console) as progress:
        bar = progress.add_task(f"filter run {run['id']}", total=run["progress"]["items_total"] or None)

        def show(run: dict[str, Any]) -> None:
            p = run["progress"]
            progress.update(bar, completed=p["items_done"], total=p["items_total"])

        return follow(run, lambda: client.get(f"/v1/filter-runs/{run['id']}"), show, interval)


def follow_freeze(
    client: ApiClient, version: dict[str, Any], console: Console, interval: float
) -> dict[str, Any]:
    """Poll a queued version until its freeze task has finished, with a bar of the rows copied."""
    with count_bar(console) as progress:
        description = f"freezing {version['name']} v{version['version']}"
        bar = progress.add_task(description, total=version["rows_total"])

        def show(version: dict[str, Any]) -> None:
            progress.update(bar, completed=version["rows_done"], total=version["rows_total"])

        return follow(version, lambda: client.get(f"/v1/datasets/{version['id']}"), show, interval)


def print_counts(console: Console, run: dict[str, Any]) -> None:
    table = Table("filter", "passed", "failed")
    for name, counts in run["counts"].items():
        table.add_row(name, f"{counts['passed']:,}", f"{counts['failed']:,}")
    console.print(table)


@click.command("filter", epilog=filter_types_help())
@click.argument("job_ids", nargs=-1, required=True, type=click.IntRange(min=1))
@click.option(
    "--filter",
    "filters",
    multiple=True,
    required=True,
    help="TYPE[:key=value,...] (the types are listed below) or a JSON object "
    '{"type": ..., "name": ..., "params": {...}}; repeat for several.',
)
@click.option("--stage", default=None, help="Recipe stage (default: the jobs' answer stage).")
@click.option("--follow/--no-follow", default=True, show_default=True, help="Show progress until it ends.")
@click.option("--interval", type=float, default=1.0, show_default=True, help="Seconds between polls.")
@api_options
def filter_command(
    job_ids: tuple[int, ...],
    filters: tuple[str, ...],
    stage: str | None,
    follow: bool,
    interval: float,
    api_url: str | None,
    token: str | None,
) -> None:
    """Run filters over the samples of JOB_IDS (queued for workers); prints the run id and counts."""
    body = {
        "selection": {"job_ids": list(job_ids), **({"stage": stage} if stage else {})},
        "filters": [parse_filter(f) for f in filters],
    }
    console = Console(stderr=True)
    with ApiClient(api_url, token) as client:
        run = client.post("/v1/filter-runs", body)
        console.print(f"filter run {run['id']} queued over {run['selection_size']:,} samples")
        if follow:
            run = follow_run(client, run, console, interval)
            print_counts(console, run)
            if run["status"] != "succeeded":
                raise CliError(f"filter run {run['id']} {run['status']}: {run.get('error') or ''}".strip())
    click.echo(run["id"])


@click.command("review")
@click.argument("sample_id", type=click.IntRange(min=1))
@click.option("--accept", is_flag=True, help="Accept the sample.")
@click.option("--reject", is_flag=True, help="Reject the sample.")
@click.option("--reset", is_flag=True, help="Back to pending.")
@click.option("--question", default=None, help="New question text (kept as a revision).")
@click.option("--answer", default=None, help="New answer text (kept as a revision).")
@click.option("--tag", "tags_add", multiple=True, help="Add a tag; repeat.")
@click.option("--untag", "tags_remove", multiple=True, help="Remove a tag; repeat.")
@click.option("--note", default=None, help='A note ("" clears it).')
@api_options
def review(
    sample_id: int,
    accept: bool,
    reject: bool,
    reset: bool,
    question: str | None,
    answer: str | None,
    tags_add: tuple[str, ...],
    tags_remove: tuple[str, ...],
    note: str | None,
    api_url: str | None,
    token: str | None,
) -> None:
    """Review one sample: accept / reject / reset, edit, tag, note; prints the result."""
    actions = [name for name, given in (("accept", accept), ("reject", reject), ("reset", reset)) if given]
    if len(actions) > 1:
        raise CliError(f"--{actions[0]} and --{actions[1]} cannot be combined: give one of them")
    both = sorted(set(tags_add) & set(tags_remove))
    if both:
        raise CliError(f"--tag and --untag both name {', '.join(both)}: give each tag once")
    body: dict[str, Any] = {"tags_add": list(tags_add), "tags_remove": list(tags_remove)}
    action = actions[0] if actions else None
    for key, value in (("action", action), ("question", question), ("answer", answer), ("note", note)):
        if value is not None:
            body[key] = value
    if body == {"tags_add": [], "tags_remove": []}:
        raise CliError(
            "nothing to do: give --accept, --reject or --reset, an edit (--question, --answer), "
            "--tag/--untag or --note"
        )
    with ApiClient(api_url, token) as client:
        sample = client.request("PATCH", f"/v1/samples/{sample_id}", json=body).json()
    verdicts = ", ".join(f"{v['filter_name']} {'✓' if v['passed'] else '✗'}" for v in sample["verdicts"])
    click.echo(
        f"sample {sample['id']}: {sample['review_status']}, {len(sample['revisions'])} revision(s)"
        + (f", tags {', '.join(sample['tags'])}" if sample["tags"] else "")
        + (f"; verdicts: {verdicts}" if verdicts else "")
    )


@click.group("dataset")
def dataset() -> None:
    """Freeze, list and show dataset versions (export them with `hardlabel export`)."""


@dataset.command("create")
@click.argument("name")
@click.option(
    "--job",
    "job_ids",
    multiple=True,
    required=True,
    type=click.IntRange(min=1),
    help="A generation job whose samples the version draws from; repeat for several jobs.",
)
@click.option("--stage", default=None, help="Default: the jobs' answer stage.")
@click.option("--require-passed", multiple=True, help="A filter every row must have passed; repeat.")
@click.option(
    "--review-status",
    multiple=True,
    type=click.Choice(["accepted", "pending", "rejected", "accepted_or_unreviewed_passed_all"]),
    help="Default accepted_or_unreviewed_passed_all: accepted samples, plus unreviewed ones some filter "
    "judged and none failed (never rejected ones). Or repeat statuses, e.g. --review-status accepted.",
)
@click.option("--tag", "tags", multiple=True, help="A tag every row must carry; repeat.")
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    default=None,
    help="At most this many samples (the lowest sample ids that match); default all.",
)
@click.option(
    "--test-fraction",
    type=click.FloatRange(0, 1, max_open=True),
    default=None,
    help="Share of samples held out as the test split, chosen by a hash of --seed and the sample id "
    "(the same seed and samples give the same split); default none.",
)
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True, help="Split seed.")
@click.option(
    "--stratify-by-job",
    is_flag=True,
    help="Hold out --test-fraction of each job's rows, so every job is in both splits.",
)
@click.option(
    "--ground-truth",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="JSONL of {question, answer, system?} records to mix into the train split as ground truth.",
)
@click.option(
    "--ground-truth-from-seed",
    "ground_truth_field",
    metavar="FIELD",
    default=None,
    help="Take ground truth from the samples' own seed data instead: the reference in inputs[FIELD] "
    "(e.g. reference, or a dotted path) answers the item's question; one row per item, never one whose "
    "question is in the test split.",
)
@click.option(
    "--ratio",
    type=click.FloatRange(0, 1, min_open=True, max_open=True),
    default=None,
    help="With --ground-truth or --ground-truth-from-seed: the share of the train split that is ground "
    "truth (e.g. 0.2: one row in five; fewer when too few are available); default: all of it is added.",
)
@click.option("--system", default=None, help="System prompt stored with every teacher row.")
@click.option("--interval", type=float, default=1.0, show_default=True, help="Seconds between polls.")
@api_options
def dataset_create(
    name: str,
    job_ids: tuple[int, ...],
    stage: str | None,
    require_passed: tuple[str, ...],
    review_status: tuple[str, ...],
    tags: tuple[str, ...],
    limit: int | None,
    test_fraction: float | None,
    seed: int,
    stratify_by_job: bool,
    ground_truth: Path | None,
    ground_truth_field: str | None,
    ratio: float | None,
    system: str | None,
    interval: float,
    api_url: str | None,
    token: str | None,
) -> None:
    """Freeze a new version of dataset NAME (waits for the freeze, with a progress bar); prints its id."""
    query: dict[str, Any] = {
        "job_ids": list(job_ids),
        "require_passed": list(require_passed),
        "tags": list(tags),
    }
    if stage:
        query["stage"] = stage
    if limit:
        query["limit"] = limit
    if review_status:
        mode = "accepted_or_unreviewed_passed_all"
        if mode in review_status and len(review_status) > 1:
            raise CliError(f"--review-status {mode} cannot be combined with other statuses")
        query["review_status"] = mode if mode in review_status else list(review_status)
    body: dict[str, Any] = {"name": name, "query": query}
    if test_fraction is not None:
        body["split"] = {"test_fraction": test_fraction, "seed": seed, "stratify_by_job": stratify_by_job}
    if system is not None:
        body["system"] = system
    if ratio is not None and ground_truth is None and ground_truth_field is None:
        raise CliError("--ratio needs --ground-truth or --ground-truth-from-seed")
    if ground_truth is not None and ground_truth_field is not None:
        raise CliError("give --ground-truth or --ground-truth-from-seed, not both")
    if ground_truth_field is not None:
        body["ground_truth"] = {"from_seed_field": ground_truth_field, "ratio": ratio}
    console = Console(stderr=True)
    with ApiClient(api_url, token) as client:
        if ground_truth is not None:
            body["ground_truth"] = {"ratio": ratio}
            with ground_truth.open("rb") as upload:
                response = client.request(
                    "POST",
                    "/v1/datasets",
                    data={"spec": json.dumps(body)},
                    files={"ground_truth": (ground_truth.name, upload, "application/jsonl")},
                )
            version = response.json()
        else:
            version = client.post("/v1/datasets", body)
        # A worker copies the rows (minutes for millions of samples): wait for it.
        version = follow_freeze(client, version, console, interval)
    if version["status"] != "succeeded":
        raise CliError(
            f"{version['name']} v{version['version']} (id {version['id']}): freeze {version['status']}: "
            f"{version['error']}"
        )
    counts = version["row_counts"]
    console.print(
        f"{version['name']} v{version['version']}: {counts['total']:,} rows (train {counts['train']:,}, "
        f"test {counts['test']:,}, ground truth {counts['ground_truth']:,}), digest {version['digest'][:16]}…"
    )
    click.echo(version["id"])


@dataset.command("list")
@click.option("--name", default=None, help="Only versions of this name.")
@api_options
def dataset_list(name: str | None, api_url: str | None, token: str | None) -> None:
    """List dataset versions, newest first."""
    with ApiClient(api_url, token) as client:
        page = client.get("/v1/datasets", name=name, limit=100)
    table = Table("id", "name", "version", "status", "rows", "train", "test", "digest", "created")
    for item in page["items"]:
        counts = item["row_counts"]
        table.add_row(
            str(item["id"]),
            item["name"],
            str(item["version"]),
            item["status"],
            f"{counts.get('total', 0):,}",
            f"{counts.get('train', 0):,}",
            f"{counts.get('test', 0):,}",
            item["digest"][:12],
            item["created_at"][:19],
        )
    Console().print(table)


@dataset.command("show")
@click.argument("dataset_id", type=click.IntRange(min=1))
@api_options
def dataset_show(dataset_id: int, api_url: str | None, token: str | None) -> None:
    """Print a version with its lineage as JSON."""
    with ApiClient(api_url, token) as client:
        version = client.get(f"/v1/datasets/{dataset_id}")
    click.echo(json.dumps(version, indent=2, ensure_ascii=False))


commands: list[click.Command] = [filter_command, review, dataset]
