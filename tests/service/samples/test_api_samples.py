"""Samples: keyset pages (stable under inserts), filters, full-text search, detail with provenance."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from service.db.models import Sample
from service.db.session import transaction
from tests.service.api.conftest import MAX_PAGE_SIZE
from tests.service.api.factories import insert_samples, make_job, sample_row


@pytest.fixture
def job_id(database_url: str) -> int:
    with transaction(database_url) as session:
        return make_job(session).id


def all_pages(
    client: TestClient, headers: dict[str, str], **params: Any
) -> Iterator[list[dict[str, object]]]:
    cursor = None
    while True:
        query = {**params, **({"cursor": cursor} if cursor else {})}
        response = client.get("/v1/samples", params=query, headers=headers)
        assert response.status_code == 200, response.text
        page = response.json()
        yield page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            return


def test_keyset_pages_cover_every_row_once_while_rows_are_inserted(
    client: TestClient, viewer: dict[str, str], database_url: str, job_id: int
) -> None:
    original = insert_samples(database_url, [sample_row(job_id, i) for i in range(23)])
    seen: list[int] = []
    inserted = 0
    for items in all_pages(client, viewer, job_id=job_id, limit=5):
        seen += [item["id"] for item in items]  # type: ignore[misc]
        # Concurrent writers: new rows land between page fetches.
        insert_samples(database_url, [sample_row(job_id, 100 + inserted + k) for k in range(3)])
        inserted += 3
    assert len(seen) == len(set(seen)), "a row was returned twice"
    assert set(original) <= set(seen), "an existing row was skipped"
    assert seen == sorted(seen)


def test_filters_by_stage_parse_status_and_text(
    client: TestClient, viewer: dict[str, str], database_url: str, job_id: int
) -> None:
    insert_samples(
        database_url,
        [
            sample_row(
                job_id, 0, stage="question", question="What is photosynthesis?", answer="Plants use light"
            ),
            sample_row(
                job_id, 1, stage="answer", question="Boiling point of water?", answer="100 degrees Celsius"
            ),
            sample_row(
                job_id,
                2,
                stage="answer",
                answer=None,
                parse_status="failed",
                parse_error="not JSON",
                raw_text="{oops",
            ),
        ],
    )

    def ids(**params: Any) -> list[int]:
        response = client.get("/v1/samples", params={"job_id": job_id, **params}, headers=viewer)
        assert response.status_code == 200, response.text
        return [item["item_index"] for item in response.json()["items"]]

    assert ids() == [0, 1, 2]
    assert ids(stage="answer") == [1, 2]
    assert ids(parse_status="failed") == [2]
    assert ids(q="photosynthesis") == [0]
    assert ids(q="celsius") == [1]  # 'simple' config: case-folded, no stemming needed here
    assert ids(q='"boiling point"') == [1]
    assert ids(q="water -boiling") == []
    assert ids(q="oops") == [2]  # no parsed answer: the raw text is searched


def test_current_text_is_the_edit_and_the_teacher_text_stays(
    client: TestClient, viewer: dict[str, str], database_url: str, job_id: int
) -> None:
    (sample_id,) = insert_samples(database_url, [sample_row(job_id, 0, answer="41")])
    with transaction(database_url) as session:
        session.execute(update(Sample).where(Sample.id == sample_id).values(edited_answer="42"))
    item = client.get("/v1/samples", params={"job_id": job_id}, headers=viewer).json()["items"][0]
    assert item["answer"] == "42"
    assert item["teacher_answer"] == "41"
    assert item["question"] == item["teacher_question"] == "question 0"
    assert "provenance" not in item
    assert "search" not in item
    # ... and search follows the current text.
    found = client.get("/v1/samples", params={"job_id": job_id, "q": "42"}, headers=viewer).json()["items"]
    assert [s["id"] for s in found] == [sample_id]


def test_detail_has_provenance_and_inputs(
    client: TestClient, viewer: dict[str, str], database_url: str, job_id: int
) -> None:
    (sample_id,) = insert_samples(database_url, [sample_row(job_id, 7, parsed={"x": 1}, score=8.5)])
    response = client.get(f"/v1/samples/{sample_id}", headers=viewer)
    assert response.status_code == 200
    sample = response.json()
    assert sample["provenance"]["stage"] == "answer"
    assert sample["inputs"] == {"topic": "topic 7"}
    assert sample["parsed"] == {"x": 1}
    assert sample["score"] == 8.5
    assert sample["review_status"] == "pending"
    assert sample["tags"] == []


def test_unknown_sample_is_404(client: TestClient, viewer: dict[str, str]) -> None:
    response = client.get("/v1/samples/999999999", headers=viewer)
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["detail"] == "sample 999999999 does not exist"


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"limit": MAX_PAGE_SIZE + 1}, "limit"),
        ({"limit": 0}, "limit"),
        ({"cursor": "not-a-cursor"}, "cursor"),
        ({"cursor": "eyJhZnRlciI6LTF9"}, "cursor"),  # {"after":-1}
        ({"job_id": "abc"}, "job_id"),
        ({"job_id": 2**63}, "job_id"),
        ({"parse_status": "maybe"}, "parse_status"),
        ({"q": ""}, "q"),
    ],
)
def test_bad_query_parameters_are_422_naming_the_field(
    client: TestClient, viewer: dict[str, str], params: dict[str, Any], field: str
) -> None:
    response = client.get("/v1/samples", params=params, headers=viewer)
    assert response.status_code == 422, response.text
    problem = response.json()
    assert problem["errors"][0]["field"] == field
    assert problem["errors"][0]["loc"] == ["query", field]


def test_page_size_is_bounded_and_defaults(
    client: TestClient, viewer: dict[str, str], database_url: str, job_id: int
) -> None:
    insert_samples(database_url, [sample_row(job_id, i) for i in range(MAX_PAGE_SIZE + 5)])
    default = client.get("/v1/samples", params={"job_id": job_id}, headers=viewer).json()
    assert default["limit"] == 10
    assert len(default["items"]) == 10
    assert default["next_cursor"]
    full = client.get("/v1/samples", params={"job_id": job_id, "limit": MAX_PAGE_SIZE}, headers=viewer).json()
    assert len(full["items"]) == MAX_PAGE_SIZE
