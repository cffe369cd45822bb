"""Helpers of the worker tests: small recipes, waiting on the database, worker subprocesses."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from sqlalchemy import text

from service.db.session import transaction

ROOT = Path(__file__).resolve().parents[3]


def generate_recipe(items: int, *, n: int = 2, max_tokens: int = 24) -> dict[str, Any]:
    """An arithmetic-style recipe over ``items`` seed rows: one stage, ``n`` samples per item.

    ``ignore_eos`` makes every completion exactly ``max_tokens`` long, so chunks take a steady time.
    """
    return {
        "name": "addition",
        "seed": 7,
        "seeds": {"records": [{"a": i, "b": 2 * i, "reference": str(3 * i)} for i in range(items)]},
        "stages": [
            {
                "name": "answer",
                "messages": [
                    {"role": "system", "content": "Answer with a number only."},
                    {"role": "user", "content": "What is {{ a }}+{{ b }}?"},
                ],
                "sampling": {"temperature": 1.0, "max_tokens": max_tokens, "n": n, "ignore_eos": True},
            }
        ],
    }


def checkpoints(url: str, job_id: int) -> int:
    """Chunks committed for the job so far."""
    with transaction(url) as session:
        return int(
            session.execute(
                text("SELECT count(*) FROM event WHERE job_id = :j AND kind = 'checkpoint'"), {"j": job_id}
            ).scalar_one()
        )


def sample_stats(url: str, job_id: int) -> tuple[int, int]:
    """(samples stored, distinct sample keys) of the job."""
    with transaction(url) as session:
        row = session.execute(
            text(
                "SELECT count(*), count(DISTINCT (item_index, stage, sample_index)) FROM sample "
                "WHERE job_id = :j"
            ),
            {"j": job_id},
        ).one()
        return int(row[0]), int(row[1])


def spawn_cli_worker(
    url: str,
    log: Path,
    env_overrides: dict[str, str] | None = None,
    *,
    exit_when_idle: bool = True,
    **settings: Any,
) -> subprocess.Popen[bytes]:
    """`hardlabel worker --kinds generate` as a subprocess on ``url`` (settings as HARDLABEL_* variables).

    Its output goes to ``log`` (a pipe nobody reads would fill up and block the worker).
    """
    env = {**os.environ, "HARDLABEL_DATABASE_URL": url, "TMPDIR": str(ROOT / ".tmp"), **(env_overrides or {})}
    env.update({f"HARDLABEL_{key.upper()}": str(value) for key, value in settings.items()})
    hardlabel = Path(sys.executable).with_name("hardlabel")
    with log.open("ab") as output:
        return subprocess.Popen(
            [
                str(hardlabel),
                "worker",
                "--kinds",
                "generate",
                *(["--exit-when-idle"] if exit_when_idle else []),
            ],
            env=env,
            cwd=ROOT,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
