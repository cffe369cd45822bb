"""The scaffold every suite builds its rows and waits with: committed recipes and jobs, and polling.

Suites keep thin helpers for what only they need (a job with its queue tasks, a dataset version);
those call these, so a recipe or job row is made in one place and a wait reads the same everywhere.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy.orm import Session

from service.db.models import Job, Recipe

T = TypeVar("T")


def unique_name(prefix: str = "t") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def add_recipe(session: Session, spec: dict[str, Any] | None = None, *, name: str | None = None) -> Recipe:
    """A stored recipe row (the spec is not validated: tests that only need rows to exist)."""
    recipe = Recipe(
        name=name or unique_name("recipe"),
        version=1,
        spec=spec if spec is not None else {"note": "factory"},
        digest=uuid.uuid4().hex + uuid.uuid4().hex,
    )
    session.add(recipe)
    session.flush()
    return recipe


def add_job(session: Session, recipe: Recipe | None = None, **values: Any) -> Job:
    """A job row on `recipe` (a new factory recipe by default); `values` set any column."""
    if "teachers" not in values:
        values.setdefault("teacher", {"model": "/models/teacher", "engine": "vllm"})
    job = Job(recipe_id=(recipe or add_recipe(session)).id, **values)
    session.add(job)
    session.flush()
    return job


def wait_until(
    condition: Callable[[], T | None], timeout: float = 60.0, what: str = "condition", interval: float = 0.05
) -> T:
    """Poll `condition` until it returns something truthy, and return that; AssertionError after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)
