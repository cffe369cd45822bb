"""Dataset versions: rows frozen at creation, lineage, digest stability, deterministic splits,
ground-truth mixing at a ratio, validation and roles."""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, text

from service.db.models import DatasetRow, Event, Task
from service.db.session import transaction
from service.settings import Settings
from service.workers.runner import run_worker
from tests.service.conftest import (
    Caller,
    create_version,
    insert_samples,
    make_job,
    run_filter_worker,
    sample_row,
)


@pytest.fixture(scope="module")
def curated(
    client: TestClient, admin: Caller, reviewer: Caller, curation_settings: Settings, curation_db_url: str
) -> dict[str, Any]:
    """Two jobs of 20 samples each; every 5th answer is wrong (fails the verifier); all but the
    last two samples of each job are accepted."""
    jobs, ids = [], []
    for j in range(2):
        job_id = make_job(curation_db_url, teacher=f"/models/teacher-{j}")
        rows = [
            sample_row(
                job_id,
                i,
                f"Job {j}: what is {i} + 1?",
                f"{i + 1 if i % 5 else i + 2}",
                inputs={"reference": i + 1},
            )
            for i in range(20)
        ]
        jobs.append(job_id)
        ids.append(insert_samples(curation_db_url, rows))
    run = client.post(
        "/v1/filter-runs",
        json={
            "selection": {"job_ids": jobs},
            "filters": [{"type": "verifier", "params": {"mode": "numeric"}}],
        },
        headers=admin.headers,
    )
    assert run.status_code == 202, run.text
    run_filter_worker(curation_settings)
    for job_id in jobs:
        result = client.post(
            "/v1/samples/review",
            json={"query": {"job_id": job_id}, "action": "accept"},
            headers=reviewer.headers,
        )
        assert result.json()["changed"] == 20
    for job_ids in ids:
        for sample_id in job_ids[-2:]:
            client.patch(f"/v1/samples/{sample_id}", json={"action": "reset"}, headers=reviewer.headers)
    return {"jobs": jobs, "ids": ids, "filter_run_id": run.json()["id"]}


def create(client: TestClient, caller: Caller, body: dict[str, Any]) -> Any:
    """The version, once a worker has frozen it (or the API's refusal)."""
    return create_version(client, caller.headers, json=body)


def rows_of(database_url: str, dataset_id: int) -> list[tuple[int, str, str, int | None, str, str]]:
    with transaction(database_url) as session:
        return [
            tuple(r)  # type: ignore[misc]
            for r in session.execute(
                select(
                    DatasetRow.row_index,
                    DatasetRow.split,
                    DatasetRow.source,
                    DatasetRow.sample_id,
                    DatasetRow.question,
                    DatasetRow.answer,
                )
                .where(DatasetRow.dataset_id == dataset_id)
                .order_by(DatasetRow.row_index)
            )
        ]


def test_version_copies_rows_with_lineage(
    client: TestClient, admin: Caller, viewer: Caller, curation_db_url: str, curated: dict[str, Any]
) -> None:
    query = {"job_ids": curated["jobs"], "require_passed": ["verifier"], "review_status": ["accepted"]}
    body = {"name": "arith", "query": query}
    response = create(client, admin, body)
    assert response.status_code == 200, response.text
    version = response.json()
    assert version["status"] == "succeeded"
    assert version["rows_done"] == version["rows_total"] == 28
    # 40 samples, 8 wrong, 4 not accepted (of which none wrong: indices 18, 19 → 19 % 5 != 0, 18 % 5 != 0)
    assert version["row_counts"] == {"total": 28, "train": 28, "test": 0, "teacher": 28, "ground_truth": 0}
    assert version["version"] >= 1
    assert len(version["digest"]) == 64
    lineage = version["lineage"]
    assert lineage["stage"] == "answer"
    assert [job["id"] for job in lineage["jobs"]] == curated["jobs"]
    assert [job["rows"] for job in lineage["jobs"]] == [14, 14]
    assert lineage["teachers"] == ["/models/teacher-0", "/models/teacher-1"]
    assert len(lineage["recipes"]) == 2
    assert [run["id"] for run in lineage["filter_runs"]] == [curated["filter_run_id"]]
    assert lineage["filter_runs"][0]["filters"][0]["type"] == "verifier"
    assert lineage["filters"] == {"verifier": {"passed": 28, "failed": 0}}
    assert lineage["review_counts"] == {"accepted": 28}
    assert version["query"]["query"]["stage"] == "answer"
    rows = rows_of(curation_db_url, version["id"])
    expected = [i for job_ids in curated["ids"] for k, i in enumerate(job_ids) if k % 5 and k < 18]
    assert [r[3] for r in rows] == expected
    assert [r[0] for r in rows] == list(range(28))
    fetched = client.get(f"/v1/datasets/{version['id']}", headers=viewer.headers).json()
    assert fetched["digest"] == version["digest"]
    assert fetched["lineage"] == lineage
    listed = client.get("/v1/datasets", params={"name": "arith"}, headers=viewer.headers).json()
    assert version["id"] in [item["id"] for item in listed["items"]]


def test_versions_are_immutable_and_digests_stable(
    client: TestClient, admin: Caller, reviewer: Caller, curation_db_url: str, curated: dict[str, Any]
) -> None:
    body = {"name": "frozen", "query": {"job_ids": curated["jobs"], "review_status": ["accepted"]}}
    first = create(client, admin, body).json()
    second = create(client, admin, body).json()
    assert (first["version"], second["version"]) == (1, 2)
    assert second["digest"] == first["digest"]  # same query, unchanged data
    before = rows_of(curation_db_url, first["id"])

    sample_id = curated["ids"][0][1]
    edited = client.patch(f"/v1/samples/{sample_id}", json={"answer": "two"}, headers=reviewer.headers)
    assert edited.status_code == 200
    assert rows_of(curation_db_url, first["id"]) == before  # later edits do not reach a version
    third = create(client, admin, body).json()
    assert third["version"] == 3
    assert third["digest"] != first["digest"]
    new_rows = {r[3]: r[5] for r in rows_of(curation_db_url, third["id"])}
    assert new_rows[sample_id] == "two"
    assert (
        client.get(f"/v1/datasets/{first['id']}", headers=admin.headers).json()["digest"] == first["digest"]
    )
    client.patch(f"/v1/samples/{sample_id}", json={"restore": ["answer"]}, headers=reviewer.headers)
    assert create(client, admin, body).json()["digest"] == first["digest"]  # back to the same content
    for method in ("patch", "put", "delete"):
        assert (
            getattr(client, method)(f"/v1/datasets/{first['id']}", headers=admin.headers).status_code == 405
        )


def test_split_is_deterministic_and_stratified(
    client: TestClient, admin: Caller, curation_db_url: str, curated: dict[str, Any]
) -> None:
    query = {"job_ids": curated["jobs"], "review_status": ["accepted", "pending"]}

    def test_ids(split: dict[str, Any]) -> tuple[dict[str, int], set[int | None], dict[int, int]]:
        version = create(client, admin, {"name": "split", "query": query, "split": split}).json()
        rows = rows_of(curation_db_url, version["id"])
        tested = {r[3] for r in rows if r[1] == "test"}
        per_job = {
            job: sum(1 for i in ids if i in tested)
            for job, ids in zip(curated["jobs"], curated["ids"], strict=True)
        }
        return version["row_counts"], tested, per_job

    counts, a, _ = test_ids({"test_fraction": 0.25, "seed": 7})
    assert counts["test"] == 10
    assert counts["train"] == 30
    _, again, _ = test_ids({"test_fraction": 0.25, "seed": 7})
    assert again == a
    _, other, _ = test_ids({"test_fraction": 0.25, "seed": 8})
    assert other != a
    assert len(other) == 10
    _, _, per_job = test_ids({"test_fraction": 0.3, "seed": 7, "stratify_by_job": True})
    assert per_job == {curated["jobs"][0]: 6, curated["jobs"][1]: 6}  # round(0.3 × 20) each


def test_an_item_answered_by_several_teachers_lands_in_one_split(
    client: TestClient, admin: Caller, curation_db_url: str
) -> None:
    job_id = make_job(curation_db_url)
    rows = [
        sample_row(job_id, item, f"question {item}", f"answer {item} by {teacher}", teacher_index=teacher)
        for item in range(40)
        for teacher in range(3)
    ]
    ids = insert_samples(curation_db_url, rows)
    item_of = {sample_id: row["item_index"] for sample_id, row in zip(ids, rows, strict=True)}
    version = create_version(
        client,
        admin.headers,
        json={
            "name": "by-item",
            "query": {"job_ids": [job_id], "review_status": ["pending"]},
            "split": {"test_fraction": 0.25, "seed": 3},
        },
    ).json()
    assert version["status"] == "succeeded", version
    splits: dict[int, set[str]] = {}
    for _, split, _, sample_id, _, _ in rows_of(curation_db_url, version["id"]):
        assert sample_id is not None
        splits.setdefault(item_of[sample_id], set()).add(split)
    assert all(len(sides) == 1 for sides in splits.values())  # no question on both sides
    assert sum(1 for sides in splits.values() if sides == {"test"}) == 10  # round(40 items × 0.25)
    assert version["row_counts"]["test"] == 30  # with all three teachers' samples


def test_ground_truth_is_mixed_at_the_ratio(
    client: TestClient, admin: Caller, curation_db_url: str, curated: dict[str, Any]
) -> None:
    records = [{"question": f"gt question {i}", "answer": f"gt answer {i}"} for i in range(50)]
    query = {"job_ids": curated["jobs"], "review_status": ["accepted", "pending"]}
    body = {
        "name": "mixed",
        "query": query,
        "split": {"test_fraction": 0.25},
        "ground_truth": {"records": records, "ratio": 0.25},
    }
    version = create(client, admin, body).json()
    # 30 teacher train rows; ratio 0.25 ⇒ round(30 × 0.25 / 0.75) = 10 ground-truth rows, all in train.
    assert version["row_counts"] == {"total": 50, "train": 40, "test": 10, "teacher": 40, "ground_truth": 10}
    assert version["lineage"]["ground_truth"]["actual_ratio"] == 0.25
    rows = rows_of(curation_db_url, version["id"])
    gt_rows = [r for r in rows if r[2] == "ground_truth"]
    assert all(r[1] == "train" and r[3] is None for r in gt_rows)
    assert [r[0] for r in gt_rows] == list(range(40, 50))
    again = create(client, admin, body).json()
    assert again["digest"] == version["digest"]

    # Too few records: all of them, and the lineage says the ratio reached.
    few = {**body, "ground_truth": {"records": records[:4], "ratio": 0.5}}
    mixed = create(client, admin, few).json()
    assert mixed["row_counts"]["ground_truth"] == 4
    assert mixed["lineage"]["ground_truth"]["actual_ratio"] == round(4 / 34, 6)

    # The same records uploaded as JSONL (multipart) give the same version content.
    jsonl = "\n".join(json.dumps(r) for r in records).encode()
    spec = {**body, "ground_truth": {"ratio": 0.25}}
    uploaded = create_version(
        client,
        admin.headers,
        data={"spec": json.dumps(spec)},
        files={"ground_truth": ("gt.jsonl", jsonl, "application/jsonl")},
    )
    assert uploaded.status_code == 200, uploaded.text
    assert uploaded.json()["digest"] == version["digest"]
    bad = client.post(
        "/v1/datasets",
        data={"spec": json.dumps(spec)},
        files={"ground_truth": ("gt.jsonl", b'{"question": "q", "answer": "a"}\n{"question": "q"}\nnope\n')},
        headers=admin.headers,
    )
    assert bad.status_code == 422
    assert bad.json()["errors"][0]["field"] == "ground_truth"
    assert "line 2: answer: Field required; line 3: not JSON" in bad.json()["detail"]


def test_accepted_or_unreviewed_passed_all(
    client: TestClient, admin: Caller, curated: dict[str, Any]
) -> None:
    query = {"job_ids": curated["jobs"], "review_status": "accepted_or_unreviewed_passed_all"}
    version = create(client, admin, {"name": "mode", "query": query}).json()
    # 36 accepted + the 4 pending ones, which all passed the verifier.
    assert version["row_counts"]["total"] == 40
    assert version["lineage"]["review_counts"] == {"accepted": 36, "pending": 4}


def test_bad_requests_and_roles(
    client: TestClient, admin: Caller, reviewer: Caller, curated: dict[str, Any]
) -> None:
    jobs = curated["jobs"]
    cases = [
        ({"name": "x", "query": {"job_ids": [987654321]}}, "query.job_ids"),
        ({"name": "x", "query": {"job_ids": jobs, "require_passed": ["nope"]}}, "query.require_passed"),
        ({"name": "x", "query": {"job_ids": jobs, "tags": ["no-such-tag"]}}, "query"),
        ({"name": "bad name!", "query": {"job_ids": jobs}}, "name"),
        ({"name": "x", "query": {"job_ids": jobs}, "split": {"test_fraction": 1.5}}, "split.test_fraction"),
        ({"name": "x", "query": {"job_ids": jobs}, "ground_truth": {"ratio": 0.5}}, "ground_truth.records"),
    ]
    for body, field in cases:
        response = create(client, admin, body)
        assert response.status_code == 422, (body, response.text)
        assert response.json()["errors"][0]["field"] == field, response.json()
    assert create(client, reviewer, {"name": "x", "query": {"job_ids": jobs}}).status_code == 403
    assert (
        client.post(
            "/v1/datasets", content=b"{", headers={**admin.headers, "content-type": "application/json"}
        ).status_code
        == 422
    )
    assert client.get("/v1/datasets/987654321", headers=admin.headers).status_code == 404


def test_a_version_is_queued_and_frozen_by_a_worker(
    client: TestClient,
    admin: Caller,
    viewer: Caller,
    curation_db_url: str,
    curation_settings: Settings,
    curated: dict[str, Any],
) -> None:
    """Issue #12.7: the request only queues the freeze (202); a `freeze` worker copies the rows."""
    query = {"job_ids": curated["jobs"], "review_status": ["accepted"]}
    response = client.post("/v1/datasets", json={"name": "queued", "query": query}, headers=admin.headers)
    assert response.status_code == 202, response.text
    queued = response.json()
    assert (queued["status"], queued["rows_done"], queued["digest"]) == ("queued", 0, "")
    assert rows_of(curation_db_url, queued["id"]) == []  # nothing copied inside the request
    # Not frozen yet: no export, no card, no training run on it.
    export = client.get(f"/v1/datasets/{queued['id']}/export", headers=viewer.headers)
    assert export.status_code == 409, export.text
    assert "not frozen" in export.json()["detail"]
    training = client.post(
        "/v1/training-runs",
        json={"dataset_id": queued["id"], "student": {"model": "/no/student"}},
        headers=admin.headers,
    )
    assert training.status_code == 422, training.text
    assert training.json()["errors"][0]["field"] == "dataset_id"

    run_worker(curation_settings, ["freeze"], exit_when_idle=True)
    frozen = client.get(f"/v1/datasets/{queued['id']}", headers=viewer.headers).json()
    assert frozen["status"] == "succeeded", frozen
    assert frozen["rows_done"] == frozen["rows_total"] == frozen["row_counts"]["total"] == 36
    assert len(frozen["digest"]) == 64
    assert frozen["started_at"] is not None
    assert frozen["finished_at"] is not None
    assert len(rows_of(curation_db_url, queued["id"])) == 36
    with transaction(curation_db_url) as session:
        events = session.scalars(
            select(Event.kind).where(Event.dataset_id == queued["id"]).order_by(Event.id)
        ).all()
    assert events == ["queued", "claimed", "frozen", "task_succeeded", "finished"]


class _Killed(BaseException):
    """Stands for the worker process dying mid-freeze (not an Exception: nothing handles it)."""


def test_a_freeze_killed_mid_copy_is_redone_without_duplicating_rows(
    client: TestClient,
    admin: Caller,
    viewer: Caller,
    curation_db_url: str,
    curation_settings: Settings,
    curated: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Issue #12.7: a worker dies after copying a chunk; another worker's redo stores each row once."""
    from service.datasets import repository
    from service.queue.claims import claim_tasks
    from service.workers.context import TaskContext
    from service.workers.freeze import run_freeze_task

    query = {"job_ids": curated["jobs"], "review_status": ["accepted"]}
    body = {"name": "killed", "query": query, "split": {"test_fraction": 0.25, "seed": 3}}
    queued = client.post("/v1/datasets", json=body, headers=admin.headers).json()
    with transaction(curation_db_url) as session:
        [task] = claim_tasks(session, "doomed-worker", ["freeze"], 1, 30.0)
    assert task.dataset_id == queued["id"]

    copy = repository.copy_chosen_rows
    seen_progress: list[dict[str, Any]] = []

    def copy_then_die(session: Any, dataset_id: int, start: int, end: int, **kwargs: Any) -> None:
        if start > 0:  # the first chunk was copied and its progress written: now the process dies
            seen_progress.append(client.get(f"/v1/datasets/{dataset_id}", headers=viewer.headers).json())
            raise _Killed
        copy(session, dataset_id, start, end, **kwargs)

    monkeypatch.setattr(repository, "COPY_CHUNK_ROWS", 10)
    monkeypatch.setattr(repository, "copy_chosen_rows", copy_then_die)
    doomed = TaskContext(
        settings=curation_settings,
        database_url=curation_db_url,
        worker_id="doomed-worker",
        task=task,
        stop=threading.Event(),
    )
    with pytest.raises(_Killed):
        run_freeze_task(doomed)
    [mid] = seen_progress
    assert (mid["status"], mid["rows_done"], mid["rows_total"]) == ("running", 10, 36)  # progress is visible
    assert rows_of(curation_db_url, queued["id"]) == []  # the dead worker's chunk did not stay

    monkeypatch.setattr(repository, "copy_chosen_rows", copy)
    with transaction(curation_db_url) as session:  # its lease runs out; a live worker's reaper requeues it
        session.execute(
            text("UPDATE task SET lease_expires_at = now() - interval '1 second' WHERE id = :id"),
            {"id": task.id},
        )
    run_worker(curation_settings, ["freeze"], exit_when_idle=True)
    frozen = client.get(f"/v1/datasets/{queued['id']}", headers=viewer.headers).json()
    assert frozen["status"] == "succeeded", frozen
    rows = rows_of(curation_db_url, queued["id"])
    assert [r[0] for r in rows] == list(range(36))
    assert len({r[3] for r in rows}) == 36
    assert frozen["row_counts"] == {"total": 36, "train": 27, "test": 9, "teacher": 36, "ground_truth": 0}
    again = create(client, admin, body).json()  # an uninterrupted freeze of the same query: same content
    assert again["digest"] == frozen["digest"]
    with transaction(curation_db_url) as session:
        attempts = session.scalar(select(Task.attempts).where(Task.id == task.id))
    assert attempts == 2
