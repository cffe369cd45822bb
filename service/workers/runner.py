"""The worker loop: register, claim, run handlers in threads, heartbeat, reap, stop gracefully.

One process runs ``concurrency`` tasks at once (threads; handlers of the same teacher share one
engine). The main thread only claims, reaps and waits, so signals are handled promptly even while
a handler blocks inside vLLM: the first SIGTERM/SIGINT asks handlers to finish their current chunk,
checkpoint and release their tasks; a second one exits at once (the leases then expire and the
reaper requeues the tasks).
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from secrets import token_hex
from types import FrameType
from typing import Any

from sqlalchemy import make_url, text

from service.db.session import transaction
from service.events import record_event
from service.queue.claims import ClaimedTask, claim_tasks
from service.queue.leases import LeaseLost, complete_task, release_task, retry_or_fail_task
from service.queue.owners import ACTIVE_SQL, owner_ids
from service.queue.reaper import reap_expired_tasks
from service.settings import Settings
from service.workers.context import PermanentTaskError, TaskContext, TaskOutcome, is_connection_error
from service.workers.heartbeat import Heartbeat
from service.workers.registry import get_handler, known_kinds
from service.workers.teachers import TEACHERS

logger = logging.getLogger("hardlabel.worker")

# Postgres keeps 63 bytes of application_name; it tags the worker's connections in pg_stat_activity.
APPLICATION_NAME_PREFIX = "hardlabel-worker"
MAX_ERROR_CHARS = 4000


def new_worker_id() -> str:
    return f"{socket.gethostname()[:40]}-{os.getpid()}-{token_hex(2)}"


def tagged_url(database_url: str, application_name: str) -> str:
    """The URL with an application_name, so an admin (or a test) can see and end these connections."""
    url = make_url(database_url).update_query_dict({"application_name": application_name[:63]})
    return url.render_as_string(hide_password=False)


def run_worker(
    settings: Settings,
    kinds: Sequence[str],
    *,
    concurrency: int = 1,
    stop: threading.Event | None = None,
    max_tasks: int | None = None,
    exit_when_idle: bool = False,
) -> None:
    """Claim and run tasks of ``kinds`` until stopped.

    Args:
        settings: database URL (the embedded server when unset), leases, intervals, chunk size.
        kinds: task kinds to claim (each must have a handler in the registry).
        concurrency: tasks run at once in this process.
        stop: set it to stop gracefully (in-process use). SIGTERM/SIGINT set it when this runs in
            the main thread.
        max_tasks: return after this many tasks were claimed and handled.
        exit_when_idle: return when no task of ``kinds`` is queued or running anywhere.
    """
    unknown = sorted(set(kinds) - set(known_kinds()))
    if unknown or not kinds:
        raise ValueError(f"unknown task kinds {unknown or list(kinds)}; known: {', '.join(known_kinds())}")
    if concurrency < 1:
        raise ValueError("concurrency must be at least 1")
    database_url = settings.database_url
    if not database_url:
        from service.embedded_db import ensure_database

        database_url = ensure_database(settings)
    worker = _WorkerLoop(
        settings, database_url, list(dict.fromkeys(kinds)), concurrency, stop or threading.Event()
    )
    worker.run(max_tasks=max_tasks, exit_when_idle=exit_when_idle)


class _WorkerLoop:
    def __init__(
        self,
        settings: Settings,
        database_url: str,
        kinds: list[str],
        concurrency: int,
        stop: threading.Event,
    ) -> None:
        self.settings = settings
        self.kinds = kinds
        self.concurrency = concurrency
        self.stop = stop
        self.worker_id = new_worker_id()
        self.url = tagged_url(database_url, f"{APPLICATION_NAME_PREFIX}:{self.worker_id}")
        self.heartbeat = Heartbeat(
            tagged_url(database_url, f"{APPLICATION_NAME_PREFIX}-heartbeat:{self.worker_id}"),
            self.worker_id,
            interval=settings.heartbeat_seconds,
            lease_seconds=settings.lease_seconds,
        )
        self._signals_seen = 0
        self._previous_handlers: dict[int, Any] = {}

    # --- lifecycle ----------------------------------------------------------------------------

    def run(self, *, max_tasks: int | None, exit_when_idle: bool) -> None:
        self._install_signal_handlers()
        try:
            self._register()
            logger.info(
                "worker %s started: kinds=%s concurrency=%d lease=%.0fs (pid %d)",
                self.worker_id,
                ",".join(self.kinds),
                self.concurrency,
                self.settings.lease_seconds,
                os.getpid(),
            )
            self.heartbeat.start()
            with ThreadPoolExecutor(self.concurrency, thread_name_prefix="hardlabel-task") as pool:
                try:
                    self._loop(pool, max_tasks=max_tasks, exit_when_idle=exit_when_idle)
                except BaseException:
                    self.stop.set()  # running handlers checkpoint and release before the error surfaces
                    raise
        finally:
            self.heartbeat.stop()
            self._unregister()
            self._restore_signal_handlers()
            logger.info("worker %s stopped", self.worker_id)

    def _loop(self, pool: ThreadPoolExecutor, *, max_tasks: int | None, exit_when_idle: bool) -> None:
        running: dict[Future[None], ClaimedTask] = {}
        claimed_total = 0
        next_reap = 0.0
        db_delay = 0.0
        while True:
            if self.stop.is_set():
                if running:
                    logger.info("stopping: waiting for %d task(s) to checkpoint and release", len(running))
                    wait(running)
                return
            try:
                if time.monotonic() >= next_reap:
                    self._reap()
                    next_reap = time.monotonic() + self.settings.reaper_seconds
                slots = self.concurrency - len(running)
                if max_tasks is not None:
                    slots = min(slots, max_tasks - claimed_total)
                for task in self._claim(slots):
                    claimed_total += 1
                    ctx = TaskContext(self.settings, self.url, self.worker_id, task, self.stop, logger=logger)
                    self.heartbeat.hold(task.id, task.lease_token, ctx.lease_lost)
                    running[pool.submit(self._run_task, ctx)] = task
                if not running:
                    if max_tasks is not None and claimed_total >= max_tasks:
                        return
                    if exit_when_idle and not self._work_left():
                        logger.info("no %s work left: exiting", "/".join(self.kinds))
                        return
                db_delay = 0.0
            except Exception as exc:
                if not is_connection_error(exc):
                    raise
                db_delay = min(max(db_delay * 2, 0.5), 10.0)
                logger.warning("database unavailable (%s); retrying in %.1fs", type(exc).__name__, db_delay)
                self.stop.wait(db_delay)
                continue
            if self.settings.teacher_idle_seconds > 0:
                TEACHERS.release_idle(self.settings.teacher_idle_seconds)
            if running:
                done, _ = wait(running, timeout=self.settings.poll_seconds, return_when=FIRST_COMPLETED)
                for future in done:
                    task = running.pop(future)
                    self.heartbeat.drop(task.id)
                    future.result()  # _run_task never raises; surfaces bugs in it
            else:
                self.stop.wait(self.settings.poll_seconds)

    # --- queue operations ---------------------------------------------------------------------

    def _claim(self, n: int) -> list[ClaimedTask]:
        if n <= 0:
            return []
        with transaction(self.url) as session:
            tasks = claim_tasks(session, self.worker_id, self.kinds, n, self.settings.lease_seconds)
        for task in tasks:
            logger.info(
                "claimed task %s (%s, attempt %d/%d, cursor %d)",
                task.id,
                task.kind,
                task.attempts,
                task.max_attempts,
                task.cursor,
            )
        return tasks

    def _reap(self) -> None:
        with transaction(self.url) as session:
            reaped = reap_expired_tasks(
                session, backoff_base=self.settings.retry_backoff_seconds, exclude_worker=self.worker_id
            )
        for task in reaped:
            logger.warning("reaper: task %s %s (%s)", task.id, task.status, task.last_error)

    def _work_left(self) -> bool:
        with transaction(self.url) as session:
            return bool(
                session.execute(
                    text(
                        "SELECT EXISTS (SELECT 1 FROM task WHERE kind = ANY(:kinds) "
                        f"AND status IN {ACTIVE_SQL})"
                    ),
                    {"kinds": self.kinds},
                ).scalar_one()
            )

    def _run_task(self, ctx: TaskContext) -> None:
        """Run one task to its end state; never raises (errors are recorded on the task)."""
        task = ctx.task
        try:
            outcome = get_handler(task.kind)(ctx)
            if outcome is TaskOutcome.DONE:
                finished = ctx.with_retry(
                    lambda s: complete_task(s, task, self.settings.lease_seconds, self.worker_id)
                )
                logger.info("task %s succeeded%s", task.id, " (its job/run is finished)" if finished else "")
            else:
                ctx.with_retry(lambda s: release_task(s, task, self.settings.lease_seconds, self.worker_id))
                logger.info("task %s released", task.id)
        except LeaseLost as lost:
            self._record_lease_lost(ctx, lost)
        except Exception as exc:
            permanent = isinstance(exc, PermanentTaskError)
            error = _error_text(exc)
            if permanent:
                logger.error("task %s failed: %s", task.id, error)
            else:
                logger.exception("task %s: attempt %d failed", task.id, task.attempts)
            try:
                status = ctx.with_retry(
                    lambda s: retry_or_fail_task(
                        s,
                        task,
                        error,
                        permanent=permanent,
                        lease_seconds=self.settings.lease_seconds,
                        backoff_base=self.settings.retry_backoff_seconds,
                        worker_id=self.worker_id,
                    )
                )
                logger.info("task %s is now %s", task.id, status)
            except LeaseLost as lost:
                self._record_lease_lost(ctx, lost)
            except Exception:
                # The database is gone for longer than the retry window: the lease expires and
                # the reaper of a live worker requeues the task.
                logger.exception("task %s: could not record its failure", task.id)

    def _record_lease_lost(self, ctx: TaskContext, lost: LeaseLost) -> None:
        task = ctx.task
        if lost.cancelled:
            kind, message = "stopped", f"worker {self.worker_id} stopped task {task.id}: cancelled"
            logger.info("task %s cancelled: stopped", task.id)
        else:
            kind, message = "lease_lost", f"worker {self.worker_id} lost task {task.id}: {lost.reason}"
            logger.warning("task %s: %s", task.id, lost)
        try:
            with transaction(self.url) as session:
                record_event(
                    session,
                    kind,
                    message,
                    task_id=task.id,
                    data={"worker_id": self.worker_id, "attempt": task.attempts},
                    **owner_ids(task),
                )
        except Exception as exc:
            logger.warning("could not record the event (%s)", type(exc).__name__)

    # --- worker row and signals ---------------------------------------------------------------

    def _register(self) -> None:
        with transaction(self.url) as session:
            session.execute(
                text(
                    "INSERT INTO worker (id, hostname, pid, kinds) VALUES (:id, :host, :pid, :kinds) "
                    "ON CONFLICT (id) DO UPDATE SET heartbeat_at = now(), stopped_at = NULL"
                ),
                {"id": self.worker_id, "host": socket.gethostname(), "pid": os.getpid(), "kinds": self.kinds},
            )

    def _unregister(self) -> None:
        try:
            with transaction(self.url) as session:
                session.execute(
                    text("UPDATE worker SET stopped_at = now() WHERE id = :id"), {"id": self.worker_id}
                )
        except Exception as exc:
            logger.warning("could not mark worker %s stopped (%s)", self.worker_id, type(exc).__name__)

    def _install_signal_handlers(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for signum in (signal.SIGTERM, signal.SIGINT):
            self._previous_handlers[signum] = signal.signal(signum, self._on_signal)

    def _restore_signal_handlers(self) -> None:
        for signum, handler in self._previous_handlers.items():
            signal.signal(signum, handler)
        self._previous_handlers.clear()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self._signals_seen += 1
        name = signal.Signals(signum).name
        if self._signals_seen > 1:
            logger.warning("%s again: exiting now (held tasks are requeued when their lease expires)", name)
            logging.shutdown()
            os._exit(128 + signum)
        logger.info("%s: finishing the current chunk, then releasing tasks (again to exit now)", name)
        self.stop.set()


def _error_text(exc: BaseException) -> str:
    text_ = f"{type(exc).__name__}: {exc}" if not isinstance(exc, PermanentTaskError) else str(exc)
    return text_[:MAX_ERROR_CHARS]
