"""CLI test fixtures: the API served by a real uvicorn in a thread, and the CLI's environment."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from service.settings import Settings, get_settings
from tests.live_server import live_server
from tests.service.api.factories import make_token


@pytest.fixture(scope="session")
def live_api(database_url: str) -> Iterator[str]:
    """Base URL of a uvicorn server running the app on the session's database."""
    with live_server(Settings(database_url=database_url, shard_size=4, chunk_size=2)) as url:
        yield url


@pytest.fixture(scope="session")
def cli_admin_secret(database_url: str) -> str:
    return make_token(database_url, "admin")[1]


@pytest.fixture
def cli_env(
    monkeypatch: pytest.MonkeyPatch, database_url: str, live_api: str, cli_admin_secret: str
) -> Iterator[dict[str, str]]:
    """The environment a user of `hardlabel` would have: database, API URL, admin token."""
    env = {
        "HARDLABEL_DATABASE_URL": database_url,
        "HARDLABEL_API_URL": live_api,
        "HARDLABEL_TOKEN": cli_admin_secret,
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    get_settings.cache_clear()
    yield env
    get_settings.cache_clear()
