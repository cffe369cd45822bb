"""The real-model group: SmolLM2-135M-Instruct through the whole service, each engine loaded once.

A database of its own (workers claim any queued task), the app on it, an admin token, the real
teacher's engine config, and a real vLLM OpenAI-compatible server on the same folder. The server
takes ~20-30 s to come up, so it is started as soon as the session knows a selected test needs it
and boots while the in-process teacher generates; teardown stops its whole process group.

The generation jobs run once per session (`generation`): the multi-stage recipe and the
capitals recipe on the in-process vLLM teacher, then the capitals recipe again through the OpenAI
server. Training and curation tests use their samples.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.auth import issue_token
from service.db.scratch import scratch_database
from service.db.session import transaction
from service.settings import Settings
from service.workers.runner import run_worker
from tests.realmodel.recipes import SERVED_COUNTRIES, capitals_recipe, multi_stage_recipe
from tests.vllm_server import OpenAIServer, start_openai_server

ROOT = Path(__file__).resolve().parents[2]
SCRATCH = ROOT / ".tmp"
SERVED_NAME = "smollm2-135m-instruct"
SERVER_READY_SECONDS = 300
# Positions the teacher serves: every recipe prompt fits, the over-long seed row does not.
CONTEXT = 512


@pytest.fixture(scope="session")
def real_db_url(database_url: str) -> Iterator[str]:
    with scratch_database(database_url, "hardlabel_realmodel") as url:
        yield url


@pytest.fixture(scope="session")
def real_settings(real_db_url: str, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return Settings(
        database_url=real_db_url,
        home=tmp_path_factory.mktemp("realmodel-home"),
        max_page_size=500,
        default_page_size=100,
        lease_seconds=60.0,
        heartbeat_seconds=0.5,
        reaper_seconds=0.5,
        poll_seconds=0.2,
        retry_backoff_seconds=0.0,
        max_attempts=2,
        shard_size=64,
        chunk_size=32,
        vllm_kv_cache_bytes=256 << 20,
    )


@pytest.fixture(scope="session")
def client(real_settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(real_settings), raise_server_exceptions=False) as test_client:
        yield test_client


@pytest.fixture(scope="session")
def admin(real_db_url: str) -> dict[str, str]:
    with transaction(real_db_url) as session:
        _, secret = issue_token(session, role="admin", name=f"admin-{uuid.uuid4().hex[:6]}")
    return {"Authorization": f"Bearer {secret}"}


@pytest.fixture(scope="session")
def real_teacher(real_model_dir: Path) -> dict[str, Any]:
    """A job's teacher config: vLLM in the worker's process on SmolLM2, sized for CPU (ENV.md)."""
    return {
        "model": str(real_model_dir),
        "engine": "vllm",
        "dtype": "float32",
        "enforce_eager": True,
        "max_model_len": CONTEXT,
        "kv_cache_memory_bytes": 256 << 20,
        "max_num_seqs": 32,
    }


@pytest.fixture(scope="session")
def _real_openai_server_process(real_model_dir: Path) -> Iterator[OpenAIServer]:
    server = start_openai_server(
        real_model_dir, SERVED_NAME, context=CONTEXT, max_num_seqs=16, ready_seconds=SERVER_READY_SECONDS
    )
    yield server
    server.stop()


@pytest.fixture(scope="session", autouse=True)
def _boot_real_openai_server_early(request: pytest.FixtureRequest) -> None:
    """Start the server in the background if any selected test will use it (no wait here)."""
    if any("generation" in getattr(item, "fixturenames", ()) for item in request.session.items):
        request.getfixturevalue("_real_openai_server_process")


@dataclass(frozen=True)
class Generation:
    """The session's generation jobs (all finished) and what they cost."""

    multi_stage_job: int
    capitals_job: int
    served_job: int
    seconds: dict[str, float]


def submit_job(client: TestClient, admin: dict[str, str], body: dict[str, Any]) -> int:
    response = client.post("/v1/jobs", json=body, headers=admin)
    assert response.status_code == 202, response.text
    return int(response.json()["id"])


@pytest.fixture(scope="session")
def generation(
    client: TestClient,
    admin: dict[str, str],
    real_settings: Settings,
    real_teacher: dict[str, Any],
    _real_openai_server_process: OpenAIServer,
) -> Generation:
    """Both recipes on the in-process teacher, then the capitals recipe through the OpenAI server."""
    from service.workers.teachers import TEACHERS

    seconds: dict[str, float] = {}
    capitals = capitals_recipe()
    multi_stage = submit_job(client, admin, {"recipe": multi_stage_recipe(), "teacher": real_teacher})
    capitals_job = submit_job(client, admin, {"recipe": capitals, "teacher": real_teacher})
    started = time.perf_counter()
    try:
        run_worker(real_settings, ["generate"], exit_when_idle=True)
    finally:
        TEACHERS.close()  # the teacher's vLLM engine leaves this process before training starts
    seconds["vllm_jobs"] = time.perf_counter() - started

    started = time.perf_counter()
    server = _real_openai_server_process
    server.wait_ready()
    seconds["server_wait"] = time.perf_counter() - started
    served_teacher = {
        "model": server.model,
        "engine": "openai",
        "base_url": server.base_url,
        "concurrency": 8,
        "max_retries": 1,
    }
    served = submit_job(
        client, admin, {"recipe": capitals_recipe(SERVED_COUNTRIES), "teacher": served_teacher}
    )
    started = time.perf_counter()
    try:
        run_worker(real_settings, ["generate"], exit_when_idle=True)
    finally:
        TEACHERS.close()
        server.stop()  # done with it: its memory goes back before training
    seconds["served_job"] = time.perf_counter() - started
    print(f"\nreal-model generation seconds: {seconds}")
    return Generation(multi_stage, capitals_job, served, seconds)
