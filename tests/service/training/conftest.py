"""Training test fixtures: a database of their own, the app on it, tokens, and a train worker to run.

Train workers claim any queued `train` task, so these tests keep their runs in their own database
and cancel what a test leaves unfinished.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from service.app import create_app
from service.auth import issue_token
from service.db.scratch import scratch_database
from service.db.session import transaction
from service.settings import Settings
from service.workers.runner import run_worker
from tests.service.training.factories import cancel_unfinished_runs


@pytest.fixture(scope="session")
def training_db_url(database_url: str) -> Iterator[str]:
    """A migrated database only the training tests use."""
    with scratch_database(database_url, "hardlabel_training") as url:
        yield url


@pytest.fixture(scope="session")
def training_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("hardlabel-home")


@pytest.fixture(scope="session")
def training_settings(training_db_url: str, training_home: Path) -> Settings:
    return Settings(
        database_url=training_db_url,
        home=training_home,
        max_page_size=200,
        default_page_size=50,
        lease_seconds=30.0,
        heartbeat_seconds=0.5,
        reaper_seconds=0.5,
        poll_seconds=0.2,
        retry_backoff_seconds=0.0,
        max_attempts=3,
        vllm_kv_cache_bytes=256 << 20,
    )


@pytest.fixture(scope="session")
def training_app(training_settings: Settings) -> FastAPI:
    return create_app(training_settings)


@pytest.fixture(scope="session")
def client(training_app: FastAPI) -> Iterator[TestClient]:
    with TestClient(training_app, raise_server_exceptions=False) as test_client:
        yield test_client


def _token(url: str, role: str) -> dict[str, str]:
    with transaction(url) as session:
        _, secret = issue_token(session, role=role, name=f"{role}-{uuid.uuid4().hex[:6]}")
    return {"Authorization": f"Bearer {secret}"}


@pytest.fixture(scope="session")
def admin(training_db_url: str) -> dict[str, str]:
    return _token(training_db_url, "admin")


@pytest.fixture(scope="session")
def viewer(training_db_url: str) -> dict[str, str]:
    return _token(training_db_url, "viewer")


@pytest.fixture(scope="session")
def reviewer(training_db_url: str) -> dict[str, str]:
    return _token(training_db_url, "reviewer")


@pytest.fixture(autouse=True)
def _no_leftover_runs(training_db_url: str) -> Iterator[None]:
    yield
    cancel_unfinished_runs(training_db_url)


class WorkerThread:
    """A train worker in this process (its training runs in child processes), until the queue is idle."""

    def __init__(self, settings: Settings) -> None:
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(settings,), daemon=True)

    def _run(self, settings: Settings) -> None:
        try:
            run_worker(settings, ["train"], stop=self.stop, exit_when_idle=True)
        except BaseException as exc:
            self.error = exc

    def start(self) -> WorkerThread:
        self.thread.start()
        return self

    def join(self, timeout: float) -> None:
        self.thread.join(timeout)
        if self.thread.is_alive():
            self.stop.set()
            self.thread.join(60)
            raise AssertionError(f"the train worker did not finish within {timeout:.0f}s")
        if self.error is not None:
            raise self.error


@pytest.fixture
def train_worker(training_settings: Settings) -> Iterator[type[WorkerThread]]:
    """Start with `train_worker(settings).start()`; stopped at the end of the test if still running."""
    started: list[WorkerThread] = []

    class Tracked(WorkerThread):
        def start(self) -> WorkerThread:
            started.append(self)
            return super().start()

    yield Tracked
    for worker in started:
        worker.stop.set()
        worker.thread.join(120)
