"""sample soft labels

A sample may keep the teacher's top-k log-probabilities of every generated token (issue #13
point 1): one nullable `bytea` per sample in the compact format of `generator.soft_labels`
(8 + tokens × (4 + 6k) bytes), never a row per token. NULL for every existing sample.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03 07:30:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("sample", sa.Column("soft_labels", sa.LargeBinary(), nullable=True))


def downgrade() -> None:
    op.drop_column("sample", "soft_labels")
