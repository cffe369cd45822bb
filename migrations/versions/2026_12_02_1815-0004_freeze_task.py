"""freeze task

Freezing a dataset version is a queued `freeze` task (issue #12 point 7): the version row carries
the freeze's status, progress (rows_done of rows_total), error and timestamps; tasks and events
may belong to a dataset version. Versions that exist already were frozen in their request.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02 18:15:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OLD_KINDS = "kind IN ('generate', 'filter', 'export', 'train')"
NEW_KINDS = "kind IN ('generate', 'filter', 'export', 'train', 'freeze')"
STATUSES = "status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')"


def upgrade() -> None:
    # Existing versions were frozen inside their request: they are done.
    op.add_column(
        "dataset_version",
        sa.Column("status", sa.String(length=20), server_default="succeeded", nullable=False),
    )
    op.alter_column("dataset_version", "status", server_default="queued")
    op.add_column("dataset_version", sa.Column("rows_total", sa.BigInteger(), nullable=True))
    op.add_column(
        "dataset_version", sa.Column("rows_done", sa.BigInteger(), server_default="0", nullable=False)
    )
    op.execute("UPDATE dataset_version SET rows_total = (row_counts->>'total')::bigint")
    op.execute("UPDATE dataset_version SET rows_done = coalesce(rows_total, 0)")
    op.add_column("dataset_version", sa.Column("error", sa.Text(), nullable=True))
    op.add_column("dataset_version", sa.Column("started_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("dataset_version", sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True))
    op.create_check_constraint(op.f("ck_dataset_version_status"), "dataset_version", STATUSES)

    op.add_column("task", sa.Column("dataset_id", sa.BigInteger(), nullable=True))
    op.create_foreign_key(
        op.f("fk_task_dataset_id_dataset_version"),
        "task",
        "dataset_version",
        ["dataset_id"],
        ["id"],
        ondelete="CASCADE",
    )
    op.create_index(op.f("ix_task_dataset_id"), "task", ["dataset_id"], unique=False)
    op.drop_constraint(op.f("ck_task_kind"), "task", type_="check")
    op.create_check_constraint(op.f("ck_task_kind"), "task", NEW_KINDS)

    op.add_column("event", sa.Column("dataset_id", sa.BigInteger(), nullable=True))
    op.create_foreign_key(
        op.f("fk_event_dataset_id_dataset_version"),
        "event",
        "dataset_version",
        ["dataset_id"],
        ["id"],
        ondelete="CASCADE",
    )
    op.create_index("ix_event_dataset", "event", ["dataset_id", "id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_event_dataset", table_name="event")
    op.drop_constraint(op.f("fk_event_dataset_id_dataset_version"), "event", type_="foreignkey")
    op.drop_column("event", "dataset_id")

    op.execute("DELETE FROM task WHERE kind = 'freeze'")
    op.drop_constraint(op.f("ck_task_kind"), "task", type_="check")
    op.create_check_constraint(op.f("ck_task_kind"), "task", OLD_KINDS)
    op.drop_index(op.f("ix_task_dataset_id"), table_name="task")
    op.drop_constraint(op.f("fk_task_dataset_id_dataset_version"), "task", type_="foreignkey")
    op.drop_column("task", "dataset_id")

    # A version whose freeze never finished has no rows: it cannot outlive the column that says so.
    op.execute("DELETE FROM dataset_version WHERE status <> 'succeeded'")
    op.drop_constraint(op.f("ck_dataset_version_status"), "dataset_version", type_="check")
    for column in ("finished_at", "started_at", "error", "rows_done", "rows_total", "status"):
        op.drop_column("dataset_version", column)
