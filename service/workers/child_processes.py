"""No child process outlives the worker that started it (vLLM's engine core, above all).

Two guards, because a worker can end two ways:

* It dies (``kill -9``, OOM killer, a crash): ``bind_child_processes_to_this_process`` makes every
  multiprocessing child started from then on — forked or spawned, and their own children —
  watch a pipe whose only write end this process holds. The kernel closes it when this process
  dies, however it dies; each child's watcher thread then sees end-of-file and kills its process.
  Not ``PR_SET_PDEATHSIG``: that signal fires when the *thread* that started the child exits, and
  an engine is started on a task thread that may end long before the worker does. vLLM on CPU
  spawns its engine core (a fresh interpreter), so spawned children get the watcher through
  their command line and the pipe through the descriptors multiprocessing passes them.
* It stops (SIGTERM, ``--exit-when-idle``): ``stop_child_processes`` ends the multiprocessing
  children still running — SIGTERM, then SIGKILL after a short grace.
"""

from __future__ import annotations

import logging
import multiprocessing
import multiprocessing.util
import os
import signal
import threading
import time
from collections.abc import Sequence
from typing import Any

logger = logging.getLogger("hardlabel.worker")

_bound_pid: int | None = None
_read_fd: int | None = None
_write_fd: int | None = None  # set in the worker only


def bind_child_processes_to_this_process() -> None:
    """From now on, every multiprocessing child of this process (and theirs) dies when it dies."""
    global _write_fd
    if _bound_pid == os.getpid():
        return
    # os.pipe() descriptors are not inheritable: only children given them explicitly hold them.
    read_fd, _write_fd = os.pipe()
    _install(read_fd)


def watch_inherited_pipe(read_fd: int) -> None:
    """In a spawned child (its command line calls this): die with the worker, bind children too."""
    _watch(read_fd)
    _install(read_fd)


def _install(read_fd: int) -> None:
    global _bound_pid, _read_fd
    _bound_pid, _read_fd = os.getpid(), read_fd
    os.register_at_fork(after_in_child=_watch_in_forked_child)
    spawn = multiprocessing.util.spawnv_passfds
    if getattr(spawn, "_binds_children", False):
        return

    def spawn_bound(path: bytes, args: Sequence[Any], passfds: Sequence[int]) -> int:
        """multiprocessing's spawn (fork + exec of a fresh interpreter), with the watcher added."""
        if _read_fd is None or "-c" not in args:
            return spawn(path, args, passfds)
        command = list(args)
        program = command.index("-c") + 1
        command[program] = (
            f"import service.workers.child_processes as _c; _c.watch_inherited_pipe({_read_fd}); "
            + str(command[program])
        )
        return spawn(path, command, [*passfds, _read_fd])

    spawn_bound._binds_children = True  # type: ignore[attr-defined]
    multiprocessing.util.spawnv_passfds = spawn_bound


def _watch_in_forked_child() -> None:
    global _write_fd
    if _write_fd is not None:
        # Only the worker may hold the write end, or the end-of-file never comes. A grandchild
        # inherits this process's memory, where it is already None.
        os.close(_write_fd)
        _write_fd = None
    if _read_fd is not None:
        _watch(_read_fd)


def _watch(read_fd: int) -> None:
    threading.Thread(target=_die_with_worker, args=(read_fd,), name="die-with-worker", daemon=True).start()


def _die_with_worker(read_fd: int) -> None:
    try:
        while os.read(read_fd, 1):
            pass
    except OSError:
        pass
    os.kill(os.getpid(), signal.SIGKILL)


def stop_child_processes(grace_seconds: float) -> None:
    """SIGTERM the multiprocessing children still running, then SIGKILL those left after the grace;
    and stop multiprocessing's resource tracker (it would exit only once this process has)."""
    children = multiprocessing.active_children()
    if children:
        _stop(children, grace_seconds)
    from multiprocessing import resource_tracker

    stop_tracker = getattr(resource_tracker._resource_tracker, "_stop", None)
    if stop_tracker is not None:  # closes its pipe and waits for it (it cleans up what it tracked)
        stop_tracker()


def _stop(children: list[multiprocessing.process.BaseProcess], grace_seconds: float) -> None:
    for child in children:
        logger.info("stopping child process %s (pid %s)", child.name, child.pid)
        child.terminate()
    deadline = time.monotonic() + grace_seconds
    for child in children:
        child.join(max(deadline - time.monotonic(), 0))
    for child in children:
        if child.is_alive():
            logger.warning("child process %s (pid %s) ignored SIGTERM: killing it", child.name, child.pid)
            child.kill()
            child.join(1.0)
