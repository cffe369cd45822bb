"""API test fixtures: one app on the session's database, a TestClient, and a token per role."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from service.app import create_app
from service.settings import Settings
from tests.service.api.factories import TEACHER_FOLDER, make_token

# The fixtures jobs/, recipes/ and samples/ re-export (`from tests.service.api.conftest import *`).
__all__ = [
    "_teacher_folder",
    "admin",
    "api_settings",
    "app",
    "client",
    "reviewer",
    "secrets_by_role",
    "viewer",
]

MAX_REQUEST_BYTES = 256 * 1024
MAX_PAGE_SIZE = 50


@pytest.fixture(scope="session", autouse=True)
def _teacher_folder(tiny_model_dir: Path) -> None:
    """Jobs need a teacher whose folder passes the submission checks (never loaded by these tests)."""
    TEACHER_FOLDER["path"] = str(tiny_model_dir)


@pytest.fixture(scope="session")
def api_settings(database_url: str) -> Settings:
    return Settings(
        database_url=database_url,
        max_request_bytes=MAX_REQUEST_BYTES,
        max_page_size=MAX_PAGE_SIZE,
        default_page_size=10,
        shard_size=4,
        chunk_size=2,
    )


@pytest.fixture(scope="session")
def app(api_settings: Settings) -> FastAPI:
    return create_app(api_settings)


@pytest.fixture(scope="session")
def client(app: FastAPI) -> Iterator[TestClient]:
    """Runs the lifespan; server errors come back as responses (a 500 must be seen, not raised)."""
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


@pytest.fixture(scope="session")
def secrets_by_role(database_url: str) -> dict[str, str]:
    return {role: make_token(database_url, role)[1] for role in ("admin", "reviewer", "viewer")}


@pytest.fixture(scope="session")
def admin(secrets_by_role: dict[str, str]) -> dict[str, str]:
    return {"Authorization": f"Bearer {secrets_by_role['admin']}"}


@pytest.fixture(scope="session")
def viewer(secrets_by_role: dict[str, str]) -> dict[str, str]:
    return {"Authorization": f"Bearer {secrets_by_role['viewer']}"}


@pytest.fixture(scope="session")
def reviewer(secrets_by_role: dict[str, str]) -> dict[str, str]:
    return {"Authorization": f"Bearer {secrets_by_role['reviewer']}"}
