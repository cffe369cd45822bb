"""Browser-test fixtures: a real uvicorn server (background thread) on a database of its own, seeded
data, and Playwright pointed at Debian's Chromium (never `playwright install`).

The UI tests keep their own database (created beside the session's test database) so the jobs list
and the screenshots show only the seeded rows, whatever other test folders leave behind.
"""

from __future__ import annotations

import os
import re
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from playwright.sync_api import BrowserContext, ConsoleMessage, Page

from service.app import create_app
from service.db.scratch import scratch_database
from service.settings import Settings
from tests.service.web.factories import Seeded, seed_all, seed_training_run

ROOT = Path(__file__).resolve().parents[3]
# Screenshots go to docs/img when HARDLABEL_UI_SCREENSHOTS=docs/img (how the README's are made);
# by default to the ignored scratch folder, so `make test` leaves the working tree clean.
SCREENSHOTS = ROOT / os.environ.get("HARDLABEL_UI_SCREENSHOTS", ".tmp/ui-screenshots")
TOKEN_KEY = "hardlabel.token"


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args: dict[str, Any]) -> dict[str, Any]:
    return {
        **browser_type_launch_args,
        "executable_path": "/usr/bin/chromium",
        "args": [
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--no-first-run",
            "--disable-sync",
            "--disable-quic",
        ],
    }


@pytest.fixture(scope="session")
def browser_context_args(browser_context_args: dict[str, Any]) -> dict[str, Any]:
    return {**browser_context_args, "viewport": {"width": 1400, "height": 900}, "accept_downloads": True}


@pytest.fixture(scope="session")
def ui_database_url(database_url: str) -> Iterator[str]:
    """A migrated database only the UI tests use (same server as the session's test database)."""
    with scratch_database(database_url, "hardlabel_ui") as url:
        yield url


class ServerThread:
    """uvicorn serving `create_app(settings)` on a free port, in a daemon thread."""

    def __init__(self, settings: Settings) -> None:
        self.socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.socket.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.socket.getsockname()[1]}"
        config = uvicorn.Config(create_app(settings), log_level="warning", lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.socket]}, name="ui-test-server", daemon=True
        )

    def start(self) -> None:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the test server did not start")
            time.sleep(0.05)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)
        self.socket.close()


@pytest.fixture(scope="session")
def ui_server(ui_database_url: str) -> Iterator[str]:
    server = ServerThread(Settings(database_url=ui_database_url, max_page_size=200))
    server.start()
    yield server.url
    server.stop()


@pytest.fixture(scope="session")
def base_url(ui_server: str) -> str:
    """pytest-playwright resolves `page.goto("/ui/...")` against this."""
    return ui_server


def run_freeze_worker(database_url: str) -> None:
    """Freeze the queued dataset versions (a real worker loop in this process, until none is left)."""
    from service.workers.runner import run_worker

    run_worker(Settings(database_url=database_url, poll_seconds=0.05), ["freeze"], exit_when_idle=True)


@pytest.fixture(scope="session")
def seeded(ui_database_url: str, ui_server: str) -> Seeded:
    """Jobs, samples, verdicts; a dataset version frozen through the API; a training run on it."""
    seed = seed_all(ui_database_url)
    response = httpx.post(
        f"{ui_server}/v1/datasets",
        headers={"Authorization": f"Bearer {seed.admin_token}"},
        json={
            "name": "self-instruct-clean",
            "query": {
                "job_ids": [seed.self_instruct_job],
                "review_status": ["accepted"],
                "require_passed": ["length"],
            },
            "split": {"test_fraction": 0.1, "seed": 0},
        },
        timeout=30,
    )
    assert response.status_code == 202, response.text
    dataset_id = int(response.json()["id"])
    run_freeze_worker(ui_database_url)
    run_id = seed_training_run(ui_database_url, dataset_id, teacher_model="/models/qwen-teacher")
    return Seeded(**{**seed.__dict__, "dataset_id": dataset_id, "training_run": run_id})


@pytest.fixture
def api(ui_server: str, seeded: Seeded) -> Iterator[httpx.Client]:
    """An admin client of the same server, to check what the UI did."""
    with httpx.Client(
        base_url=ui_server, headers={"Authorization": f"Bearer {seeded.admin_token}"}, timeout=30
    ) as client:
        yield client


def sign_in_as(context: BrowserContext, token: str) -> None:
    """Every page of `context` starts with `token` in sessionStorage (as after the sign-in form)."""
    context.add_init_script(f"try {{ sessionStorage.setItem({TOKEN_KEY!r}, {token!r}); }} catch (e) {{}}")


@pytest.fixture
def page_errors(page: Page) -> Iterator[list[str]]:
    """Uncaught script errors of the page; a test fails if there are any."""
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.set_default_timeout(10_000)
    yield errors
    assert not errors, f"uncaught errors in the page: {errors}"


def _is_api_status(message: ConsoleMessage) -> bool:
    """Chromium logs every 4xx answer of fetch() as a console error; an API problem the page shows
    as a message is no error of the page's own."""
    return message.text.startswith("Failed to load resource") and "/v1/" in message.location.get("url", "")


@pytest.fixture
def console_errors(page: Page) -> Iterator[list[str]]:
    """Console errors of the page (API 4xx answers aside); a test fails if there are any."""
    errors: list[str] = []
    page.on(
        "console",
        lambda message: (
            errors.append(f"{message.text} ({message.location.get('url')})")
            if message.type == "error" and not _is_api_status(message)
            else None
        ),
    )
    yield errors
    assert not errors, f"console errors in the page: {errors}"


@pytest.fixture
def admin_page(page: Page, context: BrowserContext, seeded: Seeded, page_errors: list[str]) -> Page:
    sign_in_as(context, seeded.admin_token)
    return page


@pytest.fixture
def reviewer_page(page: Page, context: BrowserContext, seeded: Seeded, page_errors: list[str]) -> Page:
    sign_in_as(context, seeded.reviewer_token)
    return page


def api_ids(api: httpx.Client, **query: Any) -> list[int]:
    """Ids of the samples GET /v1/samples lists for `query` (first 200)."""
    response = api.get("/v1/samples", params={**query, "limit": 200})
    assert response.status_code == 200, response.text
    return [item["id"] for item in response.json()["items"]]


def samples_url(query: str) -> re.Pattern[str]:
    """The samples page at `query`, whichever sample is focused (the page keeps it in the hash)."""
    return re.compile(re.escape(f"/ui/samples?{query}") + r"(#sample-\d+)?$")


def screenshot(page: Page, name: str, *, full_page: bool = False) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=full_page)
