"""The per-process teacher cache (fake engines: this is about loading, sharing and evicting)."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from generator.engines.base import GenerationRequest, GenerationResult, TeacherConfig
from service.workers import teachers
from service.workers.teachers import TeacherCache


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
