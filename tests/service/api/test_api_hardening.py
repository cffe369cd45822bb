"""Issue #12: bad input keeps its rule (a problem+json naming the field, never a 500), the OpenAPI
document tells the truth, and a database that is away is a 503 on every route."""

from __future__ import annotations

import json
import tracemalloc
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, make_url, text

from service.app import create_app
from service.db.scratch import create_database, drop_database
from service.db.session import transaction
from service.settings import Settings
from tests.service.api.factories import (
    bearer,
    insert_samples,
    make_job,
    make_token,
    recipe_spec,
    sample_row,
    unique_name,
)

PROBLEM = "application/problem+json"


def assert_validation_problem(response: Any, field: str) -> dict[str, Any]:
    """A 422 in the documented shape: the app's type and an `errors` entry naming `field`."""
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == PROBLEM
    problem: dict[str, Any] = response.json()
    assert problem["type"] == "urn:hardlabel:problem:validation-error", problem
    assert {"title", "status", "detail", "instance", "errors"} <= set(problem), problem
    fields = [error["field"] for error in problem["errors"]]
    assert field in fields, problem
    for error in problem["errors"]:
        assert {"loc", "field", "msg"} <= set(error)
    return problem


@pytest.fixture
def sample_id(database_url: str) -> int:
    with transaction(database_url) as session:
        job_id = make_job(session, status="succeeded").id
    return insert_samples(database_url, [sample_row(job_id, 0)])[0]


@pytest.mark.parametrize("field", ["answer", "question", "note"])
@pytest.mark.parametrize("bad", ["a\ud800b", "a\x00b"], ids=["lone-surrogate", "nul"])
def test_unstorable_text_in_a_review_edit_is_a_422_naming_the_field(
    client: TestClient, reviewer: dict[str, str], sample_id: int, field: str, bad: str
) -> None:
    body = json.dumps({field: bad})  # json.dumps escapes the surrogate as \ud800, as a client would
    response = client.patch(
        f"/v1/samples/{sample_id}", content=body, headers={**reviewer, "content-type": "application/json"}
    )
    problem = assert_validation_problem(response, field)
    assert "surrogate" in problem["detail"] or "NUL" in problem["detail"]
    detail = client.get(f"/v1/samples/{sample_id}", headers=reviewer).json()
    assert (detail["question"], detail["answer"], detail["note"]) == ("question 0", "answer 0", None)


def test_unstorable_text_anywhere_in_a_body_or_query_is_a_422_naming_it(
    client: TestClient, admin: dict[str, str], viewer: dict[str, str]
) -> None:
    spec = recipe_spec()
    spec["stages"][0]["messages"][0]["content"] = "Tell me about {{ topic }}.\ud800"
    body = json.dumps({"name": unique_name(), "spec": spec})
    response = client.post("/v1/recipes", content=body, headers={**admin, "content-type": "application/json"})
    assert_validation_problem(response, "spec.stages[0].messages[0].content")
    spec = recipe_spec()
    spec["seeds"]["values"]["topic"][2] = "x\udc00"
    spec["seeds"]["values"]["a\x00b"] = ["y"]  # keys too
    body = json.dumps({"name": unique_name(), "spec": spec})
    response = client.post("/v1/recipes", content=body, headers={**admin, "content-type": "application/json"})
    problem = assert_validation_problem(response, "spec.seeds.values.topic[2]")
    assert "spec.seeds.values.a\x00b" in [error["field"] for error in problem["errors"]]
    assert_validation_problem(client.get("/v1/recipes", params={"name": "a\x00b"}, headers=viewer), "name")
    response = client.post(
        "/v1/training-runs",
        content=json.dumps({"dataset_id": 1, "model": "a\x00b"}),
        headers={**admin, "content-type": "application/json"},
    )
    assert_validation_problem(response, "model")


def test_integer_query_parameters_are_bounded_by_their_columns(
    client: TestClient, viewer: dict[str, str]
) -> None:
    response = client.get("/v1/samples", params={"reviewer": 9223372036854775806}, headers=viewer)
    assert_validation_problem(response, "reviewer")


def test_a_body_that_is_not_utf8_is_a_validation_problem(client: TestClient, admin: dict[str, str]) -> None:
    response = client.post(
        "/v1/recipes", content=b'{"name": "\xff\xfe"}', headers={**admin, "content-type": "application/json"}
    )
    assert_validation_problem(response, "")


def test_a_wrong_method_names_every_allowed_one(client: TestClient, viewer: dict[str, str]) -> None:
    for method, path, allowed in [
        ("OPTIONS", "/v1/jobs", "GET, POST"),
        ("DELETE", "/v1/jobs", "GET, POST"),
        ("OPTIONS", "/v1/samples/1", "GET, PATCH"),
    ]:
        response = client.request(method, path, headers=viewer)
        assert response.status_code == 405
        assert response.headers["allow"] == allowed, (method, path)
        assert response.headers["content-type"] == PROBLEM
        assert response.json()["type"] == "urn:hardlabel:problem:method-not-allowed"


def test_a_chunked_body_over_the_limit_is_the_app_problem(client: TestClient, admin: dict[str, str]) -> None:
    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit applies while streaming
        yield b'{"name": "x", "spec": {"pad": "'
        for _ in range(64):
            yield b"x" * 8192
        yield b'"}}'

    response = client.post(
        "/v1/recipes", content=chunks(), headers={**admin, "content-type": "application/json"}
    )
    assert response.status_code == 413
    assert response.headers["content-type"] == PROBLEM
    assert response.json()["type"] == "urn:hardlabel:problem:payload-too-large"


def test_openapi_states_the_page_size_bound_and_404_of_id_routes(
    client: TestClient, api_settings: Settings
) -> None:
    schema = client.get("/openapi.json").json()
    for path, item in schema["paths"].items():
        for method, operation in item.items():
            for parameter in operation.get("parameters", []):
                if parameter["name"] == "limit" and parameter["in"] == "query":
                    branches = parameter["schema"].get("anyOf", [parameter["schema"]])
                    maxima = [b["maximum"] for b in branches if b.get("type") == "integer"]
                    assert maxima == [api_settings.max_page_size], (method, path)
            if "{" in path:
                assert "404" in operation["responses"], (method, path)


def test_validating_a_template_evaluates_nothing(client: TestClient, admin: dict[str, str]) -> None:
    # `{{ 'a' * 10**9 }}` took 117 s and stalled every other request; now it is never computed
    # at validation, and any render of it is refused (the item fails with the reason).
    spec = recipe_spec(content="{{ 'a' * 10**9 }}{{ 'b'|center(10**9) }}")
    tracemalloc.start()  # memory, not time: deterministic (it was 1 GB and minutes before)
    try:
        response = client.post("/v1/recipes", json={"name": unique_name(), "spec": spec}, headers=admin)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert response.status_code == 201, response.text
    assert peak < 20_000_000


@pytest.fixture
def outage_database(database_url: str) -> Iterator[str]:
    """A migrated database of its own that the test may cut off from everyone."""
    url = create_database(database_url, "hardlabel_outage")
    try:
        yield url
    finally:
        set_connections_allowed(url, allowed=True)
        drop_database(url)


def set_connections_allowed(url: str, *, allowed: bool) -> None:
    """ALLOW_CONNECTIONS false and every backend terminated: the database is away for new and old."""
    name = make_url(url).database
    admin = create_engine(make_url(url).set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS {"true" if allowed else "false"}'))
            if not allowed:
                conn.execute(
                    text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :name"),
                    {"name": name},
                )
    finally:
        admin.dispose()


def test_every_route_is_a_503_while_the_database_is_away(outage_database: str) -> None:
    _, secret = make_token(outage_database, "admin")
    app = create_app(Settings(database_url=outage_database))
    with TestClient(app, raise_server_exceptions=False) as client:
        assert client.get("/v1/recipes", headers=bearer(secret)).status_code == 200  # pooled connections
        set_connections_allowed(outage_database, allowed=False)
        for method, path in [
            ("GET", "/v1/recipes"),  # killed pooled connection, during token authentication
            ("GET", "/v1/recipes"),  # a new connection refused, during token authentication
            ("GET", "/v1/jobs"),
            ("GET", "/v1/samples"),
            ("POST", "/v1/recipes"),
            ("GET", "/readyz"),
        ]:
            response = client.request(
                method,
                path,
                headers=bearer(secret),
                json={"name": unique_name(), "spec": recipe_spec()} if method == "POST" else None,
            )
            assert response.status_code == 503, (method, path, response.text)
            assert response.headers["content-type"] == PROBLEM
            assert response.json()["type"] == "urn:hardlabel:problem:database-unavailable"
        set_connections_allowed(outage_database, allowed=True)
        assert client.get("/v1/recipes", headers=bearer(secret)).status_code == 200  # and it recovers
