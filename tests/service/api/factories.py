"""Plain factory functions for API and CLI tests: committed rows, since the app uses its own sessions."""

from __future__ import annotations

from typing import Any

from sqlalchemy import insert
from sqlalchemy.orm import Session

from service.auth import issue_token
from service.db.models import Job, Sample
from service.db.session import transaction
from tests.factories import add_job, unique_name


def make_token(database_url: str, role: str, name: str | None = None) -> tuple[int, str]:
    """A committed token: (id, secret)."""
    with transaction(database_url) as session:
        row, secret = issue_token(session, role=role, name=name or unique_name(role))
        return row.id, secret


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def make_job(session: Session, *, status: str = "queued", items_total: int = 10, **values: Any) -> Job:
    """A job on a stored (unvalidated) recipe row: for tests that only need rows to exist."""
    return add_job(session, status=status, items_total=items_total, **values)


def sample_row(job_id: int, item_index: int, **values: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "job_id": job_id,
        "item_index": item_index,
        "stage": "answer",
        "sample_index": 0,
        "question": f"question {item_index}",
        "answer": f"answer {item_index}",
        "raw_text": f"answer {item_index}",
        "parse_status": "ok",
        "inputs": {"topic": f"topic {item_index}"},
        "provenance": {"teacher": {"model": "/models/teacher"}, "stage": "answer"},
    }
    row.update(values)
    return row


def insert_samples(database_url: str, rows: list[dict[str, Any]]) -> list[int]:
    """Insert and commit sample rows; returns their ids in order."""
    with transaction(database_url) as session:
        return list(session.scalars(insert(Sample).returning(Sample.id, sort_by_parameter_order=True), rows))


def recipe_spec(
    *, topics: int = 6, name: str | None = None, content: str = "Tell me about {{ topic }}."
) -> dict[str, Any]:
    """A valid one-stage recipe over `topics` seed items."""
    return {
        "name": name or unique_name("recipe"),
        "seed": 3,
        "seeds": {"values": {"topic": [f"topic {i}" for i in range(topics)]}},
        "stages": [
            {
                "name": "answer",
                "messages": [{"role": "user", "content": content}],
                "sampling": {"max_tokens": 16, "temperature": 0.5},
            }
        ],
    }


# A real model folder: submission checks a local teacher's files (tests/service/api/conftest.py sets it).
TEACHER_FOLDER: dict[str, str] = {}


def teacher(model: str | None = None, **options: Any) -> dict[str, Any]:
    return {"model": model or TEACHER_FOLDER["path"], "engine": "vllm", **options}
