"""`hardlabel serve`: serves the API on the configured database; a busy port is a one-line error."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
from click.testing import CliRunner

from service.cli import main
from service.cli.serve import bind_socket

ROOT = Path(__file__).resolve().parents[3]


def test_serve_answers_and_stops_on_sigterm(database_url: str) -> None:
    process = subprocess.Popen(
        [sys.executable, "-c", "from service.cli import main; main()", "serve", "--port", "0"],
        cwd=ROOT,
        env={**os.environ, "HARDLABEL_DATABASE_URL": database_url, "HARDLABEL_LOG_LEVEL": "WARNING"},
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stderr is not None
        first = process.stderr.readline()
        match = re.search(r"http://127\.0\.0\.1:\d+", first)
        assert match, first
        deadline = time.monotonic() + 30
        while True:
            try:
                response = httpx.get(f"{match.group(0)}/readyz", timeout=2)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "serve did not answer"
                time.sleep(0.2)
        assert response.json() == {"status": "ok"}
        assert httpx.get(f"{match.group(0)}/v1/jobs").status_code == 401
    finally:
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    assert "Traceback" not in err


def test_busy_port_is_one_line(cli_env: dict[str, str]) -> None:
    busy = bind_socket("127.0.0.1", 0)
    busy.listen()
    try:
        result = CliRunner().invoke(main, ["serve", "--port", str(busy.getsockname()[1])])
    finally:
        busy.close()
    assert result.exit_code == 2
    assert re.fullmatch(r"error: cannot listen on 127\.0\.0\.1:\d+: .+\n", result.stderr), result.stderr
