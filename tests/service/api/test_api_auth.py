"""Bearer tokens: missing/unknown/revoked → 401, too-weak role → 403, roles nest, last use recorded."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from service.auth import hash_token, revoke_token
from service.db.models import ApiToken
from service.db.session import transaction
from tests.service.api.factories import bearer, make_token

PROBLEM = "application/problem+json"

# (method, path, body): one representative of every protected route.
PROTECTED_ROUTES = [
    ("GET", "/metrics", None),
    ("GET", "/v1/recipes", None),
    ("GET", "/v1/recipes/1", None),
    ("POST", "/v1/recipes", {"name": "x", "spec": {}}),
    ("GET", "/v1/jobs", None),
    ("GET", "/v1/jobs/1", None),
    ("POST", "/v1/jobs", {}),
    ("POST", "/v1/jobs/1/cancel", None),
    ("GET", "/v1/jobs/1/events", None),
    ("GET", "/v1/samples", None),
    ("GET", "/v1/samples/1", None),
]


@pytest.mark.parametrize(("method", "path", "body"), PROTECTED_ROUTES)
def test_no_token_is_401_with_a_bearer_challenge(
    client: TestClient, method: str, path: str, body: object
) -> None:
    response = client.request(method, path, json=body)
    assert response.status_code == 401
    assert response.headers["content-type"] == PROBLEM
    assert response.headers["www-authenticate"].startswith("Bearer")
    problem = response.json()
    assert problem["status"] == 401
    assert problem["instance"] == path
    assert "Bearer" in problem["detail"]


@pytest.mark.parametrize(
    "header",
    ["Bearer hl_not-a-real-token", "Basic dXNlcjpwYXNz", "Bearer", "hl_nobearer"],
)
def test_bad_tokens_are_401(client: TestClient, header: str) -> None:
    response = client.get("/v1/jobs", headers={"Authorization": header})
    assert response.status_code == 401
    assert response.headers["content-type"] == PROBLEM
    assert "Bearer" in response.headers["www-authenticate"]


def test_revoked_token_is_401(client: TestClient, database_url: str) -> None:
    token_id, secret = make_token(database_url, "admin")
    assert client.get("/v1/jobs", headers=bearer(secret)).status_code == 200
    with transaction(database_url) as session:
        revoke_token(session, token_id)
    response = client.get("/v1/jobs", headers=bearer(secret))
    assert response.status_code == 401
    assert "revoked" in response.json()["detail"]


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/v1/recipes", {"name": "x", "spec": {}}),
        ("POST", "/v1/jobs", {}),
        ("POST", "/v1/jobs/1/cancel", None),
    ],
)
@pytest.mark.parametrize("role", ["viewer", "reviewer"])
def test_admin_routes_refuse_weaker_roles_with_403(
    client: TestClient, secrets_by_role: dict[str, str], role: str, method: str, path: str, body: object
) -> None:
    response = client.request(method, path, json=body, headers=bearer(secrets_by_role[role]))
    assert response.status_code == 403
    assert response.headers["content-type"] == PROBLEM
    assert "'admin'" in response.json()["detail"]


@pytest.mark.parametrize("role", ["viewer", "reviewer", "admin"])
def test_every_role_reads(client: TestClient, secrets_by_role: dict[str, str], role: str) -> None:
    for path in ("/v1/jobs", "/v1/recipes", "/v1/samples", "/metrics"):
        assert client.get(path, headers=bearer(secrets_by_role[role])).status_code == 200, path


def test_health_and_docs_need_no_token(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json() == {"status": "ok"}
    assert client.get("/docs").status_code == 200
    assert client.get("/openapi.json").status_code == 200


def test_tokens_are_stored_hashed_and_last_use_is_recorded(client: TestClient, database_url: str) -> None:
    token_id, secret = make_token(database_url, "viewer")
    assert secret.startswith("hl_")
    assert len(secret) > 40
    with transaction(database_url) as session:
        row = session.scalars(select(ApiToken).where(ApiToken.id == token_id)).one()
        assert row.token_hash == hash_token(secret)
        assert secret not in (row.token_hash, row.prefix)
        assert secret.startswith(row.prefix)
        assert row.last_used_at is None
    client.get("/v1/jobs", headers=bearer(secret))
    with transaction(database_url) as session:
        first_use = session.scalars(select(ApiToken.last_used_at).where(ApiToken.id == token_id)).one()
    assert first_use is not None
    # Within the resolution window a second request does not write again.
    client.get("/v1/jobs", headers=bearer(secret))
    with transaction(database_url) as session:
        assert (
            session.scalars(select(ApiToken.last_used_at).where(ApiToken.id == token_id)).one() == first_use
        )
