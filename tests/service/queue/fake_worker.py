"""A fake chunked task handler for fast runner tests, and a script that runs a worker with it.

The handler walks its shard one item ("chunk") at a time, sleeping CHUNK_SECONDS per item, and
commits each step with a fenced write that moves the cursor — the shape of the real generate
handler without a model. `python fake_worker.py URL [--fail N|--fail-permanent]` runs a worker.
"""

from __future__ import annotations

import logging
import os
import sys
import time

from sqlalchemy import text
from sqlalchemy.orm import Session

from service.events import record_event
from service.workers.context import PermanentTaskError, TaskContext, TaskOutcome

FAKE_KIND = "export"
CHUNK_SECONDS = float(os.environ.get("FAKE_CHUNK_SECONDS", "0.05"))
# Per-run behaviour switches, set by tests.
FAILURES = {"transient": 0, "permanent": False}
calls: list[int] = []


def chunked_handler(ctx: TaskContext) -> TaskOutcome:
    task = ctx.task
    calls.append(task.id)
    if FAILURES["permanent"]:
        raise PermanentTaskError("teacher 'nowhere' failed to load: no such folder")
    if FAILURES["transient"] > 0:
        FAILURES["transient"] -= 1
        raise RuntimeError("flaky")
    start, end = int(task.payload["item_start"]), int(task.payload["item_end"])
    cursor = task.cursor
    while start + cursor < end:
        time.sleep(CHUNK_SECONDS)
        ctx.check_lease()

        def write(session: Session, committed: int, expected: int = cursor) -> int:
            if committed == expected + 1:
                return committed
            session.execute(
                text("UPDATE task SET cursor = :c WHERE id = :id"), {"c": expected + 1, "id": task.id}
            )
            session.execute(
                text("UPDATE job SET items_done = items_done + 1 WHERE id = :id"), {"id": task.job_id}
            )
            record_event(session, "checkpoint", "fake chunk", job_id=task.job_id, task_id=task.id)
            return expected + 1

        cursor = ctx.fenced(write)
        if ctx.stop_requested and start + cursor < end:
            return TaskOutcome.STOPPED
    return TaskOutcome.DONE


if __name__ == "__main__":
    from service.settings import Settings
    from service.workers.registry import register_handler
    from service.workers.runner import run_worker

    logging.basicConfig(level="INFO", format="%(asctime)s %(levelname)s %(message)s")
    register_handler(FAKE_KIND, chunked_handler)
    settings = Settings(
        database_url=sys.argv[1],
        lease_seconds=5,
        heartbeat_seconds=0.5,
        reaper_seconds=0.5,
        poll_seconds=0.05,
    )
    print("fake worker ready", flush=True)
    run_worker(settings, [FAKE_KIND], exit_when_idle=True)
