"""Metrics a team would scrape: tokenless scraping (a setting, or a port of its own), queue, review
and training gauges computed from Postgres, no `*_created` noise, and no 500 when the database is down."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import delete, func, insert, text

from service.app import create_app
from service.cli import CliError
from service.db.models import TASK_KINDS, Task, TrainingMetric, TrainingRun
from service.db.session import transaction
from service.settings import Settings
from tests.service.api.factories import insert_samples, make_job, sample_row
from tests.service.api.test_api_app import metric_samples
from tests.service.training.factories import make_version

DOWN = "postgresql+psycopg://postgres@127.0.0.1:1/nowhere"
ROOT = Path(__file__).resolve().parents[3]

Values = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(client: TestClient, headers: dict[str, str] | None = None) -> Values:
    response = client.get("/metrics", headers=headers or {})
    assert response.status_code == 200, response.text
    return metric_samples(response.text)


@pytest.fixture(scope="module")
def public_client(database_url: str) -> Iterator[TestClient]:
    app = create_app(Settings(database_url=database_url, metrics_public=True))
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


def test_metrics_are_public_only_when_the_setting_says_so(
    client: TestClient, public_client: TestClient
) -> None:
    assert client.get("/metrics").status_code == 401  # the default: a viewer token, as before
    values = scrape(public_client)
    assert values[("hardlabel_database_up", ())] == 1
    assert ("hardlabel_jobs", (("status", "queued"),)) in values
    operation = public_client.get("/openapi.json").json()["paths"]["/metrics"]["get"]
    assert "security" not in operation
    assert "401" not in operation["responses"]


def test_metrics_port_serves_the_api_registry_without_a_token(app: FastAPI) -> None:
    from service.cli.serve import metrics_port

    server = uvicorn.Server(uvicorn.Config(app))
    with metrics_port(server, "127.0.0.1", None) as url:
        assert url is None  # no port set: nothing extra is served
    with metrics_port(server, "127.0.0.1", 0) as url:
        assert url is not None
        with urllib.request.urlopen(url, timeout=30) as response:
            assert response.status == 200
            body = response.read().decode()
    values = metric_samples(body)
    assert values[("hardlabel_database_up", ())] == 1
    assert ("hardlabel_queue_depth", (("kind", "generate"),)) in values
    assert "# TYPE hardlabel_http_requests_total counter" in body  # the API's own registry


def test_hardlabel_serve_serves_metrics_on_their_own_port(database_url: str) -> None:
    with socket.socket() as probe:  # a free port for the metrics
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {
        **os.environ,
        "HARDLABEL_DATABASE_URL": database_url,
        "HARDLABEL_LOG_LEVEL": "WARNING",
        "HARDLABEL_METRICS_PORT": str(port),
    }
    process = subprocess.Popen(
        [sys.executable, "-c", "from service.cli import main; main()", "serve", "--port", "0"],
        cwd=ROOT,
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stderr is not None
        api_line, metrics_line = process.stderr.readline(), process.stderr.readline()
        api = re.search(r"http://127\.0\.0\.1:\d+", api_line)
        assert api, api_line
        assert f"metrics (no token) on http://127.0.0.1:{port}/metrics" in metrics_line, metrics_line
        deadline = time.monotonic() + 30
        while True:  # the metrics port opens just before the API does
            try:
                ready = httpx.get(f"{api.group(0)}/readyz", timeout=5)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "serve did not answer"
                time.sleep(0.2)
        assert ready.status_code == 200
        assert httpx.get(f"{api.group(0)}/metrics").status_code == 401  # the API port still wants a token
        scraped = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=30)
        assert scraped.status_code == 200
        assert metric_samples(scraped.text)[("hardlabel_database_up", ())] == 1
    finally:
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    assert "Traceback" not in err


def test_a_busy_metrics_port_is_a_one_line_error(app: FastAPI) -> None:
    from service.cli.serve import metrics_port

    server = uvicorn.Server(uvicorn.Config(app))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        refused = pytest.raises(CliError, match=f"cannot serve metrics on 127.0.0.1:{port}")
        with refused, metrics_port(server, "127.0.0.1", port):
            pass


def test_queue_depth_and_oldest_queued_age_by_kind(
    client: TestClient, viewer: dict[str, str], database_url: str
) -> None:
    before = scrape(client, viewer)
    for kind in TASK_KINDS:  # every kind is reported, zeros too
        assert ("hardlabel_queue_depth", (("kind", kind),)) in before
        assert ("hardlabel_queue_oldest_age_seconds", (("kind", kind),)) in before
    now = func.now()
    with transaction(database_url) as session:
        ids = session.scalars(
            insert(Task)
            .values(
                [
                    {"kind": "freeze", "status": "queued", "run_after": now - text("interval '1 hour'")},
                    {"kind": "freeze", "status": "queued", "run_after": now - text("interval '5 minutes'")},
                    # In retry backoff: queued (counted) but not yet waiting.
                    {"kind": "freeze", "status": "queued", "run_after": now + text("interval '1 hour'")},
                    {"kind": "freeze", "status": "running", "run_after": now - text("interval '2 hours'")},
                ]
            )
            .returning(Task.id)
        ).all()
    try:
        after = scrape(client, viewer)
        depth = ("hardlabel_queue_depth", (("kind", "freeze"),))
        assert after[depth] - before[depth] == 3
        age = after[("hardlabel_queue_oldest_age_seconds", (("kind", "freeze"),))]
        assert 3600 <= age < 3600 + 600
    finally:
        with transaction(database_url) as session:
            session.execute(delete(Task).where(Task.id.in_(ids)))


def test_samples_by_review_decision(client: TestClient, viewer: dict[str, str], database_url: str) -> None:
    before = scrape(client, viewer)
    with transaction(database_url) as session:
        job_id = make_job(session, status="succeeded").id
    decisions = ["accepted", "accepted", "rejected", "pending", "pending", "pending"]
    insert_samples(database_url, [sample_row(job_id, i, review_status=d) for i, d in enumerate(decisions)])
    after = scrape(client, viewer)
    for decision, added in (("accepted", 2), ("rejected", 1), ("pending", 3)):
        key = ("hardlabel_samples_by_decision", (("decision", decision),))
        assert after[key] - before[key] == added, decision


def test_training_step_and_loss_of_running_runs(
    client: TestClient, viewer: dict[str, str], database_url: str
) -> None:
    version_id = make_version(database_url, train=[("What is 1+1?", "2")])
    with transaction(database_url) as session:

        def run(status: str, **values: object) -> int:
            row = TrainingRun(
                dataset_id=version_id,
                status=status,
                student={"model": "/s"},
                method="full",
                config={},
                **values,
            )
            session.add(row)
            session.flush()
            return int(row.id)

        running = run("running", step=7, total_steps=20)
        starting = run("running")  # claimed, nothing logged yet
        finished = run("succeeded", step=20, total_steps=20)
        session.execute(
            insert(TrainingMetric).values(
                [
                    {"training_run_id": running, "step": 5, "data": {"step": 5, "loss": 1.5}},
                    {"training_run_id": running, "step": 6, "data": {"step": 6, "loss": 1.25}},
                    # An evaluation-only row: no training loss, so the loss stays step 6's.
                    {"training_run_id": running, "step": 7, "data": {"step": 7, "eval_loss": 0.5}},
                    {"training_run_id": finished, "step": 20, "data": {"step": 20, "loss": 0.1}},
                ]
            )
        )
    values = scrape(client, viewer)
    assert values[("hardlabel_training_step", (("run", str(running)),))] == 7
    assert values[("hardlabel_training_total_steps", (("run", str(running)),))] == 20
    assert values[("hardlabel_training_loss", (("run", str(running)),))] == 1.25
    assert values[("hardlabel_training_step", (("run", str(starting)),))] == 0
    assert ("hardlabel_training_loss", (("run", str(starting)),)) not in values
    assert ("hardlabel_training_total_steps", (("run", str(starting)),)) not in values
    for name in ("hardlabel_training_step", "hardlabel_training_loss"):
        assert (name, (("run", str(finished)),)) not in values  # only running runs


def test_no_created_series(client: TestClient, viewer: dict[str, str]) -> None:
    client.get("/v1/jobs", headers=viewer)
    body = client.get("/metrics", headers=viewer).text
    assert "hardlabel_http_requests_total{" in body
    assert "hardlabel_http_request_duration_seconds_bucket{" in body
    assert "_created" not in body


def test_a_database_that_is_down_is_up_0_not_a_500() -> None:
    app = create_app(Settings(database_url=DOWN, metrics_public=True))
    client = TestClient(app, raise_server_exceptions=False)  # no lifespan: it would refuse to start
    assert client.get("/healthz").status_code == 200
    response = client.get("/metrics")
    assert response.status_code == 200
    values = metric_samples(response.text)
    assert values[("hardlabel_database_up", ())] == 0
    assert not any(name in ("hardlabel_jobs", "hardlabel_queue_depth") for name, _ in values)
    # This process's own series still come back.
    assert any(name == "hardlabel_http_requests_total" for name, _ in values)
