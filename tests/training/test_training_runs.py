"""Training runs end to end: the API, a real train worker (TRL in a child process), real vLLM evaluation."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from service.settings import Settings
from training.factories import (
    FAST,
    addition_version,
    events,
    metric_steps,
    metrics_file_steps,
    process_alive,
    run_row,
    vllm_teacher,
    wait_for,
)

pytestmark = pytest.mark.slow


def submit(client: TestClient, admin: dict[str, str], payload: dict[str, Any]) -> int:
    response = client.post("/v1/training-runs", json=payload, headers=admin)
    assert response.status_code == 202, response.text
    return int(response.json()["id"])


def detail(client: TestClient, admin: dict[str, str], run_id: int) -> dict[str, Any]:
    response = client.get(f"/v1/training-runs/{run_id}", headers=admin)
    assert response.status_code == 200, response.text
    return dict(response.json())


def all_metrics(client: TestClient, admin: dict[str, str], run_id: int) -> list[dict[str, Any]]:
    response = client.get(f"/v1/training-runs/{run_id}/metrics", params={"limit": 200}, headers=admin)
    assert response.status_code == 200, response.text
    return list(response.json()["items"])


def test_full_fine_tune_end_to_end_with_evaluation(
    client: TestClient,
    admin: dict[str, str],
    training_db_url: str,
    training_settings: Settings,
    tiny_model_dir: Path,
    train_worker: Any,
) -> None:
    version = addition_version(training_db_url, 96, 12, teacher=vllm_teacher(tiny_model_dir))
    run_id = submit(
        client,
        admin,
        {
            "dataset_id": version,
            "student": {"model": str(tiny_model_dir)},
            "hyperparameters": {**FAST, "max_steps": 30, "logging_steps": 5, "save_steps": 10},
            "evaluation": {"scorer": "exact", "max_new_tokens": 8},
        },
    )
    train_worker(training_settings).start().join(600)

    run = detail(client, admin, run_id)
    assert run["status"] == "succeeded", run["last_error"]
    assert run["progress"]["step"] == 30
    assert run["progress"]["total_steps"] == 30
    assert run["progress"]["fraction"] == 1.0
    assert run["progress"]["tokens_per_second"] > 0
    assert [Path(p).name for p in run["checkpoints"]] == [
        "checkpoint-20",
        "checkpoint-30",
    ]  # save_total_limit 2
    assert run["output_dir"] == str(training_settings.home.resolve() / "training" / str(run_id))

    metrics = all_metrics(client, admin, run_id)
    assert [m["step"] for m in metrics] == [5, 10, 15, 20, 25, 30]
    assert all(m["loss"] > 0 and m["learning_rate"] > 0 and m["tokens_per_second"] > 0 for m in metrics)
    assert metrics[-1]["loss"] < metrics[0]["loss"] * 0.8, "the loss falls"

    # The trained student is a plain model folder with a model card.
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model_path = Path(run["model_path"])
    assert model_path.name == "final"
    assert AutoModelForCausalLM.from_pretrained(model_path).num_parameters() > 0
    assert AutoTokenizer.from_pretrained(model_path).chat_template
    card = (model_path / "README.md").read_text()
    assert f"{run['dataset']['name']} v1" in card

    # Teacher, initial student and trained student were served by vLLM on the same 12 test items.
    results = run["results"]
    assert results["items"] == 12
    assert results["scorer"] == "exact"
    assert results["source"].startswith("test split of dataset")
    for name, model in (
        ("teacher", str(tiny_model_dir)),
        ("student_before", str(tiny_model_dir)),
        ("student_after", str(model_path)),
    ):
        assert results[name]["model"] == model
        assert results[name]["items"] == 12
        assert 0 <= results[name]["correct"] <= 12
    assert len(results["examples"]) == 5
    assert {"question", "reference", "teacher", "student_before", "student_after"} <= results["examples"][
        0
    ].keys()
    # The teacher is the same random model as the initial student: identical greedy answers.
    assert results["teacher"]["correct"] == results["student_before"]["correct"]

    kinds = [event.kind for event in events(training_db_url, run_id)]
    assert kinds[:3] == ["queued", "claimed", "training"]
    assert kinds.count("checkpoint") >= 2
    assert kinds.count("scored") == 3
    assert kinds[-4:] == ["trained", "evaluated", "task_succeeded", "finished"] or kinds[-3:] == [
        "evaluated",
        "task_succeeded",
        "finished",
    ]
    assert "trained" in kinds
