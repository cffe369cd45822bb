"""Jobs: submission (validation, sharding, idempotency), listing, progress, cancel, events, limits."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import func, select, update

from service.db.models import Job, Task
from service.db.session import transaction
from tests.service.api.conftest import MAX_PAGE_SIZE, MAX_REQUEST_BYTES
from tests.service.api.factories import recipe_spec, teacher, unique_name


def submit(client: TestClient, headers: dict[str, str], **body: Any) -> Any:
    body.setdefault("recipe", recipe_spec())
    body.setdefault("teacher", teacher())
    return client.post("/v1/jobs", json=body, headers=headers)


def test_submit_inline_creates_job_shards_recipe_and_queued_event(
    client: TestClient, admin: dict[str, str], viewer: dict[str, str]
) -> None:
    spec = recipe_spec(topics=10)
    response = submit(client, admin, recipe=spec, priority=5)
    assert response.status_code == 202, response.text
    job = response.json()
    assert response.headers["location"] == f"/v1/jobs/{job['id']}"
    assert job["status"] == "queued"
    assert job["priority"] == 5
    assert job["answer_stage"] == "answer", "fixed at submission from the recipe"
    assert job["progress"]["items_total"] == 10
    assert job["progress"]["items_done"] == 0
    assert job["progress"]["eta_seconds"] is None
    assert job["progress"]["phase"] == "queued"
    assert job["seed"] == 3  # the recipe's seed when the job sets none
    assert job["params"] == {"limit": None, "shard_size": 4, "chunk_size": 2}  # the test server's defaults
    assert [(s["start"], s["end"], s["status"]) for s in job["shards"]] == [
        (0, 4, "queued"),
        (4, 8, "queued"),
        (8, 10, "queued"),
    ]
    assert job["recipe"]["name"] == spec["name"]
    assert job["recipe"]["version"] == 1
    stored = client.get(f"/v1/recipes/{job['recipe']['id']}", headers=viewer).json()
    assert stored["spec"] == spec
    events = client.get(f"/v1/jobs/{job['id']}/events", headers=viewer).json()
    assert [e["kind"] for e in events["items"]] == ["queued"]
    assert events["items"][0]["data"]["items_total"] == 10
    with transaction(client.app.state.settings.database_url) as session:  # type: ignore[attr-defined]
        tasks = session.scalars(select(Task).where(Task.job_id == job["id"]).order_by(Task.id)).all()
        assert next((t.kind, t.priority, t.payload) for t in tasks) == (
            "generate",
            5,
            {"item_start": 0, "item_end": 4, "teacher_index": 0},
        )


def test_submit_by_id_by_name_and_by_version(client: TestClient, admin: dict[str, str]) -> None:
    name = unique_name()
    v1 = client.post("/v1/recipes", json={"name": name, "spec": recipe_spec(topics=3)}, headers=admin).json()
    v2 = client.post("/v1/recipes", json={"name": name, "spec": recipe_spec(topics=5)}, headers=admin).json()
    by_id = submit(client, admin, recipe={"id": v1["id"]}).json()
    latest = submit(client, admin, recipe={"name": name}).json()
    pinned = submit(client, admin, recipe={"name": name, "version": 1}).json()
    assert (by_id["recipe"]["id"], by_id["progress"]["items_total"]) == (v1["id"], 3)
    assert (latest["recipe"]["id"], latest["progress"]["items_total"]) == (v2["id"], 5)
    assert pinned["recipe"]["id"] == v1["id"]


@pytest.mark.parametrize(
    ("recipe", "field"),
    [
        ({"id": 2_000_000_000}, "recipe.id"),
        ({"name": "no-such-recipe-anywhere"}, "recipe.name"),
        ({"id": 0}, "recipe.id"),
    ],
)
def test_unknown_recipe_reference_is_422_on_the_field(
    client: TestClient, admin: dict[str, str], recipe: dict[str, Any], field: str
) -> None:
    response = submit(client, admin, recipe=recipe)
    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["field"] == field


def test_limit_and_shard_size(client: TestClient, admin: dict[str, str]) -> None:
    job = submit(client, admin, recipe=recipe_spec(topics=10), limit=7, shard_size=3, chunk_size=1).json()
    assert job["progress"]["items_total"] == 7
    assert [(s["start"], s["end"]) for s in job["shards"]] == [(0, 3), (3, 6), (6, 7)]
    assert job["params"] == {"limit": 7, "shard_size": 3, "chunk_size": 1}
    bigger = submit(client, admin, recipe=recipe_spec(topics=2), limit=50).json()
    assert bigger["progress"]["items_total"] == 2


def test_idempotency_key(client: TestClient, admin: dict[str, str], database_url: str) -> None:
    key = unique_name("key")
    body = {"recipe": recipe_spec(), "teacher": teacher(), "seed": 9}
    first = client.post("/v1/jobs", json=body, headers={**admin, "Idempotency-Key": key})
    assert first.status_code == 202
    # Same content, different key order and whitespace: the same request.
    replay = client.post(
        "/v1/jobs",
        content=json.dumps(dict(reversed(list(body.items()))), indent=2),
        headers={**admin, "Idempotency-Key": key, "Content-Type": "application/json"},
    )
    assert replay.status_code == 200
    assert replay.json()["id"] == first.json()["id"]
    assert replay.json()["idempotency_key"] == key

    different = client.post("/v1/jobs", json={**body, "seed": 10}, headers={**admin, "Idempotency-Key": key})
    assert different.status_code == 409
    problem = different.json()
    assert problem["type"].endswith("idempotency-key-reused")
    assert problem["job_id"] == first.json()["id"]
    with transaction(database_url) as session:
        assert session.scalar(select(func.count()).select_from(Job).where(Job.idempotency_key == key)) == 1
    # Without a key, the same body makes a new job.
    assert client.post("/v1/jobs", json=body, headers=admin).json()["id"] != first.json()["id"]


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"teacher": {"model": "m", "engine": "tgi"}}, "teacher.engine"),
        ({"teacher": {"model": "m", "gpu_memory_utilization": 2}}, "teacher.gpu_memory_utilization"),
        ({"teacher": {"model": "m", "temperature": 1}}, "teacher.temperature"),
        ({"teacher": {"engine": "vllm"}}, "teacher.model"),
        ({"teacher": None}, "teacher"),
        ({"priority": "high"}, "priority"),
        ({"limit": 0}, "limit"),
        ({"seed": -1}, "seed"),
        ({"shard_size": 0}, "shard_size"),
        ({"surprise": True}, "surprise"),
    ],
)
def test_invalid_job_payload_is_422_naming_the_field(
    client: TestClient, admin: dict[str, str], changes: dict[str, Any], field: str
) -> None:
    response = submit(client, admin, **changes)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert field in [error["field"] for error in response.json()["errors"]]


def test_inline_recipe_errors_point_inside_recipe(client: TestClient, admin: dict[str, str]) -> None:
    response = submit(client, admin, recipe=recipe_spec(content="{{ nope }}"))
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "recipe.stages[0].messages[0].content"
    response = submit(client, admin, recipe={**recipe_spec(), "stages": []})
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "recipe.stages"


def test_recipe_without_items_is_422(client: TestClient, admin: dict[str, str]) -> None:
    spec = recipe_spec()
    spec["seeds"]["limit"] = 0
    response = submit(client, admin, recipe=spec)
    assert response.status_code == 422
    assert "no items" in response.json()["detail"]


def test_malformed_json_is_422(client: TestClient, admin: dict[str, str]) -> None:
    response = client.post(
        "/v1/jobs", content=b'{"recipe": ', headers={**admin, "Content-Type": "application/json"}
    )
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"


def test_request_too_large_is_413(client: TestClient, admin: dict[str, str]) -> None:
    spec = recipe_spec()
    spec["seeds"] = {"records": [{"topic": "x" * 1000} for _ in range(MAX_REQUEST_BYTES // 1000 + 10)]}
    response = submit(client, admin, recipe=spec)
    assert response.status_code == 413
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["status"] == 413

    body = json.dumps({"recipe": spec, "teacher": teacher()}).encode()

    def chunks() -> Any:  # no Content-Length: the limit applies while streaming
        for start in range(0, len(body), 16384):
            yield body[start : start + 16384]

    streamed = client.post(
        "/v1/jobs", content=chunks(), headers={**admin, "Content-Type": "application/json"}
    )
    assert streamed.status_code == 413
    assert streamed.json()["status"] == 413


def test_list_filters_and_pages(client: TestClient, admin: dict[str, str], viewer: dict[str, str]) -> None:
    ids = [submit(client, admin).json()["id"] for _ in range(3)]
    page = client.get("/v1/jobs", params={"limit": 2}, headers=viewer).json()
    assert page["limit"] == 2
    assert page["offset"] == 0
    assert page["total"] >= 3
    assert [j["id"] for j in page["items"]] == sorted(ids, reverse=True)[:2]  # newest first
    assert "shards" not in page["items"][0]
    assert "progress" in page["items"][0]
    client.post(f"/v1/jobs/{ids[0]}/cancel", headers=admin)
    cancelled = client.get(
        "/v1/jobs", params={"status": "cancelled", "limit": MAX_PAGE_SIZE}, headers=viewer
    ).json()
    assert ids[0] in [j["id"] for j in cancelled["items"]]
    assert all(j["status"] == "cancelled" for j in cancelled["items"])
    assert client.get("/v1/jobs", params={"status": "paused"}, headers=viewer).status_code == 422
    too_big = client.get("/v1/jobs", params={"limit": MAX_PAGE_SIZE + 1}, headers=viewer)
    assert too_big.status_code == 422
    assert too_big.json()["errors"][0]["field"] == "limit"
    assert client.get("/v1/jobs", params={"offset": -1}, headers=viewer).status_code == 422


def test_progress_rates_eta_shards_and_last_error(
    client: TestClient, admin: dict[str, str], viewer: dict[str, str], database_url: str
) -> None:
    job_id = submit(client, admin, recipe=recipe_spec(topics=8)).json()["id"]
    with transaction(database_url) as session:
        session.execute(
            update(Job)
            .where(Job.id == job_id)
            .values(
                status="running",
                started_at=datetime.now(UTC) - timedelta(seconds=100),
                items_done=4,
                samples_written=12,
                tokens_in=400,
                tokens_out=1000,
            )
        )
        first, second = session.scalars(select(Task.id).where(Task.job_id == job_id).order_by(Task.id)).all()
        session.execute(
            update(Task)
            .where(Task.id == first)
            .values(status="succeeded", cursor=4, attempts=1, worker_id="w-1")
        )
        session.execute(
            update(Task)
            .where(Task.id == second)
            .values(status="queued", attempts=1, last_error="lease expired (worker w-2 died)")
        )
    job = client.get(f"/v1/jobs/{job_id}", headers=viewer).json()
    progress = job["progress"]
    assert (progress["items_done"], progress["items_total"], progress["fraction"]) == (4, 8, 0.5)
    assert (progress["samples_written"], progress["tokens_in"], progress["tokens_out"]) == (12, 400, 1000)
    # 4 items in ~100 s: ~0.04 items/s, ~100 s to go (loose bounds: the clock moves during the test).
    assert 0.02 < progress["items_per_second"] <= 0.04
    assert 90 <= progress["eta_seconds"] < 200
    assert progress["phase"] == "generating"
    assert 5 < progress["tokens_out_per_second"] <= 10
    shards = {s["id"]: s for s in job["shards"]}
    assert (shards[first]["status"], shards[first]["cursor"], shards[first]["worker_id"]) == (
        "succeeded",
        4,
        "w-1",
    )
    assert shards[second]["last_error"] == "lease expired (worker w-2 died)"
    assert job["last_error"] == f"shard {second}: lease expired (worker w-2 died)"


def test_a_running_job_before_its_first_chunk_is_starting(
    client: TestClient, admin: dict[str, str], database_url: str
) -> None:
    job_id = submit(client, admin, recipe=recipe_spec(topics=8)).json()["id"]
    with transaction(database_url) as session:
        session.execute(
            update(Job).where(Job.id == job_id).values(status="running", started_at=datetime.now(UTC))
        )
    progress = client.get(f"/v1/jobs/{job_id}", headers=admin).json()["progress"]
    assert (progress["phase"], progress["eta_seconds"], progress["items_done"]) == ("starting", None, 0)


def test_unknown_job_is_404(client: TestClient, viewer: dict[str, str], admin: dict[str, str]) -> None:
    for method, path, headers in [
        ("GET", "/v1/jobs/999999999", viewer),
        ("GET", "/v1/jobs/999999999/events", viewer),
        ("POST", "/v1/jobs/999999999/cancel", admin),
    ]:
        response = client.request(method, path, headers=headers)
        assert response.status_code == 404, path
        assert response.json()["detail"] == "job 999999999 does not exist"
    assert client.get("/v1/jobs/0", headers=viewer).status_code == 422
    assert client.get("/v1/jobs/abc", headers=viewer).status_code == 422


def test_cancel_stops_unfinished_shards_keeps_finished_ones_and_is_recorded(
    client: TestClient, admin: dict[str, str], viewer: dict[str, str], database_url: str
) -> None:
    job_id = submit(client, admin, recipe=recipe_spec(topics=12)).json()["id"]
    with transaction(database_url) as session:
        session.execute(update(Job).where(Job.id == job_id).values(status="running"))
        shard_ids = session.scalars(select(Task.id).where(Task.job_id == job_id).order_by(Task.id)).all()
        session.execute(update(Task).where(Task.id == shard_ids[0]).values(status="succeeded"))
        session.execute(update(Task).where(Task.id == shard_ids[1]).values(status="running", worker_id="w-9"))
    response = client.post(f"/v1/jobs/{job_id}/cancel", headers=admin)
    assert response.status_code == 200, response.text
    job = response.json()
    assert job["status"] == "cancelled"
    assert job["finished_at"] is not None
    assert [s["status"] for s in job["shards"]] == ["succeeded", "cancelled", "cancelled"]
    assert job["progress"]["eta_seconds"] is None, "a cancelled job will not finish: no ETA"
    assert job["progress"]["phase"] == "cancelled"
    again = client.post(f"/v1/jobs/{job_id}/cancel", headers=admin)
    assert again.status_code == 409
    assert again.json()["type"].endswith("job-finished")
    events = client.get(f"/v1/jobs/{job_id}/events", headers=viewer).json()["items"]
    assert [e["kind"] for e in events] == ["queued", "cancelled"]
    assert events[1]["data"]["shards_cancelled"] == 2


def test_events_are_ordered_and_page_by_after_id(
    client: TestClient, admin: dict[str, str], viewer: dict[str, str], database_url: str
) -> None:
    from service.events import record_event

    job_id = submit(client, admin).json()["id"]
    with transaction(database_url) as session:
        for i in range(5):
            record_event(session, "checkpoint", f"checkpoint {i}", job_id=job_id, data={"cursor": i})
    everything = client.get(f"/v1/jobs/{job_id}/events", headers=viewer).json()
    assert everything["total"] == 6
    ids = [e["id"] for e in everything["items"]]
    assert ids == sorted(ids)
    newer = client.get(f"/v1/jobs/{job_id}/events", params={"after": ids[2]}, headers=viewer).json()
    assert [e["id"] for e in newer["items"]] == ids[3:]
    assert newer["total"] == 3
    paged = client.get(f"/v1/jobs/{job_id}/events", params={"limit": 2, "offset": 2}, headers=viewer).json()
    assert [e["id"] for e in paged["items"]] == ids[2:4]


def test_a_plain_teacher_api_key_is_refused_and_a_reference_is_stored(
    client: TestClient, admin: dict[str, str], viewer: dict[str, str]
) -> None:
    """Issue #12.6: a secret is never stored; the teacher names where the worker reads it."""
    served = teacher("served-model", engine="openai", base_url="http://x/v1")
    refused = submit(client, admin, teacher={**served, "api_key": "sk-secret"})
    assert refused.status_code == 422, refused.text
    [error] = refused.json()["errors"]
    assert error["field"] == "teacher.api_key"
    assert "api_key_env" in error["msg"]
    assert "api_key_file" in error["msg"]
    assert "sk-secret" not in refused.text
    job = submit(client, admin, teacher={**served, "api_key_env": "TEACHER_API_KEY"}).json()
    assert job["teacher"]["api_key_env"] == "TEACHER_API_KEY"
    assert "api_key" not in job["teacher"]
    by_file = submit(client, admin, teacher={**served, "api_key_file": "/run/secrets/teacher"})
    assert by_file.status_code == 202, by_file.text
    assert by_file.json()["teacher"]["api_key_file"] == "/run/secrets/teacher"
    bad_name = submit(client, admin, teacher={**served, "api_key_env": "not a name"})
    assert bad_name.status_code == 422
    assert bad_name.json()["errors"][0]["field"] == "teacher.api_key_env"


def test_concurrent_submissions_with_one_key_make_one_job(
    app: FastAPI, admin: dict[str, str], database_url: str
) -> None:
    key = unique_name("race")
    body = {"recipe": recipe_spec(), "teacher": teacher()}
    results: list[tuple[int, int]] = []

    def post() -> None:
        with TestClient(app) as own_client:  # one client per thread, like separate HTTP clients
            response = own_client.post("/v1/jobs", json=body, headers={**admin, "Idempotency-Key": key})
            results.append((response.status_code, response.json()["id"]))

    threads = [threading.Thread(target=post) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(code for code, _ in results) == [200, 200, 200, 202]
    assert len({job_id for _, job_id in results}) == 1
    with transaction(database_url) as session:
        assert session.scalar(select(func.count()).select_from(Job).where(Job.idempotency_key == key)) == 1
