"""`hardlabel generate`: run a recipe against a teacher and write the samples as JSON lines.

Standalone: no database, no service. The generator library is imported when the command runs, and
vLLM only when the engine starts, so `hardlabel --help` stays fast.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import click
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from service.cli import CliError
from service.cli.engine_logs import EngineLog

if TYPE_CHECKING:
    from generator.engines import TeacherConfig
    from generator.recipe import Recipe


@click.command("generate")
@click.argument("recipe_path", metavar="RECIPE", type=click.Path(path_type=Path))
@click.option(
    "--teacher", required=True, help="Teacher model: a model folder or hub id (the served name for openai)."
)
@click.option("--engine", type=click.Choice(["vllm", "openai"]), default="vllm", show_default=True)
@click.option(
    "--base-url", help="OpenAI-compatible server URL, e.g. http://127.0.0.1:8000/v1 (engine openai)."
)
@click.option(
    "--out",
    "out_path",
    type=click.Path(path_type=Path, dir_okay=False),
    default=Path("samples.jsonl"),
    show_default=True,
    help="JSON-lines file to write ('-' for stdout).",
)
@click.option("--limit", type=click.IntRange(min=0), help="Only the first N seed items.")
@click.option(
    "--chunk-size", type=click.IntRange(min=1), default=64, show_default=True, help="Items per batch."
)
@click.option("--kv-cache-bytes", type=click.IntRange(min=1 << 20), help="vLLM KV cache size in bytes.")
@click.option("--max-model-len", type=click.IntRange(min=16), help="vLLM context length.")
@click.option(
    "--dtype", default="auto", show_default=True, help="vLLM weights dtype (auto, float32, bfloat16, ...)."
)
@click.option(
    "--enforce-eager/--no-enforce-eager",
    default=None,
    help="Skip torch.compile/CUDA graphs (default: on without a GPU, where compiling costs more).",
)
@click.option("--engine-logs", is_flag=True, help="Print the engine's logs here instead of into a log file.")
def generate_command(
    recipe_path: Path,
    teacher: str,
    engine: str,
    base_url: str | None,
    out_path: Path,
    limit: int | None,
    chunk_size: int,
    kv_cache_bytes: int | None,
    max_model_len: int | None,
    dtype: str,
    enforce_eager: bool | None,
    engine_logs: bool,
) -> None:
    """Generate teacher samples from RECIPE (YAML/JSON) and write them as JSON lines.

    The engine's own logs go to a file under HARDLABEL_HOME/logs (its last lines are shown when
    something fails); --engine-logs prints them here instead.
    """
    from generator.engines import TeacherConfig
    from generator.recipe import RecipeError, load_recipe, validate_recipe
    from generator.seeds import load_seed_rows
    from generator.templates import TemplateError

    base_dir = recipe_path.parent
    try:
        recipe = load_recipe(recipe_path)
        validate_recipe(recipe, base_dir)
        rows = load_seed_rows(recipe, base_dir)
    except (RecipeError, TemplateError) as error:
        raise CliError(str(error)) from None
    if limit is not None:
        rows = rows[:limit]
    if engine == "openai" and not base_url:
        raise CliError("--base-url is required with --engine openai")
    if engine == "vllm":
        from service.model_folders import teacher_model_problem

        # A missing folder or one that is not a model: say so, before vLLM says something obscure.
        problem = teacher_model_problem(teacher)
        if problem is not None:
            raise CliError(f"--teacher: {problem}")
    if enforce_eager is None:
        enforce_eager = engine == "vllm" and not _gpu_available()

    config = TeacherConfig(
        model=teacher,
        engine=engine,  # type: ignore[arg-type]  # click.Choice guarantees the literal
        base_url=base_url,
        dtype=dtype,
        max_model_len=max_model_len,
        kv_cache_memory_bytes=kv_cache_bytes,
        enforce_eager=enforce_eager,
    )
    engine_log = None if engine_logs else EngineLog(_engine_log_path())
    with engine_log or contextlib.nullcontext():
        console = Console(file=engine_log.console_file if engine_log else sys.stderr)
        summary = _generate(console, engine_log, config, recipe, rows, out_path, chunk_size)
    click.echo(summary, err=str(out_path) == "-")


def _generate(
    console: Console,
    engine_log: EngineLog | None,
    config: TeacherConfig,
    recipe: Recipe,
    rows: list[dict[str, Any]],
    out_path: Path,
    chunk_size: int,
) -> str:
    """Start the teacher, write the samples, close the teacher; returns the summary line."""
    from generator.engines import build_engine
    from generator.pipeline import run_recipe
    from generator.recipe import RecipeError
    from generator.templates import TemplateError

    def failed(message: str) -> CliError:
        if engine_log is not None and engine_log.tail():
            console.print(f"[dim]{engine_log.tail()}[/]", highlight=False)
            message += f" (engine log: {engine_log.path})"
        return CliError(message)

    with console.status(f"starting teacher {config.model} ({config.engine})"):
        try:
            teacher_engine = build_engine(config)
        except Exception as error:  # a missing model folder, bad dtype, unreachable URL, ...
            raise failed(f"cannot start teacher {config.model}: {_first_line(error)}") from None

    started = time.perf_counter()
    samples = failures = completion_tokens = items_done = 0
    elapsed = 0.0
    try:
        with _open_output(out_path) as handle, _progress(console) as progress:
            task = progress.add_task(
                "generating", total=len(rows), items_per_second=0.0, tokens_per_second=0.0
            )
            for chunk in run_recipe(recipe, teacher_engine, rows, chunk_size=chunk_size):
                for sample in chunk.samples:
                    handle.write(json.dumps(asdict(sample), ensure_ascii=False) + "\n")
                    failures += not sample.parse_ok
                handle.flush()
                samples += len(chunk.samples)
                completion_tokens += chunk.completion_tokens
                items_done += len(chunk.item_indices)
                # One clock for the bar and the summary: generation only, not the teacher's start or stop.
                elapsed = max(time.perf_counter() - started, 1e-9)
                progress.update(
                    task,
                    completed=items_done,
                    items_per_second=items_done / elapsed,
                    tokens_per_second=completion_tokens / elapsed,
                )
    except (RecipeError, TemplateError) as error:
        raise CliError(str(error)) from None
    except Exception as error:  # the engine died mid-run: its log says why
        raise failed(f"generation failed: {_first_line(error)}") from None
    finally:
        with console.status("stopping teacher"):
            teacher_engine.close()
    destination = "stdout" if str(out_path) == "-" else str(out_path)
    rate = items_done / elapsed if elapsed else 0.0
    return (
        f"wrote {samples} samples ({failures} parse failures) for {items_done} items to {destination} "
        f"in {elapsed:.1f}s of generation: {rate:.1f} items/s, "
        f"{completion_tokens / max(elapsed, 1e-9):,.0f} tokens/s"
    )


def _engine_log_path() -> Path:
    from service.settings import get_settings

    stamp = time.strftime("%Y%m%d-%H%M%S")
    return get_settings().home / "logs" / f"generate-{stamp}-{os.getpid()}.log"


def _progress(console: Console) -> Progress:
    return Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[items_per_second]:.1f} items/s"),
        TextColumn("{task.fields[tokens_per_second]:,.0f} tok/s"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
    )


def _open_output(path: Path) -> Any:
    if str(path) == "-":
        return _Unclosed(sys.stdout)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return path.open("w", encoding="utf-8")
    except OSError as error:
        raise CliError(f"cannot write {path}: {error.strerror}") from None


class _Unclosed:
    """stdout as a context manager that does not close it."""

    def __init__(self, stream: IO[str]) -> None:
        self._stream = stream

    def __enter__(self) -> IO[str]:
        return self._stream

    def __exit__(self, *exc: object) -> None:
        self._stream.flush()


def _gpu_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


commands: list[click.Command] = [generate_command]
