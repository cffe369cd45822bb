"""sample keyset index by job

Keyset pages of one job's samples by id (GET /v1/samples?job_id=…) walk this index instead of
scanning every older sample (measured by bench/curation.py).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29 05:41:06.085818
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_sample_job_id_id", "sample", ["job_id", "id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_sample_job_id_id", table_name="sample")
