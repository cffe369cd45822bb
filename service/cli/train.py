"""`hardlabel train`: fine-tune a student on a prompt–completion dataset, standalone (no service).

The trainer library (TRL, transformers) is imported when the command runs, so `hardlabel --help`
stays fast. Re-running with the same --output resumes from the last checkpoint.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.status import Status

from service.cli import CliError


@click.command("train")
@click.option(
    "--dataset",
    "dataset_path",
    required=True,
    type=click.Path(path_type=Path),
    help="Exported dataset folder, or a .jsonl/.parquet file of prompt-completion rows.",
)
@click.option("--student", help="Student model: a model folder or hub id.")
@click.option("--from-scratch", is_flag=True, help="Train a new tiny Llama (see --layers/--hidden/...).")
@click.option("--method", type=click.Choice(["full", "lora"]), default="full", show_default=True)
@click.option(
    "--config",
    "config_path",
    type=click.Path(path_type=Path, dir_okay=False),
    help="A full TRL SFTConfig as YAML; its values win over the options below.",
)
@click.option(
    "--output",
    "output_dir",
    type=click.Path(path_type=Path, file_okay=False),
    help="Run folder (checkpoints, metrics.jsonl, final/). Default: runs/train-<time>.",
)
@click.option("--resume/--no-resume", default=True, show_default=True, help="Continue from a checkpoint.")
@click.option("--max-steps", type=int, default=-1, show_default=True, help="-1: train for --epochs.")
@click.option("--epochs", type=float, default=1.0, show_default=True)
@click.option("--lr", "learning_rate", type=float, help="Learning rate (default 2e-5 full, 2e-4 LoRA).")
@click.option("--batch-size", type=int, default=8, show_default=True)
@click.option("--grad-accum", type=int, default=1, show_default=True)
@click.option("--max-length", type=int, default=1024, show_default=True)
@click.option("--packing/--no-packing", default=False, show_default=True)
@click.option("--save-steps", type=int, default=500, show_default=True, help="Checkpoint interval.")
@click.option("--logging-steps", type=int, default=10, show_default=True)
@click.option(
    "--eval-split", type=float, default=0.0, show_default=True, help="Train rows held out for eval loss."
)
@click.option("--seed", type=int, default=42, show_default=True)
@click.option("--layers", type=int, default=4, show_default=True, help="--from-scratch: layers.")
@click.option("--hidden", type=int, default=128, show_default=True, help="--from-scratch: hidden size.")
@click.option("--heads", type=int, default=4, show_default=True, help="--from-scratch: attention heads.")
@click.option("--vocab", type=int, default=512, show_default=True, help="--from-scratch: vocabulary.")
def train_command(
    dataset_path: Path,
    student: str | None,
    from_scratch: bool,
    method: str,
    config_path: Path | None,
    output_dir: Path | None,
    resume: bool,
    max_steps: int,
    epochs: float,
    learning_rate: float | None,
    batch_size: int,
    grad_accum: int,
    max_length: int,
    packing: bool,
    save_steps: int,
    logging_steps: int,
    eval_split: float,
    seed: int,
    layers: int,
    hidden: int,
    heads: int,
    vocab: int,
) -> None:
    """Fine-tune a student (full or LoRA) on a dataset with TRL SFT; loss on the answers only."""
    from pydantic import ValidationError

    from trainer.config import load_sft_config_yaml
    from trainer.sft import train
    from trainer.spec import TrainingSpec

    if bool(student) == from_scratch:
        raise CliError("give --student PATH_OR_ID or --from-scratch (one of them)")
    try:
        spec = TrainingSpec(
            method=method,  # type: ignore[arg-type]  # click.Choice guarantees the literal
            learning_rate=learning_rate,
            num_train_epochs=epochs,
            max_steps=max_steps,
            per_device_train_batch_size=batch_size,
            gradient_accumulation_steps=grad_accum,
            max_length=max_length,
            packing=packing,
            save_steps=save_steps,
            logging_steps=logging_steps,
            eval_split=eval_split,
            seed=seed,
        )
    except ValidationError as exc:
        raise CliError(_validation_message(exc)) from None
    overrides: dict[str, Any] = {}
    if config_path is not None:
        try:
            overrides = load_sft_config_yaml(config_path)
        except ValueError as exc:
            raise CliError(str(exc)) from None
    configured_output = overrides.pop("output_dir", None)
    output = output_dir or (Path(configured_output) if configured_output else None)
    output = output or Path("runs") / time.strftime("train-%Y%m%d-%H%M%S")
    shapes = {"layers": layers, "hidden": hidden, "heads": heads, "vocab": vocab} if from_scratch else None

    console = Console(stderr=True)
    display = _TrainingDisplay(console)
    try:
        result = train(
            dataset_path=dataset_path,
            student=student,
            output_dir=output,
            spec=spec,
            sft_overrides=overrides,
            from_scratch=shapes,
            resume=resume,
            progress=display.report,
        )
    except (ValueError, OSError) as exc:  # DatasetError, StudentError, MaskError, CheckpointError...
        raise CliError(_first_line(exc)) from None
    finally:
        display.close()

    for warning in result.mask_warnings:
        console.print(f"[yellow]warning:[/] {warning}")
    loss = f"{result.train_loss:.4f}" if result.train_loss is not None else "n/a"
    resumed = f", resumed from {Path(result.resumed_from).name}" if result.resumed_from else ""
    click.echo(result.mask)
    click.echo(
        f"trained {result.global_step} steps{resumed}: train loss {loss}, "
        f"{result.tokens_per_second:,.0f} tokens/s; model: {result.model_path}"
    )


class _TrainingDisplay:
    """A spinner while data, student and mask pre-flight load; a progress bar from the first step on."""

    def __init__(self, console: Console) -> None:
        self._status: Status | None = console.status("loading the data and the student, checking the mask")
        self._status.start()
        self._progress = Progress(
            TextColumn("training"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]}"),
            TextColumn("{task.fields[tokens_per_second]:,.0f} tok/s"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
        )
        self._task: TaskID | None = None

    def report(self, state: dict[str, Any]) -> None:
        if self._task is None:
            self._stop_status()
            self._progress.start()
            self._task = self._progress.add_task("training", total=None, loss="-", tokens_per_second=0.0)
        loss = state.get("loss")
        self._progress.update(
            self._task,
            completed=state.get("step", 0),
            total=state.get("total_steps") or None,
            loss=f"{loss:.4f}" if isinstance(loss, float) else "-",
            tokens_per_second=state.get("tokens_per_second", 0.0),
        )

    def close(self) -> None:
        self._stop_status()
        if self._task is not None:
            self._progress.stop()

    def _stop_status(self) -> None:
        if self._status is not None:
            self._status.stop()
            self._status = None


def _validation_message(exc: Any) -> str:
    """The first pydantic error as `field: reason`, with the CLI's option names."""
    error = exc.errors()[0]
    names = {
        "num_train_epochs": "--epochs",
        "per_device_train_batch_size": "--batch-size",
        "gradient_accumulation_steps": "--grad-accum",
        "learning_rate": "--lr",
    }
    field = ".".join(str(part) for part in error["loc"])
    option = names.get(field, f"--{field.replace('_', '-')}") if field else "options"
    return f"{option}: {error['msg']}"


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


commands: list[click.Command] = [train_command]
