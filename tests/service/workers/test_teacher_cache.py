"""The per-process teacher cache: loading, sharing, evicting (fake engines) and releasing idle
teachers (fake engines for the clock, then a real worker with vLLM on the tiny model)."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Any

import pytest

from generator.engines.base import Engine, GenerationRequest, GenerationResult, TeacherConfig
from service.workers import teachers
from service.workers.runner import run_worker
from service.workers.teachers import TEACHERS, TeacherCache
from tests.factories import wait_until
from tests.service.queue.queue_factories import create_job, job_row, queue_settings
from tests.service.workers.worker_factories import generate_recipe


class FakeEngine:
    def __init__(self, config: TeacherConfig) -> None:
        self.config = config
        self.closed = False
        self.fail = False

    @property
    def model_id(self) -> str:
        return self.config.model

    @property
    def revision(self) -> str | None:
        return None

    def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        if self.fail:
            raise RuntimeError("engine died")
        return []

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def built(monkeypatch: pytest.MonkeyPatch) -> list[FakeEngine]:
    engines: list[FakeEngine] = []

    def build(config: TeacherConfig) -> FakeEngine:
        engines.append(FakeEngine(config))
        return engines[-1]

    monkeypatch.setattr(teachers, "_build_engine", build)
    return engines


def test_one_load_per_teacher_config_and_idle_ones_are_evicted(built: list[FakeEngine]) -> None:
    cache = TeacherCache(max_engines=1)
    a, b = TeacherConfig(model="a"), TeacherConfig(model="b")
    with cache.use(a) as first, cache.use(a) as second:  # two tasks of the same teacher share it
        assert first is second
    with cache.use(a):
        pass
    assert len(built) == 1
    with cache.use(b) as other:
        assert other.model_id == "b"
    assert [e.config.model for e in built] == ["a", "b"]
    assert built[0].closed  # a GPU holds one teacher: the idle one was unloaded
    assert not built[1].closed


def test_an_engine_in_use_is_never_evicted(built: list[FakeEngine]) -> None:
    cache = TeacherCache(max_engines=1)
    with cache.use(TeacherConfig(model="a")), cache.use(TeacherConfig(model="b")):
        assert not built[0].closed
    cache.close()
    assert all(e.closed for e in built)


def test_a_failed_call_makes_the_next_task_reload_the_teacher(built: list[FakeEngine]) -> None:
    cache = TeacherCache()
    config = TeacherConfig(model="a")
    with cache.use(config) as engine:
        built[0].fail = True
        with pytest.raises(RuntimeError, match="engine died"):
            engine.generate([])
    with cache.use(config) as engine:
        assert engine.generate([]) == []
    assert len(built) == 2
    assert built[0].closed


def test_only_teachers_idle_for_the_whole_idle_time_are_released(built: list[FakeEngine]) -> None:
    cache = TeacherCache(max_engines=2)
    a, b = TeacherConfig(model="a"), TeacherConfig(model="b")
    with cache.use(a):
        pass
    let_go = time.monotonic()  # a's last user let go at or before this
    with cache.use(b):
        assert cache.release_idle(10.0, now=let_go + 9.0) == []
        assert cache.release_idle(10.0, now=let_go + 10.0) == ["a"]  # b is in use: kept
        assert cache.release_idle(0.0, now=let_go + 1e6) == []
    assert built[0].closed
    assert not built[1].closed
    assert cache.loaded == ["b"]
    with cache.use(a):  # the next job of a released teacher loads it again
        pass
    assert [e.config.model for e in built] == ["a", "b", "a"]
    assert cache.loads == 3


def test_a_worker_releases_an_idle_vllm_teacher_and_reloads_it_for_the_next_job(
    clean_queue: str, tiny_teacher: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    url = clean_queue
    TEACHERS.close()  # engines earlier tests of this process left loaded
    engines: list[Engine] = []
    build = teachers._build_engine

    def recording_build(config: TeacherConfig) -> Engine:
        engines.append(build(config))
        return engines[-1]

    monkeypatch.setattr(teachers, "_build_engine", recording_build)
    stop = threading.Event()
    worker = threading.Thread(
        target=run_worker,
        args=(queue_settings(url, teacher_idle_seconds=1.0), ["generate"]),
        kwargs={"stop": stop},
    )
    worker.start()
    try:
        first, _ = create_job(url, items=4, shard_size=4, spec=generate_recipe(4, n=1), teacher=tiny_teacher)
        wait_until(lambda: job_row(url, first).status == "succeeded", 180, "the first job")
        assert len(engines) == 1
        wait_until(lambda: not TEACHERS.loaded, 30, "the idle teacher's release")
        assert getattr(engines[0], "llm", "not vllm") is None, "the vLLM engine was shut down"

        second, _ = create_job(url, items=4, shard_size=4, spec=generate_recipe(4, n=1), teacher=tiny_teacher)
        wait_until(lambda: job_row(url, second).status == "succeeded", 180, "the second job")
        assert len(engines) == 2, "the next job loaded the teacher again"
        assert job_row(url, second).samples_written == 4
    finally:
        stop.set()
        worker.join(60)
    assert not worker.is_alive()
