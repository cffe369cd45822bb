"""The read-only endpoints the UI adds (/v1/stats/*, /v1/me, /v1/token-names), checked against the
API's own listing."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.settings import Settings
from service.stats import repository
from service.stats import service as stats_service
from tests.service.web.conftest import run_freeze_worker
from tests.service.web.factories import Seeded


@pytest.fixture
def client(ui_database_url: str, seeded: Seeded) -> Iterator[TestClient]:
    """The app in this process (so limits can be patched), signed in as the admin."""
    with TestClient(
        create_app(Settings(database_url=ui_database_url)), raise_server_exceptions=False
    ) as test_client:
        test_client.headers["Authorization"] = f"Bearer {seeded.admin_token}"
        yield test_client


def all_samples(client: TestClient, **query: Any) -> list[dict[str, Any]]:
    response = client.get("/v1/samples", params={**query, "limit": 200})
    assert response.status_code == 200, response.text
    assert response.json()["next_cursor"] is None
    return list(response.json()["items"])


def test_sample_stats_are_exact_for_small_selections(client: TestClient, seeded: Seeded) -> None:
    job = seeded.self_instruct_job
    samples = all_samples(client, job_id=job)
    stats = client.get("/v1/stats/samples", params={"job_id": job}).json()
    assert stats["estimated"] is False
    assert stats["matched"] == stats["rows_examined"] == len(samples) == 48
    assert stats["stages"] == {"answer": 48}
    assert stats["review"] == dict(Counter(str(s["review_status"]) for s in samples)) | {
        k: 0 for k in ("pending", "accepted", "rejected") if k not in {s["review_status"] for s in samples}
    }
    for name in ("length", "judge_score", "near_dup"):
        passed = len(all_samples(client, job_id=job, passed=name))
        failed = len(all_samples(client, job_id=job, failed=name))
        assert stats["filters"][name] == {"passed": passed, "failed": failed}
    # Every answer falls in exactly the bar the histogram counts it in.
    lengths = [len(str(s["answer"])) for s in samples]
    bars = stats["answer_chars"]
    assert bars[0]["lo"] == min(lengths)
    assert bars[-1]["hi"] > max(lengths)
    assert [b["count"] for b in bars] == [sum(b["lo"] <= n < b["hi"] for n in lengths) for b in bars]
    # Whole-number judge scores get one bar per value.
    scores = Counter(float(str(s["score"])) for s in samples)
    assert {b["lo"]: b["count"] for b in stats["scores"] if b["count"]} == dict(scores)
    assert all(b["hi"] - b["lo"] == 1 for b in stats["scores"])
    assert stats["scored"] == 48


def test_large_selections_are_estimated_from_a_block_sample(
    client: TestClient, seeded: Seeded, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(stats_service, "EXACT_ROW_LIMIT", 5)
    stats = client.get("/v1/stats/samples", params={"job_id": seeded.self_instruct_job, "failed": "near_dup"})
    assert stats.status_code == 200, stats.text
    body = stats.json()
    assert body["estimated"] is False  # 4 rows: still under the (patched) limit
    stats = client.get("/v1/stats/samples", params={"job_id": seeded.self_instruct_job})
    body = stats.json()
    assert stats.status_code == 200, stats.text
    assert body["estimated"] is True
    assert body["matched"] >= 6
    assert body["exact_limit"] == 5


def test_sampling_percent_is_bounded_by_rows_read() -> None:
    limit, scanned = stats_service.EXACT_ROW_LIMIT, stats_service.MAX_SCANNED_ROWS
    assert stats_service.sampling_percent(
        matching_estimate=limit * 10, table_rows=limit * 10
    ) == pytest.approx(10)
    # A rare match in a huge table: never read more than MAX_SCANNED_ROWS table rows.
    huge = scanned * 1000
    assert stats_service.sampling_percent(matching_estimate=limit * 2, table_rows=huge) == pytest.approx(0.1)
    assert stats_service.sampling_percent(matching_estimate=0, table_rows=0) == pytest.approx(100, rel=1e-3)


def test_count_is_exact_or_says_it_is_an_estimate(
    client: TestClient, seeded: Seeded, monkeypatch: pytest.MonkeyPatch
) -> None:
    query: dict[str, Any] = {"job_id": seeded.self_instruct_job, "review_status": "accepted,rejected"}
    counted = client.get("/v1/stats/samples/count", params=query).json()
    assert counted == {"count": len(all_samples(client, **query)), "exact": True}
    monkeypatch.setattr(repository, "count_within", lambda *args: None)  # as if counting timed out
    estimated = client.get("/v1/stats/samples/count", params=query).json()
    assert estimated["exact"] is False
    assert estimated["count"] >= 1


def test_count_gives_up_at_its_time_limit(client: TestClient, ui_database_url: str) -> None:
    from sqlalchemy import ColumnElement, literal_column

    from service.db.session import session_factory

    with session_factory(ui_database_url)() as session:
        before = session.connection().exec_driver_sql("SHOW statement_timeout").scalar()
        slow: list[ColumnElement[bool]] = [literal_column("pg_sleep(0.5) IS NOT NULL")]
        assert repository.count_within(session, slow, timeout_ms=50) is None
        # The transaction is usable afterwards, with the previous timeout back.
        assert repository.count_within(session, [], timeout_ms=5_000) is not None
        assert session.connection().exec_driver_sql("SHOW statement_timeout").scalar() == before


def test_dataset_preview_matches_what_creation_freezes(
    client: TestClient, seeded: Seeded, ui_database_url: str
) -> None:
    body = {
        "name": "preview-check",
        "query": {
            "job_ids": [seeded.self_instruct_job],
            "review_status": "accepted_or_unreviewed_passed_all",
        },
        "split": {"test_fraction": 0.25, "seed": 5, "stratify_by_job": True},
    }
    preview = client.post("/v1/stats/dataset-preview", json=body)
    assert preview.status_code == 200, preview.text
    queued = client.post("/v1/datasets", json=body)
    assert queued.status_code == 202, queued.text
    run_freeze_worker(ui_database_url)
    created = client.get(f"/v1/datasets/{queued.json()['id']}")
    counts = created.json()["row_counts"]
    assert preview.json() | {"by_job": None} == {
        "stage": "answer",
        "rows": counts["total"],
        "train": counts["train"],
        "test": counts["test"],
        "by_job": None,
        "exact": True,
    }
    assert preview.json()["by_job"] == {str(seeded.self_instruct_job): counts["total"]}


def test_bad_input_is_a_problem_naming_the_field(client: TestClient, seeded: Seeded) -> None:
    response = client.get("/v1/stats/samples", params={"score_min": "high"})
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["errors"][0]["field"] == "score_min"
    response = client.post("/v1/stats/dataset-preview", json={"name": "x", "query": {"job_ids": [987654]}})
    assert response.status_code == 422
    assert "no such job: 987654" in response.json()["detail"]


def test_me_names_the_token_and_its_role(ui_server: str, seeded: Seeded) -> None:
    me = httpx.get(f"{ui_server}/v1/me", headers={"Authorization": f"Bearer {seeded.reviewer_token}"})
    assert me.json() == {"token_id": seeded.reviewer_id, "name": "rui (reviewer)", "role": "reviewer"}
    anonymous = httpx.get(f"{ui_server}/v1/me")
    assert anonymous.status_code == 401
    assert anonymous.headers["content-type"] == "application/problem+json"


def test_token_names_list_every_token_by_id_and_never_a_secret(ui_server: str, seeded: Seeded) -> None:
    viewer = {"Authorization": f"Bearer {seeded.viewer_token}"}
    page = httpx.get(f"{ui_server}/v1/token-names", headers=viewer).json()
    names = {item["token_id"]: item["name"] for item in page["items"]}
    assert names[seeded.reviewer_id] == "rui (reviewer)"
    assert {"ada (admin)", "vic (viewer)"} <= set(names.values())
    assert all(set(item) == {"token_id", "name"} for item in page["items"])
    assert page["total"] >= 3
    second = httpx.get(f"{ui_server}/v1/token-names", headers=viewer, params={"limit": 1, "offset": 1}).json()
    assert [item["token_id"] for item in second["items"]] == [page["items"][1]["token_id"]]
    assert httpx.get(f"{ui_server}/v1/token-names").status_code == 401
