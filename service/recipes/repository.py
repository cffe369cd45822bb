"""Recipe rows: immutable versions per name."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from service.db.models import Recipe


def lock_name(session: Session, name: str) -> None:
    """Serialize version allocation per name until the transaction ends (no duplicate versions)."""
    session.execute(select(func.pg_advisory_xact_lock(func.hashtextextended("recipe:" + name, 0))))


def get_recipe(session: Session, recipe_id: int) -> Recipe | None:
    return session.get(Recipe, recipe_id)


def latest_version(session: Session, name: str) -> Recipe | None:
    return session.scalar(select(Recipe).where(Recipe.name == name).order_by(Recipe.version.desc()).limit(1))


def get_version(session: Session, name: str, version: int) -> Recipe | None:
    return session.scalar(select(Recipe).where(Recipe.name == name, Recipe.version == version))


def add_recipe(
    session: Session, *, name: str, version: int, spec: dict[str, Any], digest: str, created_by: int | None
) -> Recipe:
    recipe = Recipe(name=name, version=version, spec=spec, digest=digest, created_by=created_by)
    session.add(recipe)
    session.flush()
    session.refresh(recipe)  # server defaults (created_at)
    return recipe


def list_recipes(session: Session, *, name: str | None, limit: int, offset: int) -> tuple[list[Recipe], int]:
    query = select(Recipe)
    if name is not None:
        query = query.where(Recipe.name == name)
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    rows = session.scalars(query.order_by(Recipe.id.desc()).limit(limit).offset(offset))
    return list(rows), total
