"""The timeline of jobs, filter runs, training runs and dataset freezes (GET .../events)."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from service.db.models import Event


def record_event(
    session: Session,
    kind: str,
    message: str,
    *,
    job_id: int | None = None,
    filter_run_id: int | None = None,
    training_run_id: int | None = None,
    dataset_id: int | None = None,
    task_id: int | None = None,
    data: dict[str, Any] | None = None,
) -> None:
    """Add an event to the session (committed with the caller's transaction)."""
    session.add(
        Event(
            kind=kind,
            message=message,
            job_id=job_id,
            filter_run_id=filter_run_id,
            training_run_id=training_run_id,
            dataset_id=dataset_id,
            task_id=task_id,
            data=data or {},
        )
    )
