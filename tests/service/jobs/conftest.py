"""The API tests' fixtures (tests/service/api/conftest.py): one app on the session's database, a
TestClient, and a token per role."""

from tests.service.api.conftest import (
    _teacher_folder,
    admin,
    api_settings,
    app,
    client,
    reviewer,
    secrets_by_role,
    viewer,
)

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
