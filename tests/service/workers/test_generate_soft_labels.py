"""A job whose stage asks for `logprobs: k` stores every sample's packed top-k beside it (real vLLM)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import text

from generator.soft_labels import HEADER_BYTES, unpack
from service.db.session import transaction
from service.workers.runner import run_worker
from tests.service.queue.queue_factories import create_job, job_row, queue_settings
from tests.service.workers.worker_factories import generate_recipe


def test_soft_labels_are_stored_compactly_per_sample(clean_queue: str, tiny_teacher: dict[str, Any]) -> None:
    url = clean_queue
    spec = generate_recipe(3, n=2, max_tokens=16)
    spec["stages"][0]["sampling"]["logprobs"] = 5
    job_id, _ = create_job(url, items=3, shard_size=3, spec=spec, teacher=tiny_teacher)
    run_worker(queue_settings(url), ["generate"], exit_when_idle=True)

    assert job_row(url, job_id).status == "succeeded"
    with transaction(url) as session:
        rows = session.execute(
            text("SELECT soft_labels, provenance FROM sample WHERE job_id = :j ORDER BY id"), {"j": job_id}
        ).all()
    assert len(rows) == 6
    for blob, provenance in rows:
        # ignore_eos: every completion is max_tokens long; 4 + 6k bytes a token plus the header.
        assert len(blob) == HEADER_BYTES + 16 * (4 + 6 * 5) == provenance["soft_labels"]["bytes"]
        labels = unpack(blob)
        assert len(labels) == 16
        assert all(len(ids) == 5 for ids in labels.topk_ids)


def test_samples_without_logprobs_store_no_soft_labels(
    clean_queue: str, tiny_teacher: dict[str, Any]
) -> None:
    url = clean_queue
    job_id, _ = create_job(
        url, items=1, shard_size=1, spec=generate_recipe(1, n=1, max_tokens=4), teacher=tiny_teacher
    )
    run_worker(queue_settings(url), ["generate"], exit_when_idle=True)
    with transaction(url) as session:
        stored = session.execute(
            text("SELECT soft_labels FROM sample WHERE job_id = :j"), {"j": job_id}
        ).all()
    assert [row.soft_labels for row in stored] == [None]
