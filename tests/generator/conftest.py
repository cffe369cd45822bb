"""Real teachers for generator tests, each started once per session.

- `vllm_engine`: vLLM in this process on the tiny model (engine settings from ENV.md).
- `openai_server`: a real vLLM OpenAI-compatible server in a subprocess. It is started as soon as
  the session knows a selected test needs it (it takes ~20-30 s to come up), so it boots while the
  in-process tests run; teardown stops its whole process group.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from generator.engines.base import TeacherConfig
from tests.vllm_server import OpenAIServer, start_openai_server

ROOT = Path(__file__).resolve().parents[2]
SCRATCH = ROOT / ".tmp"
SERVED_NAME = "tiny-teacher"
SERVER_READY_SECONDS = 240


def tiny_teacher_config(model_dir: Path) -> TeacherConfig:
    return TeacherConfig(
        model=str(model_dir),
        dtype="float32",
        max_model_len=512,
        kv_cache_memory_bytes=256 << 20,
        enforce_eager=True,
    )


@pytest.fixture(scope="session")
def vllm_engine(tiny_model_dir: Path) -> Iterator[Any]:
    from generator.engines.vllm_engine import VLLMEngine

    engine = VLLMEngine(tiny_teacher_config(tiny_model_dir))
    yield engine
    engine.close()


def start_tiny_openai_server(model_dir: Path) -> OpenAIServer:
    return start_openai_server(
        model_dir, SERVED_NAME, context=512, max_num_seqs=32, ready_seconds=SERVER_READY_SECONDS
    )


@pytest.fixture(scope="session")
def _openai_server_process(tiny_model_dir: Path) -> Iterator[OpenAIServer]:
    server = start_tiny_openai_server(tiny_model_dir)
    yield server
    server.stop()


@pytest.fixture(scope="session", autouse=True)
def _boot_openai_server_early(request: pytest.FixtureRequest) -> None:
    """Start the server in the background if any selected test will use it (no wait here)."""
    if any("openai_server" in getattr(item, "fixturenames", ()) for item in request.session.items):
        request.getfixturevalue("_openai_server_process")


@pytest.fixture(scope="session")
def openai_server(_openai_server_process: OpenAIServer) -> OpenAIServer:
    _openai_server_process.wait_ready()
    return _openai_server_process
