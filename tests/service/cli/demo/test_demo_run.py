"""A miniature demo, end to end as a user runs it: `hardlabel demo --no-serve` in a subprocess.

Real pieces at toy budgets: the API, a real worker (vLLM on the tiny model), a filter run, a frozen
and exported version, a training run and its evaluation. The teacher is the session's tiny random
model (--teacher), so this test checks the loop's wiring, not how well anything learns; the recipe's
seed rows carry no reference, so the verifier is skipped and the evaluation scores agreement.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session

from service.db.models import DatasetVersion, Job, TrainingRun

pytestmark = [pytest.mark.slow, pytest.mark.timeout(3000)]  # a guard: bounded by steps

ROOT = Path(__file__).resolve().parents[4]

RECIPE = """\
name: echo digits
seed: 0
seeds:
  values:
    a: [1, 2, 3, 4, 5, 6, 7, 8]
    b: [1, 2, 3, 4, 5]
stages:
  - name: answer
    messages:
      - {role: system, content: Answer briefly.}
      - {role: user, content: "Say {{ a }} and {{ b }}"}
    # The random tiny model answers greedily with blank lines only (no sample would parse): sample.
    sampling: {temperature: 1.0, max_tokens: 6, min_tokens: 2}
"""


def test_miniature_demo_runs_the_whole_loop_through_the_api(
    tmp_path: Path, demo_database_url: str, tiny_model_dir: Path
) -> None:
    recipe = tmp_path / "echo.yaml"
    recipe.write_text(RECIPE)
    home = tmp_path / "home"
    env = {
        **os.environ,
        "HARDLABEL_DATABASE_URL": demo_database_url,
        "HARDLABEL_POLL_SECONDS": "0.2",
        "COLUMNS": "160",
    }
    env.pop("HARDLABEL_PORT", None)
    command = [
        sys.executable,
        "-c",
        "from service.cli import main; main()",
        "demo",
        "--no-serve",
        "--home",
        str(home),
        "--port",
        "0",
        "--teacher",
        str(tiny_model_dir),
        "--recipe",
        str(recipe),
        "--items",
        "40",
        "--student-steps",
        "3",
    ]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=2700)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    assert "Traceback" not in output

    for heading in (
        "0/5  Service",
        "1/5  Teacher",
        "2/5  Generation",
        "3/5  Curation",
        "4/5  Student",
        "5/5  Results",
    ):
        assert heading in output
    assert "no verifier" in output, "seed rows without a reference: the demo says the verifier is skipped"
    for row in ("student before", "student after", "student / teacher", "time per step", "total"):
        assert row in output
    assert "/ui/training/" in output
    assert "HARDLABEL_TOKEN=" in output

    # What the demo did is in the database: one job, one frozen version, one evaluated training run.
    engine = create_engine(demo_database_url)
    try:
        with Session(engine) as session:
            job = session.scalars(select(Job)).one()
            assert job.status == "succeeded"
            assert job.samples_written == 40
            version = session.scalars(select(DatasetVersion)).one()
            assert version.name == "demo-echo-digits"
            assert version.row_counts["train"] >= 1
            assert version.row_counts["test"] >= 1
            run = session.scalars(select(TrainingRun)).one()
            assert run.status == "succeeded", run.error
            assert run.results is not None
            assert run.results["student_after"]["items"] == version.row_counts["test"]
    finally:
        engine.dispose()

    # The export the demo downloaded loads as TRL prompt–completion rows with the recipe's system prompt.
    export = home / "demo" / "exports" / "demo-echo-digits-v1"
    rows = [json.loads(line) for line in (export / "train.jsonl").read_text().splitlines()]
    assert len(rows) == version.row_counts["train"]
    assert rows[0]["prompt"][0] == {"role": "system", "content": "Answer briefly."}
    assert rows[0]["prompt"][1]["role"] == "user"
    assert rows[0]["completion"][0]["role"] == "assistant"
    assert (export / "README.md").read_text().strip()
    assert (home / "demo" / "worker.log").stat().st_size > 0, "the worker's output goes to its log"
