"""teacher keys by reference

Teachers name their API key by reference now (`api_key_env`, `api_key_file`; issue #12 point 6):
the plain keys stored so far in job teachers, training-run evaluations and judge filters' teachers
are deleted. A queued job or run that relied on one needs resubmitting with `api_key_env`.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02 18:35:00.000000
"""

import json
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _without_judge_keys(spec: dict[str, Any]) -> dict[str, Any]:
    for filter_spec in spec.get("filters") or []:
        judge = (filter_spec.get("params") or {}).get("judge") or {}
        teacher = judge.get("teacher")
        if isinstance(teacher, dict):
            teacher.pop("api_key", None)
    return spec


def upgrade() -> None:
    op.execute("UPDATE job SET teacher = teacher - 'api_key' WHERE teacher ? 'api_key'")
    op.execute(
        "UPDATE training_run SET evaluation = evaluation #- '{teacher,api_key}' "
        "WHERE jsonb_typeof(evaluation->'teacher') = 'object' AND evaluation->'teacher' ? 'api_key'"
    )
    connection = op.get_bind()
    rows = connection.execute(
        sa.text("SELECT id, spec FROM filter_run WHERE spec::text LIKE '%\"api_key\"%'")
    ).all()
    for run_id, spec in rows:
        connection.execute(
            sa.text("UPDATE filter_run SET spec = CAST(:spec AS jsonb) WHERE id = :id"),
            {"id": run_id, "spec": json.dumps(_without_judge_keys(spec))},
        )


def downgrade() -> None:
    pass  # deleted secrets stay deleted
