"""The generate worker stops a job cleanly at its budget (a fake teacher with fixed token counts)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from sqlalchemy import text

from generator.engines.base import Completion, GenerationRequest, GenerationResult, TeacherConfig
from service.db.session import transaction
from service.workers import generate, teachers
from service.workers.runner import run_worker
from service.workers.teachers import TeacherCache
from tests.service.queue.queue_factories import create_job, event_kinds, job_row, queue_settings, task_row
from tests.service.workers.worker_factories import generate_recipe, sample_stats

PROMPT_TOKENS = 5
COMPLETION_TOKENS = 10


class FixedTokensEngine:
    """Answers every request with n completions of COMPLETION_TOKENS tokens each."""

    def __init__(self, config: TeacherConfig) -> None:
        self.config = config
        self.batches: list[int] = []

    @property
    def model_id(self) -> str:
        return self.config.model

    @property
    def revision(self) -> str | None:
        return None

    def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        self.batches.append(len(requests))
        return [
            GenerationResult(
                [Completion("42", COMPLETION_TOKENS, "stop") for _ in range(r.sampling.n)],
                prompt_tokens=PROMPT_TOKENS,
                latency_seconds=0.0,
            )
            for r in requests
        ]

    def close(self) -> None:
        pass


@pytest.fixture
def engines(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[FixedTokensEngine]]:
    built: list[FixedTokensEngine] = []

    def build(config: TeacherConfig) -> FixedTokensEngine:
        built.append(FixedTokensEngine(config))
        return built[-1]

    cache = TeacherCache()
    monkeypatch.setattr(teachers, "_build_engine", build)
    monkeypatch.setattr(generate, "TEACHERS", cache)
    yield built
    cache.close()


def run_job(url: str, *, items: int, budget: dict[str, Any], price: dict[str, float] | None = None) -> int:
    teacher: dict[str, Any] = {"model": "fixed-tokens", "engine": "openai", "base_url": "http://unused"}
    if price is not None:
        teacher["price_per_million_tokens"] = price
    job_id, _ = create_job(
        url,
        items=items,
        shard_size=4,
        spec=generate_recipe(items, n=1),
        teacher=teacher,
        params={"chunk_size": 2, "budget": budget},
    )
    run_worker(queue_settings(url), ["generate"], exit_when_idle=True)
    return job_id


@pytest.mark.parametrize(
    ("budget", "price"),
    [
        ({"max_completion_tokens": 50}, None),
        # 1000 per million output tokens: 20 tokens a chunk cost 0.02; the third chunk reaches 0.06.
        ({"max_cost": 0.05}, {"input": 0.0, "output": 1000.0}),
    ],
    ids=["completion-tokens", "cost"],
)
def test_the_job_stops_after_the_chunk_that_spends_its_budget_with_its_samples_kept(
    clean_queue: str,
    engines: list[FixedTokensEngine],
    budget: dict[str, Any],
    price: dict[str, float] | None,
) -> None:
    url = clean_queue
    job_id = run_job(url, items=12, budget=budget, price=price)  # 3 shards of 4, chunks of 2 items

    job = job_row(url, job_id)
    assert job.status == "cancelled"
    assert job.error is not None
    assert job.error.startswith("budget reached: ")
    # Chunks of 20 completion tokens: 20, 40, then 60 crosses the budget (the 3rd chunk is stored).
    assert (job.items_done, job.samples_written, job.tokens_out) == (6, 6, 60)
    assert job.tokens_in == 6 * PROMPT_TOKENS
    assert sample_stats(url, job_id) == (6, 6)
    statuses = _task_statuses(url, job_id)
    assert statuses == ["succeeded", "cancelled", "cancelled"]  # nothing left queued or running
    kinds = event_kinds(url, job_id)
    assert kinds.count("checkpoint") == 3
    assert kinds.count("budget_reached") == 1
    assert "finished" not in kinds
    # The crossing chunk was foreseen: it was stored before a 4th one was generated (no paid waste).
    assert sum(len(e.batches) for e in engines) == 3


def test_a_budget_spent_by_the_jobs_last_chunk_lets_it_succeed(
    clean_queue: str, engines: list[FixedTokensEngine]
) -> None:
    url = clean_queue
    job_id = run_job(url, items=4, budget={"max_completion_tokens": 40})
    job = job_row(url, job_id)
    assert job.status == "succeeded", job.error
    assert job.error is None
    assert (job.items_done, job.tokens_out) == (4, 40)
    assert "budget_reached" not in event_kinds(url, job_id)


def test_an_unspent_budget_changes_nothing(clean_queue: str, engines: list[FixedTokensEngine]) -> None:
    url = clean_queue
    job_id = run_job(url, items=8, budget={"max_cost": 100.0}, price={"input": 1.0, "output": 1.0})
    job = job_row(url, job_id)
    assert job.status == "succeeded", job.error
    assert (job.items_done, job.samples_written, job.tokens_out) == (8, 8, 80)


def _task_statuses(url: str, job_id: int) -> list[str]:
    with transaction(url) as session:
        rows = session.execute(text("SELECT id FROM task WHERE job_id = :j ORDER BY id"), {"j": job_id})
        ids = [int(r[0]) for r in rows]
    return [task_row(url, t).status for t in ids]
