"""What a task handler gets: the claimed task, settings, fenced transactions and the stop flags."""

from __future__ import annotations

import enum
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.orm import Session

from service.db.session import transaction
from service.queue.claims import ClaimedTask
from service.queue.leases import fence_task
from service.settings import Settings

T = TypeVar("T")

# How long a write is retried while the database is unreachable before the task gives up (its
# lease then expires and the reaper requeues it): a Postgres restart takes seconds.
MIN_WRITE_RETRY_SECONDS = 60.0
MAX_RETRY_DELAY_SECONDS = 5.0


class TaskOutcome(enum.Enum):
    """How a handler returned: the task is done, or it stopped early on request (to be released)."""

    DONE = "done"
    STOPPED = "stopped"


class PermanentTaskError(Exception):
    """A deterministic error (bad recipe, bad teacher config, missing model): retrying cannot help."""


def is_connection_error(exc: BaseException) -> bool:
    """Whether ``exc`` means the database connection broke (retry), rather than a bad statement."""
    if isinstance(exc, OperationalError | InterfaceError):
        return True
    return isinstance(exc, DBAPIError) and bool(exc.connection_invalidated)


@dataclass
class TaskContext:
    """Everything a handler needs to run one claimed task.

    Attributes:
        settings: the worker's settings.
        database_url: the worker's database URL (tagged with its application_name).
        worker_id: this worker's id (as in the worker table and task.worker_id).
        task: the claimed task, with its fencing token.
        stop: set when the worker is asked to stop: finish the current unit of work, checkpoint,
            and return TaskOutcome.STOPPED (the runner releases the task).
        lease_lost: set by the heartbeat when it found the task no longer held (reclaimed or
            cancelled); the next fenced write would fail anyway, this just stops work sooner.
        logger: the worker's logger.
    """

    settings: Settings
    database_url: str
    worker_id: str
    task: ClaimedTask
    stop: threading.Event
    lease_lost: threading.Event = field(default_factory=threading.Event)
    logger: logging.Logger = field(default_factory=lambda: logging.getLogger("hardlabel.worker"))

    @property
    def stop_requested(self) -> bool:
        return self.stop.is_set()

    def check_lease(self) -> None:
        """Raise LeaseLost (with the reason) when the heartbeat found the task no longer held.

        Costs nothing while the lease is fine; a flagged loss is confirmed with a fence, which
        also tells a cancel from a reclaim.
        """
        if self.lease_lost.is_set():
            self.fenced(lambda session, cursor: cursor)
            self.lease_lost.clear()  # a false alarm: the fence passed (the task is still ours)

    def fenced(self, write: Callable[[Session, int], T]) -> T:
        """Run ``write(session, committed_cursor)`` in one transaction that starts with the fence.

        The transaction is retried (with backoff) while the database connection is broken: the
        write must therefore be idempotent given the committed cursor it receives.

        Raises:
            LeaseLost: the task is no longer held; nothing was written.
        """

        def fenced_write(session: Session) -> T:
            cursor = fence_task(session, self.task, self.settings.lease_seconds)
            return write(session, cursor)

        return self.with_retry(fenced_write)

    def with_retry(self, work: Callable[[Session], T]) -> T:
        """Run ``work(session)`` in a transaction, retrying it while the database is unreachable."""
        deadline = time.monotonic() + max(MIN_WRITE_RETRY_SECONDS, 3 * self.settings.lease_seconds)
        delay = 0.2
        while True:
            try:
                with transaction(self.database_url) as session:
                    return work(session)
            except Exception as exc:
                if not is_connection_error(exc) or time.monotonic() + delay > deadline:
                    raise
                self.logger.warning(
                    "task %s: database write failed (%s); retrying in %.1fs",
                    self.task.id,
                    _one_line(exc),
                    delay,
                )
                time.sleep(delay)
                delay = min(delay * 2, MAX_RETRY_DELAY_SECONDS)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"
