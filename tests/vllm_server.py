"""A real vLLM OpenAI-compatible server in a subprocess, for the suites that test the OpenAI engine.

Started in its own process group (teardown stops the whole group), with the CPU settings from
ENV.md; `wait_ready` polls /health and puts the log's tail in the error when it never comes up.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

SCRATCH = Path(__file__).resolve().parents[1] / ".tmp"


@dataclass
class OpenAIServer:
    process: subprocess.Popen[bytes]
    base_url: str
    log_path: Path
    model: str
    ready_seconds: float
    ready: bool = False

    def wait_ready(self) -> None:
        if self.ready:
            return
        deadline = time.monotonic() + self.ready_seconds
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"vLLM server exited ({self.process.returncode}); log:\n{self.log_tail()}")
            try:
                if httpx.get(self.base_url.removesuffix("/v1") + "/health", timeout=2).status_code == 200:
                    self.ready = True
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"vLLM server not ready after {self.ready_seconds}s; log:\n{self.log_tail()}")

    def stop(self) -> None:
        """Stop the server's process group and remove its log (a failed start already showed it)."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        self.log_path.unlink(missing_ok=True)

    def log_tail(self) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-40:])


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start_openai_server(
    model_dir: Path, served_name: str, *, context: int, max_num_seqs: int, ready_seconds: float
) -> OpenAIServer:
    """`vllm serve` of `model_dir` on a free port; returns at once (call `wait_ready` before use)."""
    port = free_port()
    log_path = SCRATCH / f"vllm-openai-server-{port}.log"
    command = [
        sys.executable,
        "-m",
        "vllm.entrypoints.openai.api_server",
        *("--model", str(model_dir), "--served-model-name", served_name),
        *("--host", "127.0.0.1", "--port", str(port)),
        *("--enforce-eager", "--dtype", "float32", "--max-model-len", str(context)),
        *("--kv-cache-memory-bytes", str(256 << 20)),
        # Per-request seeds need unchunked prefills on CPU (ENV.md).
        *("--max-num-seqs", str(max_num_seqs), "--max-num-batched-tokens", str(max_num_seqs * context)),
        *("--structured-outputs-config", json.dumps({"backend": "xgrammar", "disable_any_whitespace": True})),
    ]
    env = {**os.environ, "TMPDIR": str(SCRATCH), "HF_HUB_OFFLINE": "1"}
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=SCRATCH, start_new_session=True
        )
    return OpenAIServer(
        process=process,
        base_url=f"http://127.0.0.1:{port}/v1",
        log_path=log_path,
        model=served_name,
        ready_seconds=ready_seconds,
    )
