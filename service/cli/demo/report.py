"""The demo's closing tables: teacher vs student, what the loop kept, and the time of each step."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.table import Table

from service.cli.display import elapsed, percent


@dataclass
class Outcome:
    """What the results table shows."""

    teacher_label: str = ""
    generated: int = 0
    kept: int = 0
    failed_by_filter: dict[str, int] = field(default_factory=dict)
    unparsed: int = 0  # samples whose output parser failed: no filter sees them, no version keeps them
    dataset: dict[str, Any] = field(default_factory=dict)
    export_dir: Path | None = None
    run: dict[str, Any] = field(default_factory=dict)
    train_steps: int = 0
    train_seconds: float = 0.0
    seconds_per_step: float | None = None  # between the first and last logged steps
    eval_seconds: float = 0.0


def results_table(outcome: Outcome, goal: float) -> Table:
    """Teacher, student before and after, their ratio against `goal`, the samples and the dataset."""
    results = outcome.run.get("results") or {}

    def score(name: str) -> str:
        entry = results.get(name)
        return "-" if not entry else f"{percent(entry['accuracy'])} ({entry['correct']}/{entry['items']})"

    ratio = results.get("ratio")
    verdict = "" if ratio is None else (" [green]✓[/]" if ratio >= goal else " [red]✗[/]")
    table = Table(title="hard-label distillation, end to end", show_header=False, title_justify="left")
    table.add_column(style="bold", no_wrap=True)
    table.add_column()
    table.add_row("teacher", f"{score('teacher')}  {outcome.teacher_label}")
    table.add_row("student before", score("student_before"))
    table.add_row("student after", score("student_after"))
    shown_ratio = "-" if ratio is None else f"{ratio:.3f}"
    table.add_row("student / teacher", f"{shown_ratio}{verdict}  (goal ≥ {goal})")
    table.add_row(
        "evaluated on",
        f"{results.get('items', 0)} items: {results.get('source', '-')}, {results.get('scorer', '')} match",
    )
    failed = ", ".join(f"{name} {n:,}" for name, n in outcome.failed_by_filter.items())
    if outcome.unparsed:
        failed += f"; unparsed {outcome.unparsed:,}"
    table.add_row(
        "samples",
        f"{outcome.generated:,} generated, {outcome.kept:,} kept, "
        f"{outcome.generated - outcome.kept:,} filtered out (failed {failed})",
    )
    counts = outcome.dataset.get("row_counts", {})
    table.add_row(
        "dataset",
        f"{outcome.dataset.get('name')} v{outcome.dataset.get('version')}: "
        f"train {counts.get('train', 0):,}, test {counts.get('test', 0):,}; exported to {outcome.export_dir}",
    )
    table.add_row("student model", str(outcome.run.get("model_path")))
    return table


def timing_table(timings: Sequence[tuple[str, float, str]], total_seconds: float) -> Table:
    """One row per step (its time and a note), then the total."""
    table = Table("step", "time", "", title="time per step", title_justify="left", box=None, padding=(0, 2))
    for title, seconds, note in timings:
        table.add_row(title.lower(), elapsed(seconds), note)
    table.add_row("[bold]total[/]", f"[bold]{elapsed(total_seconds)}[/]", "")
    return table
