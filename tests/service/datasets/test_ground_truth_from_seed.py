"""Ground truth mixed in by design (issue #13 point 2): a version blends ground-truth rows taken from
its own samples' seed references with teacher rows at a stated ratio, every row says its `source`,
no test-split question leaks in as ground truth, and the card states the blend."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from service.db.models import DatasetRow, Sample
from service.db.session import transaction
from service.settings import Settings
from service.workers.runner import run_worker
from tests.service.conftest import Caller, create_version, insert_samples, make_job, sample_row

SYSTEM = "Answer with a number."
PROVENANCE = ["source", "sample_id", "job_id", "teacher", "item_index"]


ITEMS = 40  # per job; even items have two samples, odd ones one: 60 samples per job


@pytest.fixture(scope="module")
def seeded(client: TestClient, reviewer: Caller, curation_db_url: str) -> dict[str, Any]:
    """Two jobs of ITEMS items whose seeds carry the reference (`reference`, and `meta.answer`);
    job 2's last item has none, and both jobs' item 0 asks the same question."""
    jobs = []
    for j in range(2):
        job_id = make_job(curation_db_url, teacher=f"/models/seed-teacher-{j}")
        rows = []
        for i in range(ITEMS):
            question = "What is 0 + 100?" if i == 0 else f"Job {j}: what is {i} + 100?"
            inputs: dict[str, Any] = {"n": i, "reference": i + 100, "meta": {"answer": f"{i + 100}"}}
            if j == 1 and i == ITEMS - 1:
                inputs = {"n": i}
            for k in range(2 if i % 2 == 0 else 1):
                answer = f"{i + 100 + (1 if i % 4 == 0 and k == 0 else 0)}"  # the teacher is wrong at times
                rows.append(sample_row(job_id, i, question, answer, sample_index=k, inputs=inputs))
        insert_samples(curation_db_url, rows)
        client.post(
            "/v1/samples/review",
            json={"query": {"job_id": job_id}, "action": "accept"},
            headers=reviewer.headers,
        )
        jobs.append(job_id)
    return {"jobs": jobs}


def version_rows(url: str, dataset_id: int) -> list[dict[str, Any]]:
    with transaction(url) as session:
        rows = session.execute(
            select(
                DatasetRow.row_index,
                DatasetRow.split,
                DatasetRow.source,
                DatasetRow.sample_id,
                DatasetRow.question,
                DatasetRow.answer,
                DatasetRow.system,
                DatasetRow.extra,
            )
            .where(DatasetRow.dataset_id == dataset_id)
            .order_by(DatasetRow.row_index)
        ).all()
    return [r._asdict() for r in rows]


def body(jobs: list[int], ground_truth: dict[str, Any], **more: Any) -> dict[str, Any]:
    return {
        "name": "seed-blend",
        "query": {"job_ids": jobs},
        "split": {"test_fraction": 0.25, "seed": 7},
        "ground_truth": ground_truth,
        "system": SYSTEM,
        **more,
    }


def test_seed_references_are_mixed_at_the_ratio_without_leaking_test_items(
    client: TestClient, admin: Caller, viewer: Caller, curation_db_url: str, seeded: dict[str, Any]
) -> None:
    request = body(seeded["jobs"], {"from_seed_field": "reference", "ratio": 0.25})
    response = create_version(client, admin.headers, json=request)
    assert response.status_code == 200, response.text
    version = response.json()
    assert version["status"] == "succeeded", version
    counts = version["row_counts"]
    # 120 teacher rows of 80 items; items are split, so the round(80 × 0.25) = 20 test items take
    # between 20 and 40 rows (even items have two); ratio 0.25 ⇒ round(train × 0.25 / 0.75) more.
    test = counts["test"]
    assert 20 <= test <= 40
    blend = round((120 - test) * 0.25 / 0.75)
    total = 120 + blend
    assert counts == {
        "total": total,
        "train": total - test,
        "test": test,
        "teacher": 120,
        "ground_truth": blend,
    }
    assert abs(counts["ground_truth"] - 0.25 * counts["train"]) <= 1

    rows = version_rows(curation_db_url, version["id"])
    assert [r["row_index"] for r in rows] == list(range(total))
    gt = [r for r in rows if r["source"] == "ground_truth"]
    teacher = [r for r in rows if r["source"] == "teacher"]
    assert len(gt) == blend
    assert all(r["split"] == "train" and r["sample_id"] is None and r["system"] == SYSTEM for r in gt)
    assert [r["row_index"] for r in gt] == list(range(120, total))  # after the teacher rows
    # The answer is the seed's reference, the question the item's own.
    for r in gt:
        item = r["extra"]["item_index"]
        assert r["answer"] == str(item + 100)
        assert r["question"] in {
            "What is 0 + 100?",
            f"Job 0: what is {item} + 100?",
            f"Job 1: what is {item} + 100?",
        }
        assert r["extra"]["seed_field"] == "reference"
        assert r["extra"]["job_id"] in seeded["jobs"]
    # One row per (job, item), in (job, item) order.
    keys = [(r["extra"]["job_id"], r["extra"]["item_index"]) for r in gt]
    assert keys == sorted(set(keys))
    # No leakage: no ground-truth item has a teacher row in the test split, nor its question a test row.
    test_questions = {r["question"] for r in teacher if r["split"] == "test"}
    assert not {r["question"] for r in gt} & test_questions
    with transaction(curation_db_url) as session:
        test_items = set(
            session.execute(
                select(Sample.job_id, Sample.item_index)
                .join(DatasetRow, DatasetRow.sample_id == Sample.id)
                .where(DatasetRow.dataset_id == version["id"], DatasetRow.split == "test")
            ).tuples()
        )
    assert test_items
    assert not set(keys) & test_items

    lineage = version["lineage"]["ground_truth"]
    assert lineage["from"] == "seed_field"
    assert lineage["from_seed_field"] == "reference"
    assert lineage["rows"] == blend
    assert lineage["requested_ratio"] == 0.25
    assert abs(lineage["actual_ratio"] - blend / (total - test)) < 1e-4
    assert abs(lineage["actual_ratio"] - 0.25) < 0.01
    assert lineage["teacher_train_rows"] == 120 - test
    # 79 items carry a reference; those the test split asks are held out, the rest available.
    assert lineage["available"] + lineage["held_out_items"] == 2 * ITEMS - 1
    assert lineage["held_out_items"] >= len(test_items - {(seeded["jobs"][1], ITEMS - 1)})

    # Deterministic: the same request gives the same rows.
    again = create_version(client, admin.headers, json=request).json()
    assert again["digest"] == version["digest"]

    card = client.get(f"/v1/datasets/{version['id']}/card", headers=viewer.headers).text
    assert "## Ground truth" in card
    assert f"{blend} of its {total - test} rows are ground truth, {120 - test} the teacher's" in card
    assert "- **Stated ratio**: 0.25 (25.0%)" in card
    assert "- **Actual ratio** in the train split: 0.2" in card
    assert "the reference in `inputs.reference` is the answer to the item's question" in card
    assert f"{lineage['held_out_items']:,} held out because the test split asks them" in card


def test_provenance_export_has_a_source_per_row(
    client: TestClient, admin: Caller, viewer: Caller, curation_db_url: str, seeded: dict[str, Any]
) -> None:
    request = body(seeded["jobs"], {"from_seed_field": "meta.answer", "ratio": 0.1}, name="seed-provenance")
    version = create_version(client, admin.headers, json=request).json()
    assert version["status"] == "succeeded", version
    assert version["row_counts"]["ground_truth"] == 10  # round(90 × 0.1 / 0.9)
    url = f"/v1/datasets/{version['id']}/export"
    for split in ("train", "test"):
        response = client.get(
            url,
            params={"format": "prompt_completion", "split": split, "provenance": "true"},
            headers=viewer.headers,
        )
        assert response.status_code == 200, response.text
        exported = [json.loads(line) for line in response.text.splitlines()]
        rows = [r for r in version_rows(curation_db_url, version["id"]) if r["split"] == split]
        assert [list(r)[2:] for r in exported] == [PROVENANCE] * len(rows)
        assert [r["source"] for r in exported] == [r["source"] for r in rows]
        for got, row in zip(exported, rows, strict=True):
            if row["source"] == "teacher":
                assert got["sample_id"] == row["sample_id"]
                assert got["teacher"] in {"/models/seed-teacher-0", "/models/seed-teacher-1"}
            else:
                # Seed ground truth: no sample or teacher, but the job and item it came from.
                assert got["sample_id"] is None
                assert got["teacher"] is None
                assert (got["job_id"], got["item_index"]) == (
                    row["extra"]["job_id"],
                    row["extra"]["item_index"],
                )
                assert got["completion"] == [{"role": "assistant", "content": str(got["item_index"] + 100)}]
        sources = {r["source"] for r in exported}
        assert sources == ({"teacher", "ground_truth"} if split == "train" else {"teacher"})
    card = client.get(
        f"/v1/datasets/{version['id']}/card", params={"provenance": "true"}, headers=viewer.headers
    )
    assert "`source` (`teacher` or `ground_truth`)" in card.text
    assert "`inputs.meta.answer`" in card.text


def test_without_a_ratio_every_available_reference_is_used(
    client: TestClient, admin: Caller, viewer: Caller, seeded: dict[str, Any]
) -> None:
    request = body(seeded["jobs"], {"from_seed_field": "reference"}, name="seed-all")
    version = create_version(client, admin.headers, json=request).json()
    lineage = version["lineage"]["ground_truth"]
    assert version["row_counts"]["ground_truth"] == lineage["available"] == lineage["rows"]
    assert lineage["requested_ratio"] is None
    card = client.get(f"/v1/datasets/{version['id']}/card", headers=viewer.headers).text
    assert "- **Stated ratio**: none (every available ground-truth row is used)" in card


def test_the_card_of_uploaded_records_says_the_blend(
    client: TestClient, admin: Caller, viewer: Caller, seeded: dict[str, Any]
) -> None:
    records = [{"question": f"gt {i}?", "answer": f"{i}"} for i in range(5)]
    spec = body(seeded["jobs"], {"ratio": 0.5}, name="upload-blend")
    response = create_version(
        client,
        admin.headers,
        data={"spec": json.dumps(spec)},
        files={"ground_truth": ("gt.jsonl", "\n".join(json.dumps(r) for r in records), "application/jsonl")},
    )
    version = response.json()
    assert version["row_counts"]["ground_truth"] == 5
    assert version["lineage"]["ground_truth"]["from"] == "upload"
    card = client.get(f"/v1/datasets/{version['id']}/card", headers=viewer.headers).text
    assert "- **Stated ratio**: 0.5 (50.0%)" in card
    assert "(below the stated ratio: only 5 ground-truth rows were available)" in card
    assert "an uploaded JSONL file of 5 question/answer records" in card


def test_bad_ground_truth_requests_are_422s_naming_the_field(
    client: TestClient, admin: Caller, seeded: dict[str, Any]
) -> None:
    jobs = seeded["jobs"]
    record = {"question": "q?", "answer": "a"}
    cases = [
        ({"from_seed_field": "reference", "ratio": 1.0}, "ground_truth.ratio"),
        ({"from_seed_field": "reference", "ratio": 0}, "ground_truth.ratio"),
        ({"records": [record], "ratio": -0.5}, "ground_truth.ratio"),
        ({"from_seed_field": "no_such_field", "ratio": 0.2}, "ground_truth.from_seed_field"),
        ({"from_seed_field": "meta.nope"}, "ground_truth.from_seed_field"),
        ({"from_seed_field": ""}, "ground_truth.from_seed_field"),
        ({"from_seed_field": "reference", "records": [record]}, "ground_truth.from_seed_field"),
        ({"ratio": 0.3}, "ground_truth.records"),
    ]
    for ground_truth, field in cases:
        response = client.post("/v1/datasets", json=body(jobs, ground_truth), headers=admin.headers)
        assert response.status_code == 422, (ground_truth, response.text)
        assert response.headers["content-type"].startswith("application/problem+json")
        assert response.json()["errors"][0]["field"] == field, (ground_truth, response.json())
    missing = client.post(
        "/v1/datasets", json=body(jobs, {"from_seed_field": "no_such_field"}), headers=admin.headers
    )
    assert "inputs['no_such_field']" in missing.json()["detail"]

    # A file and a seed field at once.
    both = client.post(
        "/v1/datasets",
        data={"spec": json.dumps(body(jobs, {"from_seed_field": "reference", "ratio": 0.2}))},
        files={"ground_truth": ("gt.jsonl", json.dumps(record).encode(), "application/jsonl")},
        headers=admin.headers,
    )
    assert both.status_code == 422, both.text
    assert both.json()["errors"][0]["field"] == "ground_truth.from_seed_field"
    assert "not both" in both.json()["detail"]


@pytest.fixture
def cli_env(
    monkeypatch: pytest.MonkeyPatch, curation_db_url: str, live_api: str, admin: Caller
) -> Iterator[None]:
    from service.settings import get_settings

    monkeypatch.setenv("HARDLABEL_DATABASE_URL", curation_db_url)
    monkeypatch.setenv("HARDLABEL_API_URL", live_api)
    monkeypatch.setenv("HARDLABEL_TOKEN", admin.headers["Authorization"].removeprefix("Bearer "))
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def test_the_cli_takes_ground_truth_from_seed(
    cli_env: None, curation_settings: Settings, seeded: dict[str, Any], tmp_path: Path
) -> None:
    from click.testing import CliRunner

    from service.cli import main as cli

    job = str(seeded["jobs"][0])
    stop = threading.Event()
    worker = threading.Thread(target=run_worker, args=(curation_settings, ["freeze"]), kwargs={"stop": stop})
    worker.start()
    try:
        args = ["dataset", "create", "cli-seed", "--job", job, "--test-fraction", "0.25", "--interval", "0.1"]
        created = CliRunner().invoke(cli, [*args, "--ground-truth-from-seed", "reference", "--ratio", "0.25"])
    finally:
        stop.set()
        worker.join(timeout=30)
    assert created.exit_code == 0, created.output
    # 60 samples of 40 items; items are split, so the round(40 × 0.25) = 10 test items take 10 to
    # 20 of them (even items have two); then round(train × 0.25 / 0.75) ground-truth rows.
    found = re.search(r"\(train (\d+), test (\d+), ground truth (\d+)\)", created.output)
    assert found, created.output
    train, test, blend = map(int, found.groups())
    assert 10 <= test <= 20
    assert blend == round((60 - test) * 0.25 / 0.75)
    assert train == 60 - test + blend
    gt = tmp_path / "gt.jsonl"
    gt.write_text('{"question": "q?", "answer": "a"}\n')
    both = CliRunner().invoke(
        cli, [*args, "--ground-truth", str(gt), "--ground-truth-from-seed", "reference"]
    )
    assert both.exit_code != 0
    assert "not both" in both.output
