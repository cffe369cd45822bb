"""`hardlabel export DATASET_ID`: write a frozen dataset version to a local folder, with a card.

Over the API when one is configured (`--api-url`/HARDLABEL_API_URL or `--token`/HARDLABEL_TOKEN):
the server writes the export and sends it as one tar, which is unpacked into the folder, so a
teammate needs no database access. With `--database`, or when no API is configured, it reads the
database directly (HARDLABEL_DATABASE_URL, or the embedded Postgres), streaming rows in bounded
memory. Either way the folder loads with `datasets.load_dataset(DIR)` (jsonl, parquet) or
`datasets.load_from_disk(DIR)` (hf).
"""

from __future__ import annotations

import json
import shutil
import tarfile
import tempfile
from pathlib import Path

import click
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

from service.cli import CliError
from service.cli.api_client import ApiClient, api_options
from service.cli.database import resolve_database
from service.cli.display import count_bar
from service.datasets.export.containers import CONTAINERS
from service.datasets.export.formats import FORMATS
from service.settings import get_settings

LOAD_HINT = {
    "jsonl": "datasets.load_dataset({dir!r})",
    "parquet": "datasets.load_dataset({dir!r})",
    "hf": "datasets.load_from_disk({dir!r})",
}


@click.command("export")
@click.argument("dataset_id", type=click.IntRange(min=1))
@click.option(
    "--format",
    "fmt",
    type=click.Choice(FORMATS),
    default="prompt_completion",
    show_default=True,
    help="prompt_completion is TRL's conversational prompt–completion (loss on the answer only).",
)
@click.option("--container", type=click.Choice(CONTAINERS), default="hf", show_default=True)
@click.option(
    "--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), required=True, help="Folder."
)
@click.option("--force", is_flag=True, help="Write into a folder that is not empty.")
@click.option(
    "--provenance", is_flag=True, help="Add source, sample_id, job_id, teacher, item_index to every row."
)
@click.option(
    "--soft-labels",
    is_flag=True,
    help="Add the teacher's top-k logprobs (completion_token_ids, teacher_topk_ids, teacher_topk_logprobs) "
    "where the job asked for them (stage sampling.logprobs).",
)
@click.option(
    "--database",
    "direct",
    is_flag=True,
    help="Read the database directly (HARDLABEL_DATABASE_URL, or the embedded one) instead of the API. "
    "The default when neither an API URL nor a token is set.",
)
@api_options
def export(
    dataset_id: int,
    fmt: str,
    container: str,
    out_dir: Path,
    force: bool,
    provenance: bool,
    soft_labels: bool,
    direct: bool,
    api_url: str | None,
    token: str | None,
) -> None:
    """Export a dataset version (every split) to a folder, with a README.md dataset card."""
    if out_dir.exists() and any(out_dir.iterdir()) and not force:
        raise CliError(f"{out_dir} exists and is not empty (use --force to write into it)")
    console = Console(stderr=True)
    options = {"provenance": provenance, "soft_labels": soft_labels}
    if direct or not (api_url or token):
        splits, name = _export_from_database(dataset_id, fmt, container, out_dir, console, options)
    else:
        splits, name = _export_over_api(api_url, token, dataset_id, fmt, container, out_dir, console, options)
    rows = ", ".join(f"{split} {n:,}" for split, n in splits.items())
    console.print(f"wrote {name} ({rows}) as {fmt}/{container} to {out_dir}")
    console.print(f"load it with {LOAD_HINT[container].format(dir=str(out_dir))}")
    click.echo(str(out_dir))


def _export_over_api(
    api_url: str | None,
    token: str | None,
    dataset_id: int,
    fmt: str,
    container: str,
    out_dir: Path,
    console: Console,
    options: dict[str, bool],
) -> tuple[dict[str, int], str]:
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), DownloadColumn(), TimeRemainingColumn())
    with ApiClient(api_url, token) as client:
        version = client.get(f"/v1/datasets/{dataset_id}")
        if version["status"] != "succeeded":
            raise CliError(f"dataset version {dataset_id} is not frozen ({version['status']}): wait for it")
        name = f"{version['name']} v{version['version']}"
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=".hardlabel-export-", dir=out_dir.parent) as scratch:
            archive = Path(scratch) / "export.tar"
            with Progress(*columns, console=console) as progress:
                bar = progress.add_task(f"{name}: the server is writing the export", total=None)
                headers = client.download(
                    f"/v1/datasets/{dataset_id}/export",
                    archive,
                    params={"format": fmt, "container": container, "split": "all", **_query(options)},
                    on_start=lambda total: progress.update(
                        bar, description=f"{name}: downloading", total=total
                    ),
                    on_bytes=lambda n: progress.advance(bar, n),
                )
            _unpack_single_folder(archive, Path(scratch) / "unpacked", out_dir)
    # Rows per split as written (a preference export has a pair per prompt, not a row per sample).
    try:
        written = json.loads(headers.get("x-row-counts", ""))
    except ValueError:
        written = None
    if not isinstance(written, dict):
        counts = version["row_counts"]
        written = {split: counts[split] for split in ("train", "test") if counts.get(split)}
    return {str(split): int(n) for split, n in written.items()}, name


def _unpack_single_folder(archive: Path, scratch: Path, out_dir: Path) -> None:
    """Move the one folder the tar holds into `out_dir`, file by file (it may exist, with --force)."""
    try:
        with tarfile.open(archive) as tar:
            tar.extractall(scratch, filter="data")  # refuses links out of scratch, absolute paths
    except (tarfile.TarError, OSError) as exc:
        raise CliError(f"the API sent an export that cannot be unpacked: {exc}") from exc
    entries = list(scratch.iterdir())
    if len(entries) != 1 or not entries[0].is_dir():
        raise CliError("the API sent an export that is not one folder")
    top = entries[0]
    out_dir.mkdir(parents=True, exist_ok=True)
    for item in top.iterdir():
        target = out_dir / item.name
        if target.is_dir():
            shutil.rmtree(target)
        shutil.move(str(item), str(target))


def _query(options: dict[str, bool]) -> dict[str, str]:
    return {name: "true" for name, asked in options.items() if asked}


def _export_from_database(
    dataset_id: int, fmt: str, container: str, out_dir: Path, console: Console, options: dict[str, bool]
) -> tuple[dict[str, int], str]:
    from service.datasets.export.folder import NoPreferencePairs, export_to_folder
    from service.datasets.export.formats import SoftLabelsUnsupported
    from service.datasets.service import manifest_of
    from service.db.models import DatasetVersion
    from service.db.session import get_engine, transaction

    url = resolve_database(get_settings(), command="export --database").database_url
    assert url is not None
    with transaction(url) as session:
        version = session.get(DatasetVersion, dataset_id)
        if version is None:
            raise CliError(f"dataset version {dataset_id} does not exist")
        if version.status != "succeeded":
            raise CliError(f"dataset version {dataset_id} is not frozen ({version.status}): wait for it")
        manifest = manifest_of(version)
    name = f"{manifest.name} v{manifest.version}"
    with count_bar(console) as progress:
        bar = progress.add_task(name, total=int(manifest.row_counts.get("total", 0)))
        try:
            splits = export_to_folder(
                get_engine(url),
                manifest,
                fmt,
                container,
                out_dir,
                on_rows=lambda n: progress.advance(bar, n),
                **options,
            )
        except OSError as exc:
            raise CliError(f"cannot write {out_dir}: {exc.strerror or exc}") from exc
        except (NoPreferencePairs, SoftLabelsUnsupported) as exc:
            raise CliError(str(exc)) from exc
    return splits, name


commands: list[click.Command] = [export]
