"""job answer stage

Each job stores the recipe stage whose samples are its training pairs (`job.answer_stage`), decided
once at submission by the generator's recipe model, instead of every reader deriving it again from
the recipe document (issue #14 point 4). Existing jobs get it from their recipe by the rule the
readers used: the recipe's `answer_stage`, else its last stage that is not a judge.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03 07:15:00.000000
"""

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _answer_stage(spec: Any) -> str | None:
    """The rule as it stood when this migration was written (the recipe model may move on)."""
    if not isinstance(spec, dict):
        return None
    chosen = spec.get("answer_stage")
    if isinstance(chosen, str) and chosen:
        return chosen
    stages = spec.get("stages")
    names = [
        stage["name"]
        for stage in (stages if isinstance(stages, list) else [])
        if isinstance(stage, dict) and isinstance(stage.get("name"), str) and stage.get("judges") is None
    ]
    return names[-1] if names else None


def upgrade() -> None:
    op.add_column("job", sa.Column("answer_stage", sa.String(length=100), nullable=True))
    bind = op.get_bind()
    recipes = bind.execute(
        sa.text("SELECT DISTINCT r.id, r.spec FROM recipe r JOIN job j ON j.recipe_id = r.id")
    )
    for recipe_id, spec in recipes.all():
        stage = _answer_stage(spec)
        if stage is not None:
            bind.execute(
                sa.text("UPDATE job SET answer_stage = :stage WHERE recipe_id = :id"),
                {"stage": stage[:100], "id": recipe_id},
            )


def downgrade() -> None:
    op.drop_column("job", "answer_stage")
