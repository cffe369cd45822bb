"""How the CLI shows the service's work: one poll loop and bar layout while it runs, durations and times."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeRemainingColumn,
)

from service.statuses import FINISHED_STATUSES


def count_bar(console: Console, *middle: ProgressColumn | str, eta: bool = True) -> Progress:
    """A bar of done/total with the task's description before it, `middle` columns, then an ETA."""
    columns: list[ProgressColumn | str] = [
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        *middle,
    ]
    if eta:
        columns.append(TimeRemainingColumn())
    return Progress(*columns, console=console)


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
    """`1:02:03` or `2:03`; `-` when unknown."""
    if seconds is None:
        return "-"
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def when(value: str | None) -> str:
    """An API timestamp in local time, `12-03 07:05:09`; `-` when unset."""
    return datetime.fromisoformat(value).astimezone().strftime("%m-%d %H:%M:%S") if value else "-"
