"""`hardlabel demo --task smollm2-addition` at toy budgets, as a user runs it (a subprocess).

Real pieces: the pulled SmolLM2 teacher sampling in the worker's vLLM, the verifier, a LoRA training
run of two steps and its evaluation on held-out sums. It checks the wiring of the real-teacher task,
not how well the student learns (that is the full demo's job: README, "The demo on a real model").
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session

from service.db.models import Job, TrainingRun

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]  # a guard: bounded by items and steps

ROOT = Path(__file__).resolve().parents[4]


def test_the_real_teacher_task_runs_the_whole_loop(
    tmp_path: Path, demo_database_url: str, real_model_dir: Path
) -> None:
    home = tmp_path / "home"
    # The session's pulled model stands in for `hardlabel models pull`'s folder: the demo's pull
    # finds it checked and returns at once.
    (home / "models").mkdir(parents=True)
    (home / "models" / "smollm2-135m-instruct").symlink_to(real_model_dir, target_is_directory=True)
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
        "--task",
        "smollm2-addition",
        "--no-serve",
        "--home",
        str(home),
        "--port",
        "0",
        "--items",
        "6",
        "--eval-items",
        "4",
        "--student-steps",
        "2",
    ]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1700)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    assert "Traceback" not in output
    assert "task smollm2-addition" in output
    assert "LoRA (r 16) on the teacher, 2 steps" in output
    assert "4 held-out questions no model trained on" in output
    for row in ("teacher", "student before", "student after", "student / teacher", "time per step"):
        assert row in output

    engine = create_engine(demo_database_url)
    try:
        with Session(engine) as session:
            job = session.scalars(select(Job)).one()
            assert job.status == "succeeded"
            assert job.samples_written == 6 * 16, "16 sampled answers per question"
            run = session.scalars(select(TrainingRun)).one()
            assert run.status == "succeeded", run.error
            assert run.method == "lora"
            assert run.results is not None
            for name in ("teacher", "student_before", "student_after"):
                assert run.results[name]["items"] == 4
            assert "numeric" in run.results["scorer"]
    finally:
        engine.dispose()
