"""`hardlabel export DATASET_ID`: write a frozen dataset version to a local folder, with a card.

Reads the database directly (HARDLABEL_DATABASE_URL, or the embedded Postgres), streaming rows in
bounded memory; the folder loads with `datasets.load_dataset(DIR)` (jsonl, parquet) or
`datasets.load_from_disk(DIR)` (hf).
"""

from __future__ import annotations

from pathlib import Path

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from service.cli import CliError
from service.cli.database import resolve_database
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
def export(dataset_id: int, fmt: str, container: str, out_dir: Path, force: bool) -> None:
    """Export a dataset version (every split) to a folder, with a README.md dataset card."""
    from service.datasets.service import manifest_of
    from service.db.models import DatasetVersion
    from service.db.session import get_engine, transaction

    if out_dir.exists() and any(out_dir.iterdir()) and not force:
        raise CliError(f"{out_dir} exists and is not empty (use --force to write into it)")
    url = resolve_database(get_settings()).database_url
    assert url is not None
    with transaction(url) as session:
        version = session.get(DatasetVersion, dataset_id)
        if version is None:
            raise CliError(f"dataset version {dataset_id} does not exist")
        if version.status != "succeeded":
            raise CliError(f"dataset version {dataset_id} is not frozen ({version.status}): wait for it")
        manifest = manifest_of(version)
    from service.datasets.export.folder import export_to_folder

    total = int(manifest.row_counts.get("total", 0))
    console = Console(stderr=True)
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task(f"{manifest.name} v{manifest.version}", total=total)
        try:
            splits = export_to_folder(
                get_engine(url),
                manifest,
                fmt,
                container,
                out_dir,
                on_rows=lambda n: progress.advance(task, n),
            )
        except OSError as exc:
            raise CliError(f"cannot write {out_dir}: {exc.strerror or exc}") from exc
    rows = ", ".join(f"{split} {n:,}" for split, n in splits.items())
    console.print(f"wrote {manifest.name} v{manifest.version} ({rows}) as {fmt}/{container} to {out_dir}")
    console.print(f"load it with {LOAD_HINT[container].format(dir=str(out_dir))}")
    click.echo(str(out_dir))


commands: list[click.Command] = [export]
