"""Curation test fixtures: a database of their own, the app on it, a token per role, factories.

They serve the curation folders (datasets, filters, reviews, cli/curation); folders with fixtures of
the same names (api, jobs, recipes, samples and training: app, client, tokens; cli: live_api) override
them in their own conftest.py.

Filter workers claim any queued `filter` task, so these tests keep their runs in their own database
(and run every run they queue to its end).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import insert

from service.app import create_app
from service.auth import issue_token
from service.db.models import Sample
from service.db.scratch import scratch_database
from service.db.session import transaction
from service.settings import Settings
from service.workers.runner import run_worker
from tests.factories import add_job, add_recipe


@pytest.fixture(scope="session")
def curation_db_url(database_url: str) -> Iterator[str]:
    """A migrated database only the curation tests use."""
    with scratch_database(database_url, "hardlabel_curation") as url:
        yield url


@pytest.fixture(scope="session")
def curation_settings(curation_db_url: str) -> Settings:
    return Settings(
        database_url=curation_db_url,
        max_page_size=200,
        default_page_size=50,
        lease_seconds=30.0,
        heartbeat_seconds=1.0,
        reaper_seconds=1.0,
        poll_seconds=0.05,
        retry_backoff_seconds=0.0,
        max_attempts=3,
    )


@pytest.fixture(scope="session")
def app(curation_settings: Settings) -> FastAPI:
    return create_app(curation_settings)


@pytest.fixture(scope="session")
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


@dataclass(frozen=True)
class Caller:
    token_id: int
    headers: dict[str, str]


def _token(url: str, role: str) -> Caller:
    with transaction(url) as session:
        row, secret = issue_token(session, role=role, name=f"{role}-{uuid.uuid4().hex[:6]}")
        return Caller(row.id, {"Authorization": f"Bearer {secret}"})


@pytest.fixture(scope="session")
def admin(curation_db_url: str) -> Caller:
    return _token(curation_db_url, "admin")


@pytest.fixture(scope="session")
def reviewer(curation_db_url: str) -> Caller:
    return _token(curation_db_url, "reviewer")


@pytest.fixture(scope="session")
def viewer(curation_db_url: str) -> Caller:
    return _token(curation_db_url, "viewer")


RECIPE = {
    "name": "curation-tests",
    "stages": [
        {"name": "answer", "messages": [{"role": "user", "content": "{{ q }}"}]},
        {"name": "judge", "judges": "answer", "messages": [{"role": "user", "content": "score"}]},
    ],
}


def make_job(
    url: str,
    *,
    spec: dict[str, Any] | None = None,
    teacher: str = "/models/teacher",
    answer_stage: str | None = "answer",
    more_teachers: tuple[str, ...] = (),
) -> int:
    """A committed finished job on a committed recipe row (samples are inserted directly);
    `more_teachers` are its teachers after `teacher`."""
    with transaction(url) as session:
        job = add_job(
            session,
            add_recipe(session, spec or RECIPE),
            status="succeeded",
            teachers=[{"model": model, "engine": "vllm"} for model in (teacher, *more_teachers)],
            answer_stage=answer_stage,
        )
        return job.id


def sample_row(
    job_id: int, item_index: int, question: str, answer: str | None, **values: Any
) -> dict[str, Any]:
    row: dict[str, Any] = {
        "job_id": job_id,
        "item_index": item_index,
        "stage": "answer",
        "sample_index": 0,
        "question": question,
        "answer": answer,
        "raw_text": answer or "(unparsable)",
        "parse_status": "ok" if answer is not None else "failed",
        "inputs": {},
        "provenance": {"teacher": {"model": "/models/teacher"}},
    }
    row.update(values)
    return row


def insert_samples(url: str, rows: list[dict[str, Any]]) -> list[int]:
    with transaction(url) as session:
        return list(session.scalars(insert(Sample).returning(Sample.id, sort_by_parameter_order=True), rows))


def run_filter_worker(settings: Settings) -> None:
    """Run queued filter tasks to the end in this process (a real worker loop)."""
    run_worker(settings, ["filter"], exit_when_idle=True)


@pytest.fixture(scope="session")
def live_api(curation_settings: Settings) -> Iterator[str]:
    """Base URL of a real uvicorn serving the app on the curation database (for CLI tests)."""
    from tests.live_server import live_server

    with live_server(curation_settings) as url:
        yield url


def run_freeze_worker(settings: Settings) -> None:
    """Run queued freeze tasks (dataset versions) to the end in this process (a real worker loop)."""
    run_worker(settings, ["freeze"], exit_when_idle=True)


def accepted_version(
    client: TestClient,
    admin: Caller,
    reviewer: Caller,
    rows: list[dict[str, Any]],
    job_id: int,
    **body: Any,
) -> dict[str, Any]:
    """`rows` of job `job_id` stored and accepted by the reviewer, then frozen as a version of `body`
    (its query defaults to that job); returns the version, with `job_id` added."""
    insert_samples(client.app.state.settings.database_url, rows)  # type: ignore[attr-defined]
    client.post(
        "/v1/samples/review", json={"query": {"job_id": job_id}, "action": "accept"}, headers=reviewer.headers
    )
    response = create_version(client, admin.headers, json={"query": {"job_ids": [job_id]}, **body})
    assert response.status_code == 200, response.text
    return {**response.json(), "job_id": job_id}


def create_version(client: TestClient, headers: dict[str, str], **request: Any) -> Any:
    """POST /v1/datasets (json=… or data=/files=…), let a worker freeze it, and return GET of the version.

    A request the API refuses returns its response as is (422, 403, …).
    """
    response = client.post("/v1/datasets", headers=headers, **request)
    if response.status_code != 202:
        return response
    assert response.json()["status"] == "queued", response.text
    run_freeze_worker(client.app.state.settings)  # type: ignore[attr-defined]
    return client.get(f"/v1/datasets/{response.json()['id']}", headers=headers)
