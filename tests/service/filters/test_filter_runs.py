"""Filter runs through the API and a real worker: verdicts with reasons, listing conditions,
re-run idempotency, resume after a stop, validation and roles."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select, text

from service.db.models import FilterVerdict
from service.db.session import transaction
from service.queue.claims import claim_tasks
from service.queue.leases import release_task
from service.settings import Settings
from service.workers.context import TaskContext, TaskOutcome
from service.workers.filter import run_filter_task
from tests.service.conftest import Caller, insert_samples, make_job, run_filter_worker, sample_row
from tests.service.filters.test_filters import PARAGRAPH, PARAPHRASE

FILTERS: list[dict[str, Any]] = [
    {"type": "length", "params": {"min": 5}},
    {"type": "verifier", "params": {"mode": "numeric"}},
    {"type": "exact_dedup", "params": {"keep": "highest_score", "field": "answer"}},
    {"type": "near_dup", "params": {"threshold": 0.5, "field": "answer"}},
]


@pytest.fixture(scope="module")
def crafted(curation_db_url: str) -> dict[str, Any]:
    job_id = make_job(curation_db_url)
    rows = [
        sample_row(
            job_id, 0, "What is 7 * 8?", "7 * 8 = 56. The answer is 56.", inputs={"reference": 56}, score=8.0
        ),
        sample_row(job_id, 1, "What is 30 + 31?", "The answer is 61.", inputs={"reference": 62}, score=4.0),
        sample_row(
            job_id, 2, "What is 7 * 8?", "7 * 8 = 56. The answer is 56.", inputs={"reference": 56}, score=9.0
        ),
        sample_row(job_id, 3, "Say a number.", "ok", inputs={"reference": 5}),
        sample_row(job_id, 4, "Explain photosynthesis.", PARAGRAPH),
        sample_row(job_id, 5, "Explain photosynthesis again.", PARAPHRASE),
        sample_row(job_id, 6, "Broken", None),  # parse failed: not selected by default
        sample_row(job_id, 0, "judge", "8", stage="judge"),  # another stage: not selected
    ]
    ids = insert_samples(curation_db_url, rows)
    return {"job_id": job_id, "ids": ids[:6]}


def submit(client: TestClient, caller: Caller, body: dict[str, Any]) -> Any:
    return client.post("/v1/filter-runs", json=body, headers=caller.headers)


def run_to_end(
    client: TestClient, caller: Caller, settings: Settings, body: dict[str, Any]
) -> dict[str, Any]:
    response = submit(client, caller, body)
    assert response.status_code == 202, response.text
    run_filter_worker(settings)
    run = client.get(f"/v1/filter-runs/{response.json()['id']}", headers=caller.headers).json()
    assert run["status"] == "succeeded", run
    return dict(run)


def listed(client: TestClient, caller: Caller, **params: Any) -> list[int]:
    response = client.get("/v1/samples", params={"limit": 200, **params}, headers=caller.headers)
    assert response.status_code == 200, response.text
    return [item["id"] for item in response.json()["items"]]


def test_filter_run_stores_verdicts_with_reasons(
    client: TestClient, admin: Caller, viewer: Caller, curation_settings: Settings, crafted: dict[str, Any]
) -> None:
    job_id, (s0, s1, s2, s3, s4, s5) = crafted["job_id"], crafted["ids"]
    run = run_to_end(
        client, admin, curation_settings, {"selection": {"job_ids": [job_id]}, "filters": FILTERS}
    )
    assert run["selection"]["stage"] == "answer"  # the recipe's answer stage (judge skipped)
    assert run["selection_size"] == 6
    assert run["progress"]["items_done"] == run["progress"]["items_total"] == 12  # two passes
    assert run["progress"]["fraction"] == 1.0
    assert run["counts"] == {
        "length": {"passed": 5, "failed": 1},
        "verifier": {"passed": 2, "failed": 4},
        "exact_dedup": {"passed": 5, "failed": 1},
        "near_dup": {"passed": 4, "failed": 2},
    }

    def reasons(sample_id: int) -> dict[str, tuple[bool, str]]:
        detail = client.get(f"/v1/samples/{sample_id}", headers=viewer.headers).json()
        return {v["filter_name"]: (v["passed"], v["reason"]) for v in detail["verdicts"]}

    assert reasons(s1)["verifier"] == (False, "answer 61 ≠ reference 62")
    assert reasons(s0)["verifier"] == (True, "answer 56 = reference 56")
    assert reasons(s3)["length"] == (False, "answer has 2 chars, fewer than min 5")
    assert reasons(s3)["verifier"] == (False, "no number in the answer 'ok'")
    assert reasons(s4)["verifier"] == (False, "no reference in inputs['reference']")
    # exact_dedup keeps the best-scored copy; near_dup keeps the first by id.
    assert reasons(s0)["exact_dedup"] == (False, f"duplicate of sample {s2}")
    assert reasons(s2)["exact_dedup"] == (True, "first of its text")
    assert reasons(s2)["near_dup"] == (False, f"near-duplicate of sample {s0} (Jaccard 1.00)")
    passed, reason = reasons(s5)["near_dup"]
    assert not passed
    assert reason.startswith(f"near-duplicate of sample {s4} (Jaccard 0.")

    assert listed(client, viewer, job_id=job_id, passed="length,verifier") == [s0, s2]
    assert listed(client, viewer, job_id=job_id, failed="near_dup") == [s2, s5]
    assert listed(client, viewer, job_id=job_id, failed="verifier,length") == [s1, s3, s4, s5]
    assert listed(client, viewer, job_id=job_id, passed=["exact_dedup", "length"], failed="near_dup") == [
        s2,
        s5,
    ]
    assert listed(client, viewer, job_id=job_id, score_min=8) == [s0, s2]
    assert listed(client, viewer, job_id=job_id, score_min=4, score_max=8.5) == [s0, s1]
    bad = client.get("/v1/samples", params={"score_min": 5, "score_max": 1}, headers=viewer.headers)
    assert bad.status_code == 422


def test_rerun_replaces_verdicts(
    client: TestClient,
    admin: Caller,
    reviewer: Caller,
    curation_settings: Settings,
    curation_db_url: str,
    crafted: dict[str, Any],
) -> None:
    job_id, ids = crafted["job_id"], crafted["ids"]
    body = {"selection": {"job_ids": [job_id]}, "filters": FILTERS}
    first = run_to_end(client, admin, curation_settings, body)
    second = run_to_end(client, admin, curation_settings, body)
    assert first["counts"] == second["counts"]
    with transaction(curation_db_url) as session:
        rows = session.execute(
            select(FilterVerdict.filter_run_id, func.count())
            .where(FilterVerdict.sample_id.in_(ids))
            .group_by(FilterVerdict.filter_run_id)
        ).all()
    assert rows == [(second["id"], len(ids) * len(FILTERS))]  # one verdict per (sample, filter), all replaced

    # The reviewer fixes the wrong answer; re-running the verifier alone flips its verdict only.
    patched = client.patch(
        f"/v1/samples/{ids[1]}", json={"answer": "The answer is 62."}, headers=reviewer.headers
    )
    assert patched.status_code == 200, patched.text
    third = run_to_end(
        client, admin, curation_settings, {"selection": {"job_ids": [job_id]}, "filters": [FILTERS[1]]}
    )
    assert third["counts"] == {"verifier": {"passed": 3, "failed": 3}}
    verdicts = {
        v["filter_name"]: v
        for v in client.get(f"/v1/samples/{ids[1]}", headers=admin.headers).json()["verdicts"]
    }
    assert verdicts["verifier"]["passed"] is True
    assert verdicts["verifier"]["reason"] == "answer 62 = reference 62"
    assert verdicts["verifier"]["filter_run_id"] == third["id"]
    assert verdicts["length"]["filter_run_id"] == second["id"]


def test_named_filters_keep_separate_verdicts(
    client: TestClient, admin: Caller, viewer: Caller, curation_settings: Settings, crafted: dict[str, Any]
) -> None:
    job_id, ids = crafted["job_id"], crafted["ids"]
    body = {
        "selection": {"job_ids": [job_id]},
        "filters": [
            {"name": "long_answer", "type": "length", "params": {"min": 30}},
            {"name": "no_ok", "type": "regex", "params": {"pattern": "^ok$"}},
        ],
    }
    run = run_to_end(client, admin, curation_settings, body)
    assert run["counts"] == {"long_answer": {"passed": 2, "failed": 4}, "no_ok": {"passed": 5, "failed": 1}}
    assert listed(client, viewer, job_id=job_id, failed="no_ok") == [ids[3]]


def test_a_stopped_run_resumes_with_the_same_verdicts(
    client: TestClient, admin: Caller, curation_settings: Settings, curation_db_url: str
) -> None:
    """Dedup state survives an interruption: the resumed task primes its filters with the samples
    judged before the checkpoint, so duplicates across the checkpoint are still caught."""
    job_id = make_job(curation_db_url)
    answers = ["alpha", "beta", "alpha", "gamma", "beta", "delta", "alpha", "gamma", "epsilon", "beta"]
    ids = insert_samples(curation_db_url, [sample_row(job_id, i, f"q{i}", a) for i, a in enumerate(answers)])
    body = {
        "selection": {"job_ids": [job_id]},
        "filters": [{"type": "exact_dedup", "params": {"field": "answer"}}],
    }
    run_id = submit(client, admin, body).json()["id"]
    with transaction(curation_db_url) as session:
        session.execute(
            text("UPDATE task SET payload = '{\"chunk_size\": 3}' WHERE filter_run_id = :id"), {"id": run_id}
        )
        (task,) = claim_tasks(session, "test-worker", ["filter"], 1, 30.0)
    stop = threading.Event()
    stop.set()  # finish the first chunk, checkpoint, stop
    ctx = TaskContext(curation_settings, curation_db_url, "test-worker", task, stop)
    assert run_filter_task(ctx) is TaskOutcome.STOPPED
    with transaction(curation_db_url) as session:
        assert session.scalar(text("SELECT cursor FROM task WHERE id = :id"), {"id": task.id}) == 3
        release_task(session, task, 30.0, "test-worker")
    progress = client.get(f"/v1/filter-runs/{run_id}", headers=admin.headers).json()
    assert progress["status"] == "running"
    assert progress["progress"]["items_done"] == 3

    run_filter_worker(curation_settings)
    run = client.get(f"/v1/filter-runs/{run_id}", headers=admin.headers).json()
    assert run["status"] == "succeeded"
    assert run["counts"] == {"exact_dedup": {"passed": 5, "failed": 5}}
    with transaction(curation_db_url) as session:
        got = dict(
            session.execute(
                select(FilterVerdict.sample_id, FilterVerdict.reason).where(FilterVerdict.sample_id.in_(ids))
            ).all()
        )
    first = {"alpha": ids[0], "beta": ids[1], "gamma": ids[3]}
    for sample_id, answer in zip(ids, answers, strict=True):
        expected = (
            "first of its text"
            if first.get(answer, sample_id) == sample_id
            else f"duplicate of sample {first[answer]}"
        )
        assert got[sample_id] == expected
    events = client.get(f"/v1/filter-runs/{run_id}/events", headers=admin.headers).json()["items"]
    kinds = [e["kind"] for e in events]
    assert kinds[0] == "queued"
    assert "released" in kinds
    assert kinds[-1] == "finished"


@pytest.mark.parametrize(
    ("filters", "field", "message"),
    [
        (
            [{"type": "regex", "params": {"pattern": "(oops"}}],
            "filters[0].regex.params.pattern",
            "invalid regular",
        ),
        ([{"type": "length", "params": {}}], "filters[0].length.params", "set min, max or both"),
        ([{"type": "nope"}], "filters[0]", "does not match any of the expected tags"),
        (
            [{"type": "length", "params": {"min": 1}}, {"type": "length", "params": {"max": 9}}],
            "filters",
            "give one of them another `name`",
        ),
        (
            [{"type": "decontamination", "params": {"eval_sets": [{"path": "/no/such/eval.jsonl"}]}}],
            "filters[0].decontamination.params.eval_sets[0].path",
            "no such file or folder",
        ),
        (
            [{"type": "near_dup", "params": {"against_datasets": [987654]}}],
            "filters[0].near_dup.params.against_datasets",
            "no such frozen dataset version: 987654",
        ),
    ],
)
def test_bad_filters_are_422_naming_the_field(
    client: TestClient, admin: Caller, crafted: dict[str, Any], filters: list[Any], field: str, message: str
) -> None:
    response = submit(client, admin, {"selection": {"job_ids": [crafted["job_id"]]}, "filters": filters})
    assert response.status_code == 422, response.text
    problem = response.json()
    assert problem["errors"][0]["field"] == field
    assert message in problem["errors"][0]["msg"]


def test_bad_selections_are_422(client: TestClient, admin: Caller, crafted: dict[str, Any]) -> None:
    filters = [FILTERS[0]]
    missing = submit(client, admin, {"selection": {"job_ids": [987654321]}, "filters": filters})
    assert missing.status_code == 422
    assert missing.json()["errors"][0]["field"] == "selection.job_ids"
    empty = submit(
        client, admin, {"selection": {"job_ids": [crafted["job_id"]], "stage": "nope"}, "filters": filters}
    )
    assert empty.status_code == 422
    assert "no samples" in empty.json()["detail"]


def test_roles(client: TestClient, reviewer: Caller, viewer: Caller, crafted: dict[str, Any]) -> None:
    body = {"selection": {"job_ids": [crafted["job_id"]]}, "filters": [FILTERS[0]]}
    assert submit(client, reviewer, body).status_code == 403
    assert submit(client, viewer, body).status_code == 403
    assert client.post("/v1/filter-runs", json=body).status_code == 401
    assert client.get("/v1/filter-runs", headers=viewer.headers).status_code == 200
    assert client.get("/v1/filter-runs/999999", headers=viewer.headers).status_code == 404
