"""Hard-label distillation at toy scale, through the whole service (the issue's proof that the loop is real).

The demo's own task, settings and building blocks (`hardlabel demo`), with the REST calls made here
so every step can be checked: a small teacher that learned 2-digit addition from ground truth
answers fresh questions in a real generation job (the generate worker, vLLM); a verifier filter run
keeps its correct answers; a dataset version freezes them; a training run fine-tunes a smaller
student from scratch on that version only; the run's evaluation scores teacher and student with
vLLM on held-out questions neither ever saw. The student must reach at least 0.9 of the teacher's
accuracy.

The teacher is trained here (about a minute on 2 cores) and cached under .tmp/ by the digest of its
data and settings, as the demo caches its own under .hardlabel/.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from service.cli.demo.loop import (
    DEFAULT_STUDENT_STEPS,
    STUDENT_SCHEDULE,
    STUDENT_SHAPES,
    TEACHER_ROUND_STEPS,
    TEACHER_SCHEDULE,
    TEACHER_SHAPES,
)
from service.cli.demo.plan import REFERENCE_FIELD, Plan, build_plan
from service.cli.demo.teacher import (
    TeacherJob,
    cached_teacher,
    teacher_key,
    train_teacher,
    write_training_data,
)
from service.settings import Settings
from service.workers.runner import run_worker
from tests.service.training.factories import events, vllm_teacher

# The timeout is a guard only: the test is bounded by steps and items.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(3600)]

ROOT = Path(__file__).resolve().parents[3]
CACHE = ROOT / ".tmp" / "distill-teacher"
ITEMS, EVAL_ITEMS, VALIDATION_ITEMS = 4000, 200, 200
TEACHER_TARGET, TEACHER_MAX_STEPS = 0.95, 2000


@pytest.fixture(scope="module")
def plan() -> Plan:
    """The demo's questions: fresh ones for the job, held-out ones for the evaluation, disjoint."""
    return build_plan(None, None, items=ITEMS, eval_items=EVAL_ITEMS, validation_items=VALIDATION_ITEMS)


@pytest.fixture(scope="module")
def addition_teacher(plan: Plan) -> Path:
    """The demo's teacher, trained until it answers TEACHER_TARGET of its validation questions."""
    data = plan.teacher_data
    assert data is not None
    settings = {
        "schedule": TEACHER_SCHEDULE,
        "max_steps": TEACHER_MAX_STEPS,
        "round_steps": TEACHER_ROUND_STEPS,
        "target": TEACHER_TARGET,
    }
    folder = CACHE / teacher_key(data, TEACHER_SHAPES, settings)
    result = cached_teacher(folder)
    if result is None:
        job = TeacherJob(
            folder=str(folder),
            data_path=str(write_training_data(folder, data)),
            validation=data.validation,
            shapes=TEACHER_SHAPES,
            schedule=TEACHER_SCHEDULE,
            max_steps=TEACHER_MAX_STEPS,
            round_steps=TEACHER_ROUND_STEPS,
            target=TEACHER_TARGET,
            scorer=plan.scorer,
            max_new_tokens=plan.max_new_tokens,
            log_path=str(folder / "teacher.log"),
            threads=None,
        )
        result = train_teacher(job, lambda event: None)
    assert result["accuracy"] >= TEACHER_TARGET, f"the teacher stopped at {result['accuracy']:.3f}"
    return Path(result["model_path"])


def run_until_idle(settings: Settings, kind: str) -> None:
    run_worker(settings, [kind], exit_when_idle=True)


def test_student_trained_on_the_teachers_verified_answers_reaches_90_percent_of_the_teacher(
    client: TestClient,
    admin: dict[str, str],
    training_settings: Settings,
    training_db_url: str,
    plan: Plan,
    addition_teacher: Path,
    tmp_path: Path,
) -> None:
    # 1. The teacher answers fresh questions in a generation job (the generate worker, vLLM).
    job = client.post(
        "/v1/jobs",
        json={
            "recipe": plan.job_recipe,
            "teacher": vllm_teacher(addition_teacher),
            "shard_size": 1000,
            "chunk_size": 500,
        },
        headers=admin,
    )
    assert job.status_code == 202, job.text
    job_id = job.json()["id"]
    try:
        run_until_idle(training_settings, "generate")
    finally:
        from service.workers.teachers import TEACHERS

        TEACHERS.close()  # the teacher's vLLM engine leaves this process
    done = client.get(f"/v1/jobs/{job_id}", headers=admin).json()
    assert done["status"] == "succeeded", done["last_error"]
    assert done["progress"]["samples_written"] == ITEMS

    # 2. A verifier filter keeps the answers that equal the seed row's reference.
    filter_run = client.post(
        "/v1/filter-runs",
        json={
            "selection": {"job_ids": [job_id]},
            "filters": [
                {
                    "type": "verifier",
                    "params": {"reference_field": REFERENCE_FIELD, "mode": plan.verifier_mode},
                }
            ],
        },
        headers=admin,
    )
    assert filter_run.status_code == 202, filter_run.text
    run_until_idle(training_settings, "filter")
    counts = client.get(f"/v1/filter-runs/{filter_run.json()['id']}", headers=admin).json()
    assert counts["status"] == "succeeded"

    # 3. A frozen version of the verified answers only.
    version = client.post(
        "/v1/datasets",
        json={
            "name": "addition-distill",
            "query": {
                "job_ids": [job_id],
                "require_passed": ["verifier"],
                "review_status": "accepted_or_unreviewed_passed_all",
            },
        },
        headers=admin,
    )
    assert version.status_code == 202, version.text
    version_id = version.json()["id"]
    run_until_idle(training_settings, "freeze")
    frozen = client.get(f"/v1/datasets/{version_id}", headers=admin).json()
    assert frozen["status"] == "succeeded", frozen
    rows = frozen["row_counts"]["train"]
    assert 0.8 * ITEMS <= rows < ITEMS, f"{rows} of the teacher's {ITEMS} answers were verified right"

    # 4. A smaller student from scratch trained on the version; scored against the teacher on
    # held-out items neither model trained on.
    eval_set = tmp_path / "held_out.jsonl"
    eval_set.write_text("".join(json.dumps(item.to_json()) + "\n" for item in plan.eval_items))
    hyperparameters: dict[str, Any] = {
        **STUDENT_SCHEDULE,
        "max_steps": DEFAULT_STUDENT_STEPS,
        "logging_steps": 50,
        "save_steps": 500,
    }
    response = client.post(
        "/v1/training-runs",
        json={
            "dataset_id": version_id,
            "student": {"from_scratch": STUDENT_SHAPES},
            "hyperparameters": hyperparameters,
            "evaluation": {
                "during_training": {"enabled": False},  # the demo's fixed schedule, scored at the end
                "eval_set": {"path": str(eval_set), "system_field": "system"},
                "scorer": plan.scorer,
                "max_new_tokens": plan.max_new_tokens,
            },
        },
        headers=admin,
    )
    assert response.status_code == 202, response.text
    run_id = response.json()["id"]
    run_until_idle(training_settings, "train")

    run = client.get(f"/v1/training-runs/{run_id}", headers=admin).json()
    assert run["status"] == "succeeded", run["last_error"]
    results = run["results"]
    assert results["items"] == EVAL_ITEMS
    assert results["teacher"]["model"] == str(addition_teacher), "the default teacher is the version's"
    assert results["teacher"]["accuracy"] >= 0.9
    assert results["student_before"]["accuracy"] < 0.1, "a random student cannot add"
    assert results["ratio"] >= 0.9, results
    assert results["ratio"] == pytest.approx(
        results["student_after"]["accuracy"] / results["teacher"]["accuracy"]
    )
    evaluated = next(e for e in events(training_db_url, run_id) if e.kind == "evaluated")
    print(f"\ndistillation: {evaluated.message}")
