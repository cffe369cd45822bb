"""Review: revisions kept, the teacher's text retained, tags and notes, bulk counts, summary, roles."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from service.settings import Settings
from tests.service.conftest import Caller, insert_samples, make_job, run_filter_worker, sample_row


@pytest.fixture
def job(curation_db_url: str) -> dict[str, Any]:
    job_id = make_job(curation_db_url)
    ids = insert_samples(
        curation_db_url,
        [
            sample_row(job_id, i, f"What is {i} + {i}?", f"It is {2 * i}.", inputs={"reference": 2 * i})
            for i in range(6)
        ],
    )
    return {"job_id": job_id, "ids": ids}


def patch(client: TestClient, caller: Caller, sample_id: int, body: dict[str, Any]) -> Any:
    return client.patch(f"/v1/samples/{sample_id}", json=body, headers=caller.headers)


def test_edits_keep_revisions_and_the_teachers_text(
    client: TestClient, reviewer: Caller, viewer: Caller, job: dict[str, Any]
) -> None:
    sample_id = job["ids"][1]
    first = patch(client, reviewer, sample_id, {"answer": "1 + 1 = 2."})
    assert first.status_code == 200, first.text
    second = patch(
        client, reviewer, sample_id, {"answer": "Two.", "question": "What is one plus one?"}
    ).json()
    assert second["answer"] == "Two."
    assert second["teacher_answer"] == "It is 2."  # the original is kept and shown
    assert second["question"] == "What is one plus one?"
    assert second["teacher_question"] == "What is 1 + 1?"
    assert [(r["field"], r["old_text"], r["new_text"], r["edited_by"]) for r in second["revisions"]] == [
        ("answer", "It is 2.", "1 + 1 = 2.", reviewer.token_id),
        ("question", "What is 1 + 1?", "What is one plus one?", reviewer.token_id),
        ("answer", "1 + 1 = 2.", "Two.", reviewer.token_id),
    ]
    # The same text again is no edit; restoring goes back to the teacher's text with a revision.
    assert len(patch(client, reviewer, sample_id, {"answer": "Two."}).json()["revisions"]) == 3
    restored = patch(client, reviewer, sample_id, {"restore": ["answer"]}).json()
    assert restored["answer"] == "It is 2."
    assert restored["edited_answer"] is None
    assert restored["revisions"][-1]["new_text"] == "It is 2."
    shown = client.get(f"/v1/samples/{sample_id}", headers=viewer.headers).json()
    assert len(shown["revisions"]) == 4
    assert shown["question"] == "What is one plus one?"


def test_accept_reject_reset_tags_and_note(
    client: TestClient, reviewer: Caller, viewer: Caller, job: dict[str, Any]
) -> None:
    sample_id = job["ids"][0]
    accepted = patch(
        client, reviewer, sample_id, {"action": "accept", "tags_add": ["math", "easy"], "note": "ok"}
    )
    body = accepted.json()
    assert body["review_status"] == "accepted"
    assert body["reviewed_by"] == reviewer.token_id
    assert body["reviewed_at"] is not None
    assert body["tags"] == ["math", "easy"]
    assert body["note"] == "ok"
    body = patch(client, reviewer, sample_id, {"tags_add": ["hard", "math"], "tags_remove": ["easy"]}).json()
    assert body["tags"] == ["math", "hard"]
    body = patch(client, reviewer, sample_id, {"action": "reject", "note": None}).json()
    assert body["review_status"] == "rejected"
    assert body["note"] is None
    body = patch(client, reviewer, sample_id, {"action": "reset"}).json()
    assert body["review_status"] == "pending"
    assert body["reviewed_by"] is None
    assert patch(client, reviewer, sample_id, {}).status_code == 422
    assert patch(client, reviewer, sample_id, {"tags_add": ["a,b"]}).status_code == 422
    assert patch(client, reviewer, 987654321, {"action": "accept"}).status_code == 404


def test_viewers_cannot_review(client: TestClient, viewer: Caller, job: dict[str, Any]) -> None:
    assert patch(client, viewer, job["ids"][0], {"action": "accept"}).status_code == 403
    bulk = {"query": {"job_id": job["job_id"]}, "action": "accept"}
    assert client.post("/v1/samples/review", json=bulk, headers=viewer.headers).status_code == 403
    assert client.patch(f"/v1/samples/{job['ids'][0]}", json={"action": "accept"}).status_code == 401


def test_bulk_review_counts_what_changed(
    client: TestClient, admin: Caller, reviewer: Caller, viewer: Caller, job: dict[str, Any]
) -> None:
    job_id, ids = job["job_id"], job["ids"]
    patch(client, reviewer, ids[0], {"action": "accept"})

    def bulk(body: dict[str, Any], caller: Caller = reviewer) -> Any:
        return client.post("/v1/samples/review", json=body, headers=caller.headers)

    result = bulk({"query": {"job_id": job_id}, "action": "accept"})
    assert result.status_code == 200, result.text
    assert result.json() == {"matched": 6, "changed": 5}
    assert bulk({"query": {"job_id": job_id}, "action": "accept"}).json() == {"matched": 6, "changed": 0}
    assert bulk(
        {"query": {"job_id": job_id, "q": "3"}, "action": "reject", "tags_add": ["bad"]}, admin
    ).json() == {
        "matched": 1,
        "changed": 1,
    }
    assert bulk({"query": {"job_id": job_id}, "tags_add": ["bad"]}).json() == {"matched": 6, "changed": 5}
    assert bulk({"query": {"job_id": job_id, "tag": "bad"}, "tags_remove": ["bad"]}).json() == {
        "matched": 6,
        "changed": 6,
    }

    def ids_where(**params: Any) -> list[int]:
        response = client.get("/v1/samples", params={"job_id": job_id, **params}, headers=viewer.headers)
        assert response.status_code == 200, response.text
        return [item["id"] for item in response.json()["items"]]

    assert ids_where(review_status="rejected") == [ids[3]]
    assert ids_where(review_status="accepted,rejected") == ids
    assert ids_where(reviewer=admin.token_id) == [ids[3]]
    assert ids_where(reviewer=reviewer.token_id) == [i for i in ids if i != ids[3]]
    patch(client, reviewer, ids[2], {"tags_add": ["x", "y"]})
    patch(client, reviewer, ids[4], {"tags_add": ["x"]})
    assert ids_where(tag="x") == [ids[2], ids[4]]
    assert ids_where(tag="x,y") == [ids[2]]

    unknown = bulk({"query": {"job_id": job_id, "stauts": "x"}, "action": "accept"})
    assert unknown.status_code == 422
    assert "stauts" in unknown.json()["detail"]
    assert bulk({"query": {}, "action": "accept"}).status_code == 422
    assert bulk({"query": {"job_id": job_id}}).status_code == 422


def test_summary_by_filter_outcome(
    client: TestClient,
    admin: Caller,
    reviewer: Caller,
    viewer: Caller,
    curation_settings: Settings,
    job: dict[str, Any],
) -> None:
    job_id, ids = job["job_id"], job["ids"]
    patch(client, reviewer, ids[1], {"answer": "It is 3."})  # now wrong
    run = client.post(
        "/v1/filter-runs",
        json={
            "selection": {"job_ids": [job_id]},
            "filters": [{"type": "verifier", "params": {"mode": "numeric"}}],
        },
        headers=admin.headers,
    )
    assert run.status_code == 202, run.text
    run_filter_worker(curation_settings)
    patch(client, reviewer, ids[0], {"action": "accept"})
    patch(client, reviewer, ids[1], {"action": "reject"})
    summary = client.get("/v1/samples/summary", params={"job_id": job_id}, headers=viewer.headers)
    assert summary.status_code == 200, summary.text
    body = summary.json()
    assert body["stage"] == "answer"
    assert body["review"] == {"pending": 4, "accepted": 1, "rejected": 1, "total": 6}
    assert body["filters"]["verifier"] == {
        "passed": {"pending": 4, "accepted": 1, "rejected": 0, "total": 5},
        "failed": {"pending": 0, "accepted": 0, "rejected": 1, "total": 1},
    }
    assert body["failed_any"]["total"] == 1
    assert body["passed_all"]["total"] == 5
    assert body["unfiltered"]["total"] == 0
    missing = client.get("/v1/samples/summary", params={"job_id": 987654321}, headers=viewer.headers)
    assert missing.status_code == 422


def test_nul_characters_are_422_not_500(
    client: TestClient, admin: Caller, reviewer: Caller, viewer: Caller, job: dict[str, Any]
) -> None:
    """Postgres text cannot hold U+0000: such input is refused with the field named."""
    edit = patch(client, reviewer, job["ids"][0], {"answer": "a\u0000b"})
    assert edit.status_code == 422
    assert edit.json()["errors"][0]["field"] == "answer"
    listing = client.get("/v1/samples", params={"tag": "x\u0000"}, headers=viewer.headers)
    assert listing.status_code == 422
    run = client.post(
        "/v1/filter-runs",
        json={
            "selection": {"job_ids": [job["job_id"]]},
            "filters": [{"type": "regex", "params": {"pattern": "\u0000"}}],
        },
        headers=admin.headers,
    )
    assert run.status_code == 422
    assert run.json()["errors"][0]["field"] == "filters[0].params.pattern"  # the string itself
    dataset = client.post(
        "/v1/datasets",
        json={"name": "nul", "query": {"job_ids": [job["job_id"]]}, "system": "\u0000"},
        headers=admin.headers,
    )
    assert dataset.status_code == 422
    assert dataset.json()["errors"][0]["field"] == "system"
