"""Issue #12.6: a teacher's API key is kept by reference (`api_key_env`, `api_key_file`). The worker
reads it when it builds the engine; a key it cannot read fails the job once with the reason."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from service.db.session import transaction
from service.workers.runner import run_worker
from tests.service.queue.queue_factories import create_job, job_row, queue_settings, task_row
from tests.service.workers.worker_factories import generate_recipe

SECRET = "sk-test-by-reference-7f3a"


class FakeOpenAIServer:
    """A chat-completions endpoint that answers "3" and records each request's Authorization header."""

    def __init__(self) -> None:
        self.authorizations: list[str | None] = []
        seen = self.authorizations

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("content-length", "0")))
                seen.append(self.headers.get("authorization"))
                body = json.dumps(
                    {
                        "choices": [
                            {
                                "index": 0,
                                "message": {"role": "assistant", "content": "3"},
                                "finish_reason": "stop",
                            }
                        ],
                        "usage": {"prompt_tokens": 5, "completion_tokens": 1},
                    }
                ).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)


@pytest.fixture
def openai_server() -> Iterator[FakeOpenAIServer]:
    fake = FakeOpenAIServer()
    fake.thread.start()
    yield fake
    fake.server.shutdown()
    fake.server.server_close()


def openai_teacher(base_url: str, **key: str) -> dict[str, Any]:
    return {"model": "served", "engine": "openai", "base_url": base_url, "max_retries": 0, **key}


def stored_text(url: str, job_id: int) -> str:
    """Everything stored about the job, its tasks, events and samples, as text."""
    with transaction(url) as session:
        return " ".join(
            str(session.execute(text(query), {"id": job_id}).all())
            for query in (
                "SELECT * FROM job WHERE id = :id",
                "SELECT * FROM task WHERE job_id = :id",
                "SELECT * FROM event WHERE job_id = :id",
                "SELECT provenance FROM sample WHERE job_id = :id",
            )
        )


def test_the_worker_reads_the_key_from_the_file_or_variable_named(
    clean_queue: str, openai_server: FakeOpenAIServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = clean_queue
    key_file = tmp_path / "teacher.key"
    key_file.write_text(SECRET + "\n")
    by_file, _ = create_job(
        url,
        items=2,
        shard_size=2,
        spec=generate_recipe(2, n=1),
        teacher=openai_teacher(openai_server.url, api_key_file=str(key_file)),
    )
    monkeypatch.setenv("HARDLABEL_TEST_TEACHER_KEY", SECRET + "-env")
    by_env, _ = create_job(
        url,
        items=2,
        shard_size=2,
        spec=generate_recipe(2, n=1),
        teacher=openai_teacher(openai_server.url, api_key_env="HARDLABEL_TEST_TEACHER_KEY"),
    )
    run_worker(queue_settings(url), ["generate"], exit_when_idle=True)

    assert job_row(url, by_file).status == "succeeded", job_row(url, by_file).error
    assert job_row(url, by_env).status == "succeeded", job_row(url, by_env).error
    assert sorted(set(openai_server.authorizations)) == [f"Bearer {SECRET}", f"Bearer {SECRET}-env"]
    for job_id in (by_file, by_env):
        assert SECRET not in stored_text(url, job_id)


def test_a_key_the_worker_cannot_read_fails_the_job_once_with_the_reason(
    clean_queue: str, openai_server: FakeOpenAIServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = clean_queue
    monkeypatch.delenv("HARDLABEL_TEST_UNSET_KEY", raising=False)
    unset, (unset_task,) = create_job(
        url,
        items=2,
        shard_size=2,
        spec=generate_recipe(2, n=1),
        teacher=openai_teacher(openai_server.url, api_key_env="HARDLABEL_TEST_UNSET_KEY"),
    )
    missing, (missing_task,) = create_job(
        url,
        items=2,
        shard_size=2,
        spec=generate_recipe(2, n=1),
        teacher=openai_teacher(openai_server.url, api_key_file=str(tmp_path / "no-such.key")),
    )
    run_worker(queue_settings(url), ["generate"], exit_when_idle=True)

    for job_id, task_id, reason in (
        (unset, unset_task, "the environment variable HARDLABEL_TEST_UNSET_KEY is not set"),
        (missing, missing_task, f"api_key_file: cannot read {tmp_path / 'no-such.key'}"),
    ):
        task = task_row(url, task_id)
        assert (task.status, task.attempts) == ("failed", 1), "a permanent failure: no retry, no crash loop"
        job = job_row(url, job_id)
        assert job.status == "failed"
        assert reason in (job.error or ""), job.error
    assert openai_server.authorizations == []  # nothing was sent without its key
