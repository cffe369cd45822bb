"""Teacher engines, loaded once per worker process and shared by its tasks.

Loading a teacher (vLLM weights onto the GPU) is the slow part of a job; every shard of every job
with the same teacher config reuses the engine. At most ``max_engines`` stay loaded: a different
teacher evicts the least recently used idle one (a GPU rarely holds two big teachers). An engine no
task has used for ``HARDLABEL_TEACHER_IDLE_SECONDS`` is released (`release_idle`, called by the
worker loop), so a worker between jobs does not sit on the accelerator's memory; the next job of
that teacher loads it again. Calls into one engine are serialised: vLLM's offline ``LLM`` is not
thread-safe, and it batches a whole chunk per call anyway.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING

from generator.engines.base import GenerationRequest, GenerationResult, TeacherConfig

if TYPE_CHECKING:
    from generator.engines.base import Engine

logger = logging.getLogger("hardlabel.worker")


class TeacherLoadError(Exception):
    """The teacher could not be loaded (bad path, bad options): retrying the same config cannot help."""


class SharedEngine:
    """An engine used by several task threads: one call at a time."""

    def __init__(self, engine: Engine, key: str) -> None:
        self._engine = engine
        self._lock = threading.Lock()
        self.key = key
        self.users = 0
        # Set when a call failed: the next task reloads the teacher instead of retrying a dead engine.
        self.broken = False
        # When the last task using it let go (time.monotonic()); None while a task holds it.
        self.idle_since: float | None = None

    @property
    def engine(self) -> Engine:
        """The wrapped engine (benchmarks reach the raw `vllm.LLM` through it)."""
        return self._engine

    @property
    def model_id(self) -> str:
        return self._engine.model_id

    @property
    def revision(self) -> str | None:
        return self._engine.revision

    def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        with self._lock:
            try:
                return self._engine.generate(requests)
            except Exception:
                self.broken = True
                raise

    def close(self) -> None:
        with self._lock:
            self._engine.close()


def config_key(config: TeacherConfig) -> str:
    return json.dumps(config.model_dump(mode="json"), sort_keys=True)


class TeacherCache:
    """Engines by teacher config (see the module docstring)."""

    def __init__(self, max_engines: int = 1) -> None:
        self.max_engines = max_engines
        self._engines: OrderedDict[str, SharedEngine] = OrderedDict()
        self._lock = threading.Lock()
        self.loads = 0

    @contextmanager
    def use(self, config: TeacherConfig) -> Iterator[SharedEngine]:
        """The engine for ``config`` (loaded on first use), held for the duration of the block.

        Raises:
            TeacherLoadError: the engine could not be built from this config.
        """
        key = config_key(config)
        # Loading under the cache lock: two tasks of the same new teacher load it once.
        with self._lock:
            engine = self._engines.get(key)
            if engine is not None and engine.broken and engine.users == 0:
                logger.warning("reloading teacher %s after a failed call", engine.model_id)
                del self._engines[key]
                _close_quietly(engine)
                engine = None
            if engine is None:
                self._evict_idle(keep=self.max_engines - 1)
                engine = SharedEngine(_build_engine(config), key)
                self._engines[key] = engine
                self.loads += 1
            self._engines.move_to_end(key)
            engine.users += 1
            engine.idle_since = None
        try:
            yield engine
        finally:
            with self._lock:
                engine.users -= 1
                if engine.users == 0:
                    engine.idle_since = time.monotonic()

    @property
    def loaded(self) -> list[str]:
        """Model ids of the engines loaded now, least recently used first."""
        with self._lock:
            return [engine.model_id for engine in self._engines.values()]

    def release_idle(self, idle_seconds: float, *, now: float | None = None) -> list[str]:
        """Close the engines no task has used for `idle_seconds`; returns their model ids."""
        now = time.monotonic() if now is None else now
        released = []
        with self._lock:
            for key, engine in list(self._engines.items()):
                if (
                    engine.users == 0
                    and engine.idle_since is not None
                    and now - engine.idle_since >= idle_seconds
                ):
                    logger.info(
                        "releasing teacher %s: idle for %.0fs", engine.model_id, now - engine.idle_since
                    )
                    del self._engines[key]
                    _close_quietly(engine)
                    released.append(engine.model_id)
        return released

    def _evict_idle(self, keep: int) -> None:
        for key in list(self._engines):
            if len(self._engines) <= max(keep, 0):
                return
            engine = self._engines[key]
            if engine.users == 0:
                logger.info("unloading teacher %s", engine.model_id)
                del self._engines[key]
                _close_quietly(engine)

    def close(self) -> None:
        with self._lock:
            self._evict_idle(keep=0)


def _close_quietly(engine: SharedEngine) -> None:
    try:
        engine.close()
    except Exception as exc:  # a broken engine may fail to shut down; it is dropped either way
        logger.warning("closing teacher %s failed: %s", engine.model_id, exc)


def _build_engine(config: TeacherConfig) -> Engine:
    from generator.engines import build_engine

    logger.info("loading teacher %s (%s engine)", config.model, config.engine)
    try:
        return build_engine(config)
    except (MemoryError, KeyboardInterrupt):
        raise
    except Exception as exc:
        if "out of memory" in str(exc).lower():
            raise  # may pass once another process frees the accelerator: retry with backoff
        raise TeacherLoadError(
            f"teacher {config.model!r} failed to load: {type(exc).__name__}: {exc}"
        ) from exc


# One cache per worker process.
TEACHERS = TeacherCache()
