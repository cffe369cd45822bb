"""several teachers per job

A job may list several teachers (issue #13 point 3): `job.teacher` (one config) becomes
`job.teachers` (a JSON list, the first being the job's primary teacher), `job.teacher_usage` keeps
each teacher's counters ({"<index>": {items_done, samples, tokens_in, tokens_out}}), and a sample
records which teacher wrote it (`sample.teacher_index`, 0 for every existing sample), which joins
its identity: (job, item, stage, sample index, teacher).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03 11:30:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OLD_UNIQUE = "uq_sample_job_id_item_index_stage_sample_index"
NEW_UNIQUE = "uq_sample_job_id_item_index_stage_sample_index_teacher_index"


def upgrade() -> None:
    op.add_column("job", sa.Column("teachers", postgresql.JSONB(astext_type=sa.Text()), nullable=True))
    op.add_column(
        "job",
        sa.Column(
            "teacher_usage",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
    )
    op.execute(
        "UPDATE job SET teachers = jsonb_build_array(teacher), teacher_usage = jsonb_build_object('0', "
        "jsonb_build_object('items_done', items_done, 'samples', samples_written, "
        "'tokens_in', tokens_in, 'tokens_out', tokens_out))"
    )
    op.alter_column("job", "teachers", nullable=False)
    op.create_check_constraint(
        op.f("ck_job_teachers"),
        "job",
        "jsonb_typeof(teachers) = 'array' AND jsonb_array_length(teachers) >= 1",
    )
    op.drop_column("job", "teacher")
    op.add_column("sample", sa.Column("teacher_index", sa.SmallInteger(), server_default="0", nullable=False))
    op.drop_constraint(OLD_UNIQUE, "sample", type_="unique")
    op.create_unique_constraint(
        NEW_UNIQUE, "sample", ["job_id", "item_index", "stage", "sample_index", "teacher_index"]
    )


def downgrade() -> None:
    op.drop_constraint(NEW_UNIQUE, "sample", type_="unique")
    op.execute("DELETE FROM sample WHERE teacher_index > 0")
    op.create_unique_constraint(OLD_UNIQUE, "sample", ["job_id", "item_index", "stage", "sample_index"])
    op.drop_column("sample", "teacher_index")
    op.add_column("job", sa.Column("teacher", postgresql.JSONB(astext_type=sa.Text()), nullable=True))
    op.execute("UPDATE job SET teacher = teachers -> 0")
    op.alter_column("job", "teacher", nullable=False)
    op.drop_constraint(op.f("ck_job_teachers"), "job", type_="check")
    op.drop_column("job", "teacher_usage")
    op.drop_column("job", "teachers")
