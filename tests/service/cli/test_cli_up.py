"""`hardlabel up` end to end: database + API + a real worker (vLLM on the tiny model) in one command.

A new user's path: up → admin token printed once → submit --follow → samples listed → Ctrl-C stops
everything (the worker too).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest
from click.testing import CliRunner

from service.cli import main
from service.db.scratch import scratch_database
from service.settings import get_settings

ROOT = Path(__file__).resolve().parents[3]
START_TIMEOUT_SECONDS = 60


@pytest.fixture
def fresh_database_url(database_url: str) -> Iterator[str]:
    """An empty migrated-on-demand database: `up` must find no tokens there."""
    with scratch_database(database_url, "hardlabel_up", migrate=False) as url:
        yield url


class Up:
    """A running `hardlabel up` and what it printed."""

    def __init__(self, database_url: str, *args: str) -> None:
        env = {
            **os.environ,
            "HARDLABEL_DATABASE_URL": database_url,
            "HARDLABEL_VLLM_KV_CACHE_BYTES": str(256 << 20),
            "HARDLABEL_POLL_SECONDS": "0.2",
            "HARDLABEL_LOG_LEVEL": "WARNING",
        }
        self.process = subprocess.Popen(
            [sys.executable, "-c", "from service.cli import main; main()", "up", "--port", "0", *args],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[str] = []
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        assert self.process.stdout is not None
        while not any(
            line.startswith(("  export HARDLABEL_TOKEN=", "tokens exist already")) for line in self.lines
        ):
            assert self.process.poll() is None, self.stop()
            assert time.monotonic() < deadline, self.stop()
            self.lines.append(self.process.stdout.readline().rstrip("\n"))
        match = re.search(r"http://127\.0\.0\.1:\d+", self.lines[0])
        assert match, self.lines
        self.url = match.group(0)
        while True:  # the socket is bound before this line is printed; wait for the app itself
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert self.process.poll() is None, self.stop()
            assert time.monotonic() < deadline, self.stop()
            time.sleep(0.2)

    @property
    def token(self) -> str | None:
        for line in self.lines:
            if line.startswith("  export HARDLABEL_TOKEN="):
                return line.split("=", 1)[1]
        return None

    def stop(self) -> str:
        """Ctrl-C; returns stderr."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
        try:
            _, err = self.process.communicate(timeout=90)
        except subprocess.TimeoutExpired:
            for child in psutil.Process(self.process.pid).children(recursive=True):
                child.kill()
            self.process.kill()
            _, err = self.process.communicate()
        return err


def test_up_submit_follow_and_ctrl_c(
    fresh_database_url: str, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    up = Up(fresh_database_url)
    try:
        token = up.token
        assert token, up.lines
        assert token.startswith("hl_")
        workers = psutil.Process(up.process.pid).children(recursive=True)
        assert workers, "up started no worker"

        monkeypatch.setenv("HARDLABEL_API_URL", up.url)
        monkeypatch.setenv("HARDLABEL_TOKEN", token)
        get_settings.cache_clear()
        result = CliRunner().invoke(
            main,
            [
                "submit",
                str(ROOT / "examples" / "arithmetic.yaml"),
                "--teacher",
                str(tiny_model_dir),
                "-o",
                "enforce_eager=true",
                "-o",
                "dtype=float32",
                "-o",
                "max_model_len=512",
                "--limit",
                "6",
                "--shard-size",
                "3",
                "--follow",
                "--interval",
                "0.2",
            ],
        )
        assert result.exit_code == 0, result.output
        job_id = int(result.stdout.strip())
        assert f"job {job_id} succeeded: 6 items, 6 samples" in result.stderr

        samples = httpx.get(
            f"{up.url}/v1/samples", params={"job_id": job_id}, headers={"Authorization": f"Bearer {token}"}
        ).json()["items"]
        assert sorted(s["item_index"] for s in samples) == list(range(6))
        assert samples[0]["teacher_question"] == "What is 17+21?"
        assert {s["stage"] for s in samples} == {"answer"}
    finally:
        err = up.stop()
        get_settings.cache_clear()
    assert up.process.returncode == 0, err
    assert "stopped" in err
    assert "Traceback" not in err
    assert not any(worker.is_running() and worker.status() != psutil.STATUS_ZOMBIE for worker in workers)

    # The next start finds tokens and prints none.
    again = Up(fresh_database_url, "--no-worker")
    try:
        assert again.token is None
        assert any("tokens exist already" in line for line in again.lines)
    finally:
        again.stop()
    assert again.process.returncode == 0
