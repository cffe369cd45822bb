"""`hardlabel worker`: claim queue tasks and run them until stopped (SIGTERM: finish the chunk, release)."""

from __future__ import annotations

import logging
from typing import NoReturn

import click

from service.cli import CliError

# How long child processes still running when the worker stops get to exit on SIGTERM before SIGKILL.
CHILD_STOP_SECONDS = 2.0


def _resolve_kinds(option: str | None, configured: str) -> list[str]:
    from service.workers.registry import known_kinds

    known = known_kinds()
    if option is None:
        # The configured default names every kind the service has; run those this build can handle.
        kinds = [k.strip() for k in configured.split(",") if k.strip() in known]
        if not kinds:
            raise CliError(f"HARDLABEL_WORKER_KINDS names no known task kind (known: {', '.join(known)})")
        return kinds
    kinds = [k.strip() for k in option.split(",") if k.strip()]
    unknown = [k for k in kinds if k not in known]
    if unknown or not kinds:
        raise CliError(
            f"--kinds: unknown task kind {', '.join(unknown) or '(none given)'} (known: {', '.join(known)})"
        )
    return list(dict.fromkeys(kinds))


@click.command("worker")
@click.option("--kinds", default=None, help="Task kinds to claim, comma-separated (e.g. generate,filter).")
@click.option(
    "--concurrency", default=1, show_default=True, type=click.IntRange(1, 64), help="Tasks at once."
)
@click.option("--exit-when-idle", is_flag=True, help="Exit when no task of these kinds is queued or running.")
@click.option("--max-tasks", type=click.IntRange(1), default=None, help="Exit after this many tasks.")
def worker(kinds: str | None, concurrency: int, exit_when_idle: bool, max_tasks: int | None) -> None:
    """Run a worker: claim tasks from Postgres and run them (SIGTERM stops it gracefully)."""
    from pydantic import ValidationError
    from sqlalchemy import make_url

    from service.cli.database import resolve_database
    from service.settings import Settings
    from service.workers.runner import run_worker

    try:
        settings = Settings()
    except ValidationError as exc:
        first = exc.errors()[0]
        raise CliError(f"HARDLABEL_{str(first['loc'][0]).upper()}: {first['msg']}") from exc
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    chosen = _resolve_kinds(kinds, settings.worker_kinds)
    # A worker that started the embedded Postgres must run its atexit handlers (they let go of it).
    owns_embedded_database = not settings.database_url
    settings = resolve_database(settings, command="worker")
    shown = make_url(settings.database_url or "").render_as_string(hide_password=True)
    click.echo(
        f"hardlabel worker: kinds {','.join(chosen)}, concurrency {concurrency}, database {shown} "
        f"(Ctrl-C or SIGTERM: finish the current chunk and release; twice: exit now)",
        err=True,
    )
    from service.workers.child_processes import bind_child_processes_to_this_process, stop_child_processes

    # vLLM starts its engine core as a multiprocessing child from a task thread: tie it (and any
    # other child) to this process, so that not even `kill -9` of the worker leaves it running.
    bind_child_processes_to_this_process()
    try:
        run_worker(
            settings,
            chosen,
            concurrency=concurrency,
            max_tasks=max_tasks,
            exit_when_idle=exit_when_idle,
        )
    finally:
        # A vLLM teacher runs its engine in a child process, which Python waits for at exit: without
        # this, a stopped worker that had generated anything would never exit.
        from service.workers.teachers import TEACHERS

        TEACHERS.close()
        stop_child_processes(CHILD_STOP_SECONDS)
    if not owns_embedded_database:
        _exit_skipping_interpreter_teardown()


def _exit_skipping_interpreter_teardown() -> NoReturn:
    """Exit 0 now that every task is released and every engine and child process stopped.

    The interpreter's own teardown after a vLLM engine ran takes seconds (10 s measured on a loaded
    2-core machine, in C, no Python frame), and vLLM's exit handlers can wait on sockets of the
    engine it already stopped: all of it frees state nothing needs any more.
    """
    import os
    import sys

    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


commands: list[click.Command] = [worker]
