"""The README tour's shell helpers, run with bash against a stand-in API: they end on failure too."""

from __future__ import annotations

import json
import re
import subprocess
import threading
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def tour_helpers() -> str:
    """The tour's function definitions: from `field()` up to the first request it makes."""
    match = re.search(r"^(field\(\) \{.*?)^# a job:", README, flags=re.S | re.M)
    assert match, "the README tour defines field(), wait_done() and first_metrics() before the job"
    return match.group(1)


class StandIn(BaseHTTPRequestHandler):
    """Answers by path; `calls` counts requests so a resource can change after a few polls."""

    calls: Counter[str] = Counter()

    def do_GET(self) -> None:  # noqa: N802 - the http.server API
        path = self.path.split("?")[0]
        StandIn.calls[path] += 1
        seen = StandIn.calls[path]
        bodies = {
            "/v1/jobs/1": {"status": "failed", "last_error": "teacher exploded"},
            "/v1/jobs/2": {"status": "queued" if seen < 3 else "succeeded"},
            "/v1/filter-runs/5": {"status": "cancelled", "error": None},
            "/v1/training-runs/3": {"status": "running"},
            "/v1/training-runs/3/metrics": {
                "items": [] if seen < 3 else [{"step": 1, "loss": 2.5}],
                "total": 1,
            },
            "/v1/training-runs/4": {"status": "failed", "last_error": "out of memory"},
            "/v1/training-runs/4/metrics": {"items": [], "total": 0},
        }
        body = json.dumps(bodies[path]).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def api() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), StandIn)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def run_tour(api: str, call: str) -> subprocess.CompletedProcess[str]:
    script = f'API={api}; AUTH="Authorization: Bearer t"\n{tour_helpers()}\n{call}\n'
    return subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=60)


def test_wait_done_ends_on_success_and_on_failure_with_the_error(api: str) -> None:
    done = run_tour(api, "wait_done v1/jobs/2")
    assert (done.returncode, StandIn.calls["/v1/jobs/2"]) == (0, 3), done.stderr
    failed = run_tour(api, "wait_done v1/jobs/1")
    assert failed.returncode == 1
    assert failed.stderr.strip() == "v1/jobs/1 failed: teacher exploded"
    cancelled = run_tour(api, "wait_done v1/filter-runs/5")
    assert (cancelled.returncode, cancelled.stderr.strip()) == (1, "v1/filter-runs/5 cancelled: None")


def test_first_metrics_waits_for_points_and_stops_when_the_run_fails(api: str) -> None:
    points = run_tour(api, "first_metrics 3")
    assert points.returncode == 0, points.stderr
    assert json.loads(points.stdout)["items"] == [{"step": 1, "loss": 2.5}]
    failed = run_tour(api, "first_metrics 4")
    assert failed.returncode == 1
    assert failed.stderr.strip() == "v1/training-runs/4 failed: out of memory"
