"""The generate worker in-process with real vLLM on the tiny model: results, exactly-once, errors, cancel."""

from __future__ import annotations

import threading
from typing import Any

from sqlalchemy import text

from generator.samples import ChunkResult, GeneratedSample
from service.db.session import transaction
from service.queue.claims import claim_tasks
from service.workers.context import TaskContext
from service.workers.generate import store_chunk
from service.workers.runner import run_worker
from service.workers.sample_store import insert_samples, sample_rows
from tests.factories import wait_until
from tests.service.queue.queue_factories import create_job, event_kinds, job_row, queue_settings, task_row
from tests.service.workers.worker_factories import checkpoints, generate_recipe, sample_stats


def test_a_job_runs_to_completion_with_every_sample_stored(
    clean_queue: str, tiny_teacher: dict[str, Any]
) -> None:
    url = clean_queue
    job_id, task_ids = create_job(
        url, items=10, shard_size=4, spec=generate_recipe(10), teacher=tiny_teacher, params={"chunk_size": 3}
    )
    run_worker(queue_settings(url), ["generate"], exit_when_idle=True)

    job = job_row(url, job_id)
    assert job.status == "succeeded", job.error
    assert (job.items_done, job.samples_written) == (10, 20)
    assert job.tokens_in > 0
    assert job.tokens_out == 20 * 24  # ignore_eos: every completion is max_tokens long
    assert job.started_at is not None
    assert job.finished_at is not None
    assert sample_stats(url, job_id) == (20, 20)
    assert all(task_row(url, t).status == "succeeded" for t in task_ids)
    assert [task_row(url, t).cursor for t in task_ids] == [4, 4, 2]
    with transaction(url) as session:
        rows = session.execute(
            text(
                "SELECT item_index, stage, sample_index, question, raw_text, parse_status, answer, inputs, "
                "provenance FROM sample WHERE job_id = :j ORDER BY item_index, sample_index"
            ),
            {"j": job_id},
        ).all()
    assert [(r.item_index, r.sample_index) for r in rows] == [(i, k) for i in range(10) for k in range(2)]
    first = rows[0]
    assert first.question == "What is 0+0?"
    assert first.stage == "answer"
    assert first.parse_status == "ok"
    assert isinstance(first.answer, str)
    assert first.inputs["reference"] == "0"
    assert first.provenance["teacher_model"] == tiny_teacher["model"]
    assert first.provenance["completion_tokens"] == 24
    kinds = event_kinds(url, job_id)
    assert kinds.count("claimed") == 3
    assert kinds.count("checkpoint") == 2 + 2 + 1  # chunks of 3 over shards of 4, 4, 2
    assert kinds[-1] == "finished"


def test_the_job_seed_drives_sampling_and_reruns_reproduce(
    clean_queue: str, tiny_teacher: dict[str, Any]
) -> None:
    url = clean_queue
    jobs = [
        create_job(url, items=4, shard_size=4, spec=generate_recipe(4, n=1), teacher=tiny_teacher, seed=seed)[
            0
        ]
        for seed in (1, 1, 2)
    ]
    run_worker(queue_settings(url), ["generate"], exit_when_idle=True)

    def texts(job_id: int) -> list[str]:
        with transaction(url) as session:
            rows = session.execute(
                text("SELECT raw_text FROM sample WHERE job_id = :j ORDER BY item_index"), {"j": job_id}
            )
            return [r[0] for r in rows]

    assert texts(jobs[0]) == texts(jobs[1])
    assert texts(jobs[0]) != texts(jobs[2])


def test_a_redone_chunk_writes_nothing_twice(clean_queue: str) -> None:
    url = clean_queue
    job_id, (task_id,) = create_job(url, items=4, shard_size=4)
    with transaction(url) as session:
        (task,) = claim_tasks(session, "w", ["generate"], 1, 30.0)
    samples = [
        GeneratedSample(
            item_index=i,
            stage="answer",
            sample_index=0,
            parent_sample_index=None,
            question=f"q{i}",
            answer=None if i == 1 else f"a{i}",
            raw_text=f"raw\x00{i}\ud800",
            parsed=None if i == 1 else f"a{i}",
            parse_ok=i != 1,
            parse_error="not a number" if i == 1 else None,
            inputs={"a": i},
            provenance={"note": "nul \x00 inside json", "lone": "\udc00"},
        )
        for i in range(2)
    ]
    chunk = ChunkResult(
        item_indices=[0, 1], samples=samples, prompt_tokens=10, completion_tokens=5, elapsed_seconds=0
    )
    ctx = TaskContext(queue_settings(url), url, "w", task, threading.Event())

    assert store_chunk(ctx, job_id, chunk, item_start=0, cursor=0) == 2
    # The same chunk again, as if the first commit's answer had been lost: recognised by the cursor.
    assert store_chunk(ctx, job_id, chunk, item_start=0, cursor=0) == 2
    stored = job_row(url, job_id)
    assert (stored.items_done, stored.samples_written, stored.tokens_in, stored.tokens_out) == (2, 2, 10, 5)
    assert task_row(url, task_id).cursor == 2
    with transaction(url) as session:  # a crashed holder's rows, redone by the next holder
        assert insert_samples(session, sample_rows(job_id, samples)) == 0
        failed = session.execute(
            text(
                "SELECT parse_status, parse_error, parsed IS NULL, answer, raw_text, provenance FROM sample "
                "WHERE job_id = :j AND item_index = 1"
            ),
            {"j": job_id},
        ).one()
    assert failed[:4] == ("failed", "not a number", True, None)
    # Postgres text cannot hold NUL, UTF-8 no lone surrogate (an OpenAI-compatible server can send one)
    assert failed[4] == "raw\ufffd1\ufffd"
    assert failed[5] == {"note": "nul \ufffd inside json", "lone": "\ufffd"}


def test_a_teacher_that_cannot_load_fails_the_job_at_once(
    clean_queue: str, tiny_teacher: dict[str, Any]
) -> None:
    url = clean_queue
    missing = {**tiny_teacher, "model": "/nonexistent/teacher"}
    job_id, (task_id,) = create_job(
        url, items=2, shard_size=2, spec=generate_recipe(2), teacher=missing, max_attempts=5
    )
    run_worker(queue_settings(url), ["generate"], exit_when_idle=True)
    row = task_row(url, task_id)
    assert (row.status, row.attempts) == ("failed", 1)
    assert "/nonexistent/teacher" in (row.last_error or "")
    job = job_row(url, job_id)
    assert job.status == "failed"
    assert "failed to load" in (job.error or "")


def test_bad_teacher_config_and_bad_recipe_fail_with_a_precise_error(
    clean_queue: str, tiny_teacher: dict[str, Any]
) -> None:
    url = clean_queue
    bad_teacher, _ = create_job(
        url, items=1, shard_size=1, spec=generate_recipe(1), teacher={**tiny_teacher, "dtyp": 1}
    )
    bad_recipe, _ = create_job(
        url, items=1, shard_size=1, spec={"name": "x", "stages": []}, teacher=tiny_teacher
    )
    run_worker(queue_settings(url), ["generate"], exit_when_idle=True)
    teacher_error = job_row(url, bad_teacher).error
    assert "invalid teacher config: dtyp" in (teacher_error or "")
    recipe_error = job_row(url, bad_recipe).error
    assert "invalid recipe" in (recipe_error or "")


def test_cancel_stops_generation_within_one_chunk(clean_queue: str, tiny_teacher: dict[str, Any]) -> None:
    url = clean_queue
    job_id, _ = create_job(
        url,
        items=80,
        shard_size=80,
        spec=generate_recipe(80, max_tokens=48),
        teacher=tiny_teacher,
        params={"chunk_size": 2},
    )
    stop = threading.Event()
    worker = threading.Thread(
        target=run_worker, args=(queue_settings(url), ["generate"]), kwargs={"stop": stop}, daemon=True
    )
    worker.start()
    wait_until(lambda: checkpoints(url, job_id) >= 2, what="two checkpoints")
    with transaction(url) as session:  # what the API's cancel does
        session.execute(
            text(
                "UPDATE task SET status = 'cancelled' WHERE job_id = :id AND status IN ('queued', 'running')"
            ),
            {"id": job_id},
        )
        session.execute(text("UPDATE job SET status = 'cancelled' WHERE id = :id"), {"id": job_id})
    at_cancel = checkpoints(url, job_id)
    wait_until(lambda: "stopped" in event_kinds(url, job_id), what="the worker to stop")
    assert checkpoints(url, job_id) == at_cancel
    stored, _ = sample_stats(url, job_id)
    assert stored == at_cancel * 2 * 2  # what was written stays: 2 items x n=2 per chunk
    assert job_row(url, job_id).status == "cancelled"
    stop.set()
    worker.join(timeout=30)
    assert not worker.is_alive()


def test_a_shard_whose_last_chunk_commit_was_lost_resumes_with_one_worker(
    clean_queue: str, tiny_teacher: dict[str, Any], monkeypatch: Any
) -> None:
    """A Postgres crash can drop the newest chunk commits (no WAL flush): the holder resumes the shard."""
    import service.workers.generate as generate

    url = clean_queue
    job_id, (task_id,) = create_job(
        url, items=8, shard_size=8, spec=generate_recipe(8), teacher=tiny_teacher, params={"chunk_size": 2}
    )
    real_write_chunk = generate.write_chunk
    writes: list[int] = []

    def write_then_lose_the_second_commit(
        ctx: Any, job: int, chunk: Any, item_start: int, cursor: int
    ) -> int:
        new_cursor = real_write_chunk(ctx, job, chunk, item_start, cursor)
        writes.append(new_cursor)
        if len(writes) == 2:  # undo chunk 2's commit as a crash after an unflushed commit would
            with transaction(url) as session:
                lost = session.execute(
                    text("DELETE FROM sample WHERE job_id = :j AND item_index >= 2 AND item_index < 4"),
                    {"j": job_id},
                ).rowcount
                session.execute(text("UPDATE task SET cursor = 2 WHERE id = :t"), {"t": task_id})
                session.execute(
                    text(
                        "UPDATE job SET items_done = items_done - 2, samples_written = samples_written - :n "
                        "WHERE id = :j"
                    ),
                    {"n": lost, "j": job_id},
                )
        return new_cursor

    monkeypatch.setattr(generate, "write_chunk", write_then_lose_the_second_commit)
    stop = threading.Event()
    worker = threading.Thread(
        target=run_worker,
        args=(queue_settings(url), ["generate"]),
        kwargs={"stop": stop, "exit_when_idle": True},
    )
    worker.start()
    try:
        wait_until(lambda: job_row(url, job_id).status == "succeeded", timeout=120, what="job succeeded")
    finally:
        stop.set()
        worker.join(timeout=60)
    assert not worker.is_alive()
    job = job_row(url, job_id)
    assert (job.items_done, job.samples_written) == (8, 16)
    assert sample_stats(url, job_id) == (16, 16)
    assert task_row(url, task_id).status == "succeeded"
    kinds = event_kinds(url, job_id)
    assert "released" in kinds
    assert "lease_lost" not in kinds
