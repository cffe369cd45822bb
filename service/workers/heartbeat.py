"""The heartbeat thread: keeps the leases of the tasks a worker holds while its handlers block.

vLLM and TRL calls block for a long time, so leases are extended by a separate thread with its own
database engine (one connection). A failed beat is logged and retried on the next one; the engine
pings its connection before use, so the thread survives killed connections and Postgres restarts.
"""

from __future__ import annotations

import logging
import threading

from sqlalchemy import Engine, create_engine
from sqlalchemy.orm import Session

from service.queue.leases import HeldLease, extend_leases

logger = logging.getLogger("hardlabel.worker")


class Heartbeat(threading.Thread):
    """Extends the leases of the held tasks every ``interval`` seconds; flags the ones it lost."""

    def __init__(self, database_url: str, worker_id: str, *, interval: float, lease_seconds: float) -> None:
        super().__init__(name=f"heartbeat-{worker_id}", daemon=True)
        self.worker_id = worker_id
        self.interval = interval
        self.lease_seconds = lease_seconds
        self._engine: Engine = create_engine(database_url, pool_size=1, max_overflow=0, pool_pre_ping=True)
        self._held: dict[int, tuple[HeldLease, threading.Event]] = {}
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self.beats = 0
        self.failures = 0

    def hold(self, task_id: int, lease_token: int, lost: threading.Event) -> None:
        """Start extending this claim; ``lost`` is set if the task turns out to be no longer held."""
        with self._lock:
            self._held[task_id] = (HeldLease(task_id, lease_token), lost)

    def drop(self, task_id: int) -> None:
        with self._lock:
            self._held.pop(task_id, None)

    def beat(self) -> None:
        """One round: extend every held lease and refresh the worker row."""
        with self._lock:
            held = dict(self._held)
        with Session(self._engine) as session, session.begin():
            still_held = extend_leases(
                session, self.worker_id, [lease for lease, _ in held.values()], self.lease_seconds
            )
        for task_id, (_, lost) in held.items():
            if task_id not in still_held:
                with self._lock:
                    # Dropped meanwhile (the task finished): not a loss.
                    if self._held.get(task_id, (None, None))[1] is not lost:
                        continue
                if not lost.is_set():
                    logger.warning(
                        "task %s: lease no longer held (reclaimed, requeued or cancelled)", task_id
                    )
                    lost.set()
        self.beats += 1

    def run(self) -> None:
        while not self._stopped.wait(self.interval):
            try:
                self.beat()
            except Exception as exc:
                self.failures += 1
                logger.warning("heartbeat failed (%s); retrying in %.1fs", type(exc).__name__, self.interval)

    def stop(self) -> None:
        self._stopped.set()
        if self.is_alive() and threading.current_thread() is not self:
            self.join(timeout=self.interval + 5)
        self._engine.dispose()
