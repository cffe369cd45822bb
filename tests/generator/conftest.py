"""Real teachers for generator tests, each started once per session.

- `vllm_engine`: vLLM in this process on the tiny model (engine settings from ENV.md).
- `openai_server`: a real vLLM OpenAI-compatible server in a subprocess. It is started as soon as
  the session knows a selected test needs it (it takes ~20-30 s to come up), so it boots while the
  in-process tests run; teardown stops its whole process group.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from generator.engines.base import TeacherConfig

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


@dataclass
class OpenAIServer:
    process: subprocess.Popen[bytes]
    base_url: str
    log_path: Path
    model: str = SERVED_NAME
    ready: bool = False

    def wait_ready(self) -> None:
        if self.ready:
            return
        deadline = time.monotonic() + SERVER_READY_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"vLLM server exited ({self.process.returncode}); log:\n{self._log_tail()}"
                )
            try:
                if httpx.get(self.base_url.removesuffix("/v1") + "/health", timeout=2).status_code == 200:
                    self.ready = True
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"vLLM server not ready after {SERVER_READY_SECONDS}s; log:\n{self._log_tail()}")

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)

    def _log_tail(self) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-40:])


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start_openai_server(model_dir: Path) -> OpenAIServer:
    port = _free_port()
    log_path = SCRATCH / f"vllm-openai-server-{port}.log"
    command = [
        sys.executable,
        "-m",
        "vllm.entrypoints.openai.api_server",
        *("--model", str(model_dir), "--served-model-name", SERVED_NAME),
        *("--host", "127.0.0.1", "--port", str(port)),
        *("--enforce-eager", "--dtype", "float32", "--max-model-len", "512"),
        *("--kv-cache-memory-bytes", str(256 << 20)),
        # Per-request seeds need unchunked prefills on CPU (ENV.md).
        *("--max-num-seqs", "32", "--max-num-batched-tokens", str(32 * 512)),
        *("--structured-outputs-config", json.dumps({"backend": "xgrammar", "disable_any_whitespace": True})),
    ]
    env = {**os.environ, "TMPDIR": str(SCRATCH), "HF_HUB_OFFLINE": "1"}
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=SCRATCH, start_new_session=True
        )
    return OpenAIServer(process=process, base_url=f"http://127.0.0.1:{port}/v1", log_path=log_path)


@pytest.fixture(scope="session")
def _openai_server_process(tiny_model_dir: Path) -> Iterator[OpenAIServer]:
    server = start_openai_server(tiny_model_dir)
    yield server
    server.stop()
    server.log_path.unlink(missing_ok=True)  # a failed start already put the log's tail in the error


@pytest.fixture(scope="session", autouse=True)
def _boot_openai_server_early(request: pytest.FixtureRequest) -> None:
    """Start the server in the background if any selected test will use it (no wait here)."""
    if any("openai_server" in getattr(item, "fixturenames", ()) for item in request.session.items):
        request.getfixturevalue("_openai_server_process")


@pytest.fixture(scope="session")
def openai_server(_openai_server_process: OpenAIServer) -> OpenAIServer:
    _openai_server_process.wait_ready()
    return _openai_server_process
