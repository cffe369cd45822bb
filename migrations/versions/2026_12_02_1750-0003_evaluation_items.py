"""evaluation items

Every scored evaluation item of a training run (question, reference, each model's answer and
verdict), so GET /v1/training-runs/{id}/evaluation/items can page and filter them; the run's
`results` keeps only the summary table and a few examples.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02 17:50:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "evaluation_item",
        sa.Column("training_run_id", sa.BigInteger(), nullable=False),
        sa.Column("item_index", sa.Integer(), nullable=False),
        sa.Column("question", sa.Text(), nullable=False),
        sa.Column("reference", sa.Text(), nullable=False),
        sa.Column("system", sa.Text(), nullable=True),
        sa.Column("teacher_answer", sa.Text(), nullable=True),
        sa.Column("teacher_correct", sa.Boolean(), nullable=True),
        sa.Column("student_before_answer", sa.Text(), nullable=True),
        sa.Column("student_before_correct", sa.Boolean(), nullable=True),
        sa.Column("student_after_answer", sa.Text(), nullable=True),
        sa.Column("student_after_correct", sa.Boolean(), nullable=True),
        sa.ForeignKeyConstraint(
            ["training_run_id"],
            ["training_run.id"],
            name=op.f("fk_evaluation_item_training_run_id_training_run"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("training_run_id", "item_index", name=op.f("pk_evaluation_item")),
    )


def downgrade() -> None:
    op.drop_table("evaluation_item")
