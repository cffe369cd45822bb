"""How the CLI shows the service's work: one poll loop and bar layout while it runs, durations and times."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from service.statuses import FINISHED_STATUSES


def count_bar(console: Console) -> Progress:
    """A bar of done/total with the task's description before it and an ETA after it."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console,
    )


def follow(
    first: dict[str, Any],
    fetch: Callable[[], dict[str, Any]],
    show: Callable[[dict[str, Any]], None],
    interval: float,
) -> dict[str, Any]:
    """Show `first`, then poll `fetch` every `interval` seconds until its status is finished."""
    current = first
    while True:
        show(current)
        if current["status"] in FINISHED_STATUSES:
            return current
        time.sleep(interval)
        current = fetch()


def duration(seconds: float | None) -> str:
    """A time left or taken, `1:02:03` or `2:03`; `-` when unknown."""
    if seconds is None:
        return "-"
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def when(value: str | None) -> str:
    """An API timestamp in local time, `12-03 07:05:09`; `-` when unset."""
    return datetime.fromisoformat(value).astimezone().strftime("%m-%d %H:%M:%S") if value else "-"


def elapsed(seconds: float) -> str:
    """A step's time: `12.3 s` under a minute, else `4:10`."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes}:{secs:02d}"


def rate(value: float | None, unit: str) -> str:
    """`1,234 tok/s`, `7.5 items/s` (one decimal below 100); `- unit` when unknown or zero."""
    if not value:
        return f"- {unit}".rstrip()
    return f"{value:,.0f} {unit}".rstrip() if value >= 100 else f"{value:,.1f} {unit}".rstrip()


def percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


SPARKS = "▁▂▃▄▅▆▇█"


def sparkline(values: Sequence[float], width: int = 20) -> str:
    """The whole series squeezed into `width` characters (a falling loss reads left to right)."""
    if not values:
        return ""
    if len(values) > width:
        values = [values[round(i * (len(values) - 1) / (width - 1))] for i in range(width)]
    low, high = min(values), max(values)
    if high - low < 1e-12:
        return SPARKS[0] * len(values)
    return "".join(SPARKS[round((v - low) / (high - low) * (len(SPARKS) - 1))] for v in values)


# An error the service stored is shown as one line of at most this many characters.
MAX_ERROR_CHARS = 500


def one_line(text: object) -> str:
    """An error the service stored, as one line of bounded length."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= MAX_ERROR_CHARS else flat[: MAX_ERROR_CHARS - 1] + "…"


def step_bars(console: Console) -> Progress:
    """Bars for a sequence of steps: spinner (a check when done), label, bar, count, info, time."""
    return Progress(
        SpinnerColumn(finished_text="[green]✓[/]"),
        TextColumn("{task.description}"),
        BarColumn(bar_width=24),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        console=console,
    )
