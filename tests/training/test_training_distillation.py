"""Hard-label distillation at toy scale, through the whole service (the issue's proof that the loop is real).

A small teacher that learned 2-digit addition from ground truth answers questions in a real
generation job (the generate worker, vLLM); a verifier filter run keeps its correct answers; a
dataset version freezes them; a training run fine-tunes a smaller student from scratch on that
version only; the run's evaluation scores teacher and student with vLLM on held-out questions
neither ever saw. The student must reach at least 0.9 of the teacher's accuracy.

The teacher is trained once and cached under .tmp/ keyed by its configuration (a cold cache trains
it here, a few minutes on 2 cores).
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.settings import Settings
from service.workers.runner import run_worker
from training.factories import events, vllm_teacher

pytestmark = [pytest.mark.slow, pytest.mark.distillation, pytest.mark.timeout(2400)]

ROOT = Path(__file__).resolve().parents[2]
CACHE = ROOT / ".tmp" / "distill-teacher"
EVAL_ITEMS = 200
TEACHER_SHAPES = {"layers": 4, "hidden": 128, "heads": 4, "vocab": 512}
# vLLM's CPU attention needs a head size of at least 32: 64 hidden / 2 heads.
STUDENT_SHAPES = {"layers": 2, "hidden": 64, "heads": 2, "vocab": 512}
# Measured on this task (split digits, vocab 512, batch 64, 1 CPU thread): the teacher at 1e-3 reaches
# ~96% of the held-out questions in 1,000 steps (3e-3 stalls near 5%); the 2x64 student at 2e-3 on
# 9,800 correct labels ~98% in 1,000 steps, 99% in 1,500.
TEACHER_SCHEDULE = {
    "learning_rate": 1e-3,
    "per_device_train_batch_size": 64,
    "max_length": 64,
    "warmup_steps": 50,
    "lr_scheduler_type": "constant_with_warmup",
    "weight_decay": 0.1,
    "seed": 0,
}
STUDENT_SCHEDULE = {**TEACHER_SCHEDULE, "learning_rate": 2e-3}
TEACHER_ROUND_STEPS, TEACHER_MAX_STEPS, TEACHER_TARGET = 250, 3000, 0.97
STUDENT_STEPS = 1200


def questions() -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """The held-out evaluation pairs, and the pool the teacher learns from and then labels for the student.

    Only the held-out pairs are new to both models at evaluation.
    """
    pairs = [(a, b) for a in range(100) for b in range(100)]
    random.Random(0).shuffle(pairs)
    return pairs[:EVAL_ITEMS], pairs[EVAL_ITEMS:]


def question(a: int, b: int) -> str:
    return f"What is {a}+{b}?"


def build_addition_teacher() -> Path:
    """A teacher that adds 2-digit numbers (>= 97% on held-out questions), trained once and cached."""
    from trainer.config import TrainingSpec
    from trainer.evaluate import generate_answers_hf, score_predictions
    from trainer.sft import train

    held_out, truth = questions()
    key = hashlib.sha256(
        json.dumps(
            {
                "shapes": TEACHER_SHAPES,
                "schedule": TEACHER_SCHEDULE,
                "rows": len(truth),
                "target": TEACHER_TARGET,
            },
            sort_keys=True,
        ).encode()
    ).hexdigest()[:16]
    folder = CACHE / key
    final = folder / "final"
    if (folder / "accuracy.json").exists():
        return final
    shutil.rmtree(folder, ignore_errors=True)
    data = folder / "truth.jsonl"
    data.parent.mkdir(parents=True, exist_ok=True)
    data.write_text(
        "".join(
            json.dumps(
                {
                    "prompt": [{"role": "user", "content": question(a, b)}],
                    "completion": [{"role": "assistant", "content": str(a + b)}],
                }
            )
            + "\n"
            for a, b in truth
        )
    )
    prompts = [[{"role": "user", "content": question(a, b)}] for a, b in held_out]
    references = [str(a + b) for a, b in held_out]
    steps, accuracy = 0, 0.0
    while steps < TEACHER_MAX_STEPS and accuracy < TEACHER_TARGET:
        steps += TEACHER_ROUND_STEPS
        spec = TrainingSpec(
            **TEACHER_SCHEDULE,
            max_steps=steps,
            logging_steps=50,
            save_steps=TEACHER_ROUND_STEPS,
            save_total_limit=1,
        )
        result = train(
            dataset_path=data, student=None, from_scratch=TEACHER_SHAPES, output_dir=folder, spec=spec
        )
        answers = generate_answers_hf(result.model_path, prompts, max_new_tokens=8, batch_size=256)
        accuracy = score_predictions(answers, references, "exact").accuracy
    assert accuracy >= TEACHER_TARGET, f"the teacher reached only {accuracy:.3f} in {steps} steps"
    (folder / "accuracy.json").write_text(json.dumps({"steps": steps, "accuracy": accuracy}))
    return final


@pytest.fixture(scope="session")
def addition_teacher() -> Path:
    return build_addition_teacher()


def run_until_idle(settings: Settings, kind: str) -> None:
    run_worker(settings, [kind], exit_when_idle=True)


def test_student_trained_on_the_teachers_verified_answers_reaches_90_percent_of_the_teacher(
    client: TestClient,
    admin: dict[str, str],
    training_settings: Settings,
    training_db_url: str,
    addition_teacher: Path,
    tmp_path: Path,
) -> None:
    held_out, pool = questions()
    teacher = vllm_teacher(addition_teacher)

    # 1. The teacher answers fresh questions in a generation job (the generate worker, vLLM).
    recipe = {
        "name": "addition-distill",
        "seed": 0,
        "seeds": {"records": [{"a": a, "b": b, "reference": str(a + b)} for a, b in pool]},
        "stages": [
            {
                "name": "answer",
                "messages": [{"role": "user", "content": "What is {{ a }}+{{ b }}?"}],
                "sampling": {"temperature": 0.0, "max_tokens": 8},
                "parser": {"type": "text"},
            }
        ],
    }
    job = client.post(
        "/v1/jobs",
        json={"recipe": recipe, "teacher": teacher, "shard_size": 1000, "chunk_size": 500},
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
    assert done["progress"]["samples_written"] == len(pool)

    # 2. A verifier filter keeps the answers that equal the seed row's reference.
    filter_run = client.post(
        "/v1/filter-runs",
        json={
            "selection": {"job_ids": [job_id]},
            "filters": [{"type": "verifier", "params": {"reference_field": "reference", "mode": "numeric"}}],
        },
        headers=admin,
    )
    assert filter_run.status_code == 202, filter_run.text
    run_until_idle(training_settings, "filter")
    counts = client.get(f"/v1/filter-runs/{filter_run.json()['id']}", headers=admin).json()
    assert counts["status"] == "succeeded"

    # 3. A frozen version of the verified answers.
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
    assert version.status_code in (200, 201), version.text
    version_id = version.json()["id"]
    rows = version.json()["row_counts"]["train"]
    assert rows >= 0.9 * len(pool), f"the teacher's answers were right only {rows} times"

    # 4. A student from scratch trained on the version; scored against the teacher on held-out items.
    eval_set = tmp_path / "held_out.jsonl"
    eval_set.write_text(
        "".join(json.dumps({"question": question(a, b), "answer": str(a + b)}) + "\n" for a, b in held_out)
    )
    response = client.post(
        "/v1/training-runs",
        json={
            "dataset_id": version_id,
            "student": {"from_scratch": STUDENT_SHAPES},
            "hyperparameters": {
                **STUDENT_SCHEDULE,
                "max_steps": STUDENT_STEPS,
                "logging_steps": 50,
                "save_steps": 500,
            },
            "evaluation": {"eval_set": {"path": str(eval_set)}, "scorer": "exact", "max_new_tokens": 8},
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
