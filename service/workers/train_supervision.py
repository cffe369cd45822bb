"""The train worker's child processes: start one per phase, poll it, stop or kill it, explain a failure.

Training and scoring run in `python -m service.workers.train_child PHASE REQUEST`, so the worker
process never loads the ML stack and a crash of the child cannot take the worker with it. The
child's output goes to the run folder's log; its exit code and error file say how it ended.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from service.queue.leases import LeaseLost
from service.workers.context import PermanentTaskError, TaskContext
from service.workers.train_child import ERROR_FILE, EXIT_BAD_INPUT, LOG_FILE, REQUEST_FILE, write_json_atomic

CHILD_PID_FILE = "child.pid"
# How often the worker reads the child's files and writes what is new (bounded by the poll setting).
SYNC_MIN_SECONDS, SYNC_MAX_SECONDS = 0.2, 2.0
# A graceful stop lets the child finish its step and save a checkpoint; then it is killed.
STOP_GRACE_SECONDS = 120.0
KILL_WAIT_SECONDS = 30.0
LOG_TAIL_LINES = 5


def run_child(
    ctx: TaskContext, phase: str, request: dict[str, Any], out: Path, sync: Callable[[], None]
) -> int:
    """Run `train_child <phase>` to its end, calling `sync` every poll; returns its exit code.

    Raises:
        LeaseLost: the task was cancelled or taken over (the child is killed first).
    """
    out.mkdir(parents=True, exist_ok=True)
    request_path = out / f"{phase}_{REQUEST_FILE}"
    write_json_atomic(request_path, request)
    interval = min(max(ctx.settings.poll_seconds, SYNC_MIN_SECONDS), SYNC_MAX_SECONDS)
    command = [sys.executable, "-m", "service.workers.train_child", phase, str(request_path)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with (out / LOG_FILE).open("ab") as log:
        log.write(
            f"--- {phase} (task {ctx.task.id}, attempt {ctx.task.attempts}, {ctx.worker_id})\n".encode()
        )
        log.flush()
        child = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env
        )
    (out / CHILD_PID_FILE).write_text(str(child.pid), encoding="utf-8")
    ctx.logger.info("training run %s: %s process %d started", request["run_id"], phase, child.pid)
    try:
        while True:
            code = child.poll()
            if code is not None:
                return code
            if ctx.lease_lost.is_set():
                _kill(child)
                ctx.fenced(lambda session, committed: None)  # raises LeaseLost with the reason
                raise LeaseLost(ctx.task.id, "the heartbeat found the task no longer held")
            if ctx.stop_requested:
                ctx.logger.info("training run %s: stopping the %s process", request["run_id"], phase)
                return _stop(child, sync)
            sync()
            ctx.stop.wait(interval)
    finally:
        if child.poll() is None:
            _kill(child)


def _stop(child: subprocess.Popen[bytes], sync: Callable[[], None]) -> int:
    """SIGTERM (training checkpoints and exits), keep syncing while it does, then kill what is left."""
    child.send_signal(signal.SIGTERM)
    try:
        for _ in range(int(STOP_GRACE_SECONDS)):
            try:
                return child.wait(timeout=1.0)
            except subprocess.TimeoutExpired:
                sync()
    except LeaseLost:
        pass
    _kill(child)
    return child.returncode


def _kill(child: subprocess.Popen[bytes]) -> None:
    child.kill()
    with contextlib.suppress(subprocess.TimeoutExpired):
        child.wait(timeout=KILL_WAIT_SECONDS)


def raise_child_failure(phase: str, code: int, out: Path) -> None:
    error: dict[str, Any] = {}
    with contextlib.suppress(OSError, json.JSONDecodeError):
        error = json.loads((out / ERROR_FILE).read_text(encoding="utf-8"))
    message = str(error.get("error") or "")
    if code == EXIT_BAD_INPUT or error.get("permanent"):
        raise PermanentTaskError(f"{phase}: {message or f'the {phase} process refused its input'}")
    if not message:
        how = f"was killed by signal {-code}" if code < 0 else f"exited with code {code}"
        message = f"the {phase} process {how}; last lines of {out / LOG_FILE}: {_log_tail(out)}"
    raise RuntimeError(f"{phase}: {message}")


def _log_tail(out: Path) -> str:
    try:
        lines = (out / LOG_FILE).read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return " | ".join(line.strip() for line in lines[-LOG_TAIL_LINES:])
