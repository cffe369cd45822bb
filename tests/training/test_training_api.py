"""The training-runs API without a worker: submission and its validation, reading, paging, cancel, roles."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import insert, text

from service.db.models import TrainingMetric
from service.db.session import transaction
from training.factories import FAST, addition_version, make_version, vllm_teacher


@pytest.fixture(scope="module")
def version_id(training_db_url: str, tiny_model_dir: Path) -> int:
    return addition_version(training_db_url, 24, 6, teacher=vllm_teacher(tiny_model_dir))


def body(dataset_id: int, student: str, **extra: Any) -> dict[str, Any]:
    return {
        "dataset_id": dataset_id,
        "student": {"model": student},
        "hyperparameters": {**FAST, "max_steps": 4},
        **extra,
    }


def problem_fields(response: Any) -> list[str]:
    assert response.headers["content-type"].startswith("application/problem+json"), response.text
    return [error["field"] for error in response.json().get("errors", [])]


def test_submit_queues_a_run_with_one_train_task_and_the_lineage_teacher(
    client: TestClient, admin: dict[str, str], version_id: int, tiny_model_dir: Path, training_db_url: str
) -> None:
    response = client.post("/v1/training-runs", json=body(version_id, str(tiny_model_dir)), headers=admin)
    assert response.status_code == 202, response.text
    run = response.json()
    assert response.headers["location"] == f"/v1/training-runs/{run['id']}"
    assert run["status"] == "queued"
    assert run["method"] == "full"
    assert run["dataset"]["id"] == version_id
    assert run["attempts"] == 0
    assert run["config"]["max_steps"] == 4
    assert run["config"]["method"] == "full"
    assert run["evaluation"]["teacher"]["model"] == str(tiny_model_dir), "default: the version's teacher"
    assert run["progress"] == {
        "phase": "queued",
        "step": 0,
        "total_steps": None,
        "fraction": 0.0,
        "elapsed_seconds": None,
        "steps_per_second": None,
        "tokens_per_second": None,
        "eta_seconds": None,
    }
    assert run["results"] is None
    assert run["checkpoints"] == []
    assert run["model_path"] is None

    with transaction(training_db_url) as session:
        inserted = session.execute(
            insert(TrainingMetric).returning(TrainingMetric.step),
            [
                {"training_run_id": run["id"], "step": s, "data": {"step": s, "loss": 1.0 / s}}
                for s in (2, 4, 6)
            ],
        ).all()
        assert len(inserted) == 3
        tasks = session.execute(
            text("SELECT kind, status FROM task WHERE training_run_id = :r"),
            {"r": run["id"]},
        ).all()
    assert [tuple(t) for t in tasks] == [("train", "queued")]

    listed = client.get(
        "/v1/training-runs", params={"dataset_id": version_id, "status": "queued"}, headers=admin
    )
    assert listed.status_code == 200
    assert run["id"] in [item["id"] for item in listed.json()["items"]]

    page = client.get(f"/v1/training-runs/{run['id']}/metrics", params={"limit": 2}, headers=admin).json()
    assert page["total"] == 3
    assert [m["step"] for m in page["items"]] == [2, 4]
    assert page["items"][0]["loss"] == 0.5
    assert page["items"][0]["values"]["step"] == 2
    after = client.get(
        f"/v1/training-runs/{run['id']}/metrics", params={"after_step": 4}, headers=admin
    ).json()
    assert [m["step"] for m in after["items"]] == [6]

    events = client.get(f"/v1/training-runs/{run['id']}/events", headers=admin).json()
    assert [e["kind"] for e in events["items"]] == ["queued"]


def test_cancel_a_queued_run_then_409_and_resume_it(
    client: TestClient, admin: dict[str, str], version_id: int, tiny_model_dir: Path
) -> None:
    run = client.post("/v1/training-runs", json=body(version_id, str(tiny_model_dir)), headers=admin).json()
    cancelled = client.post(f"/v1/training-runs/{run['id']}/cancel", headers=admin)
    assert cancelled.status_code == 200
    assert cancelled.json()["status"] == "cancelled"
    assert cancelled.json()["progress"]["phase"] == "cancelled"
    again = client.post(f"/v1/training-runs/{run['id']}/cancel", headers=admin)
    assert again.status_code == 409
    assert "already finished" in again.json()["detail"]
    kinds = [
        e["kind"] for e in client.get(f"/v1/training-runs/{run['id']}/events", headers=admin).json()["items"]
    ]
    assert kinds == ["queued", "cancelled"]

    resumed = client.post(f"/v1/training-runs/{run['id']}/resume", headers=admin)
    assert resumed.status_code == 202, resumed.text
    assert resumed.json()["status"] == "queued"
    assert resumed.json()["error"] is None
    assert resumed.json()["finished_at"] is None
    assert resumed.json()["progress"]["phase"] == "queued"
    again = client.post(f"/v1/training-runs/{run['id']}/resume", headers=admin)
    assert again.status_code == 409
    assert "only cancelled or failed runs" in again.json()["detail"]
    kinds = [
        e["kind"] for e in client.get(f"/v1/training-runs/{run['id']}/events", headers=admin).json()["items"]
    ]
    assert kinds == ["queued", "cancelled", "requeued"]


def test_roles_and_auth(
    client: TestClient,
    viewer: dict[str, str],
    reviewer: dict[str, str],
    version_id: int,
    tiny_model_dir: Path,
) -> None:
    assert client.get("/v1/training-runs").status_code == 401
    assert client.get("/v1/training-runs", headers=viewer).status_code == 200
    for headers in (viewer, reviewer):
        response = client.post(
            "/v1/training-runs", json=body(version_id, str(tiny_model_dir)), headers=headers
        )
        assert response.status_code == 403
    assert client.post("/v1/training-runs/1/cancel", headers=viewer).status_code == 403
    assert client.post("/v1/training-runs/1/resume", headers=viewer).status_code == 403


def test_unknown_dataset_and_run_are_404(
    client: TestClient, admin: dict[str, str], tiny_model_dir: Path
) -> None:
    response = client.post("/v1/training-runs", json=body(987654, str(tiny_model_dir)), headers=admin)
    assert response.status_code == 404
    assert "dataset version 987654" in response.json()["detail"]
    for path in ("", "/metrics", "/events"):
        assert client.get(f"/v1/training-runs/987654{path}", headers=admin).status_code == 404
    assert client.post("/v1/training-runs/987654/cancel", headers=admin).status_code == 404
    assert client.post("/v1/training-runs/987654/resume", headers=admin).status_code == 404


@pytest.mark.parametrize(
    ("change", "field", "message"),
    [
        ({"hyperparameters": {"learning_rate": 5.0}}, "hyperparameters.learning_rate", "less than or equal"),
        (
            {"hyperparameters": {"per_device_train_batch_size": 0}},
            "hyperparameters.per_device_train_batch_size",
            "",
        ),
        ({"hyperparameters": {"max_steps": 0}}, "hyperparameters", "max_steps must be -1"),
        ({"hyperparameters": {"optimizer": "sgd"}}, "hyperparameters.optimizer", "Extra inputs"),
        ({"hyperparameters": {"method": "lora"}}, "hyperparameters.method", "Extra inputs"),
        ({"method": "qlora"}, "method", ""),
        ({"evaluation": {"scorer": "bleu"}}, "evaluation.scorer", ""),
        ({"evaluation": {"scorer": "regex"}}, "evaluation", "mode=regex needs a pattern"),
        ({"evaluation": {"scorer": "regex", "pattern": "("}}, "evaluation", "invalid regular expression"),
        ({"evaluation": {"max_items": 0}}, "evaluation.max_items", ""),
        ({"student": {}}, "student", "give either"),
        (
            {"student": {"from_scratch": {"hidden": 64, "heads": 3}}},
            "student.from_scratch",
            "multiple of heads",
        ),
        ({"dataset_id": 0}, "dataset_id", ""),
    ],
)
def test_invalid_payloads_are_422_naming_the_field(
    client: TestClient,
    admin: dict[str, str],
    version_id: int,
    tiny_model_dir: Path,
    change: dict[str, Any],
    field: str,
    message: str,
) -> None:
    payload = body(version_id, str(tiny_model_dir))
    for key, value in change.items():
        payload[key] = {**payload[key], **value} if key == "hyperparameters" else value
    response = client.post("/v1/training-runs", json=payload, headers=admin)
    assert response.status_code == 422, response.text
    fields = problem_fields(response)
    assert any(f == field or (field and f.startswith(field)) for f in fields) or (not field and fields), (
        fields
    )
    assert message in response.text


def test_checks_against_the_version_and_the_disk(
    client: TestClient,
    admin: dict[str, str],
    version_id: int,
    tiny_model_dir: Path,
    training_db_url: str,
    tmp_path: Path,
) -> None:
    def post(payload: dict[str, Any]) -> Any:
        response = client.post("/v1/training-runs", json=payload, headers=admin)
        assert response.status_code == 422, response.text
        return response.json()

    missing = post(body(version_id, str(tmp_path / "nope")))
    assert missing["errors"][0]["field"] == "student.model"
    assert "no such model folder" in missing["detail"]
    (tmp_path / "empty").mkdir()
    not_model = post(body(version_id, str(tmp_path / "empty")))
    assert "no config.json" in not_model["detail"]

    no_train = make_version(
        training_db_url, train=[], test=[("q", "a")], teacher=vllm_teacher(tiny_model_dir)
    )
    assert "has no train rows" in post(body(no_train, str(tiny_model_dir)))["detail"]

    no_test = make_version(training_db_url, train=[("q", "a")], teacher=vllm_teacher(tiny_model_dir))
    problem = post(body(no_test, str(tiny_model_dir)))
    assert problem["errors"][0]["field"] == "evaluation.split"
    assert "no test rows" in problem["detail"]
    # ... fine without evaluation, or with an eval set.
    ok = client.post(
        "/v1/training-runs",
        json=body(no_test, str(tiny_model_dir), evaluation={"enabled": False}),
        headers=admin,
    )
    assert ok.status_code == 202, ok.text
    missing_set = post(
        body(no_test, str(tiny_model_dir), evaluation={"eval_set": {"path": str(tmp_path / "x.jsonl")}})
    )
    assert missing_set["errors"][0]["field"] == "evaluation.eval_set.path"

    no_teacher = make_version(
        training_db_url, train=[("q", "a")], test=[("q", "a")], teacher={"model": str(tmp_path / "gone")}
    )
    gone = post(body(no_teacher, str(tiny_model_dir)))
    assert gone["errors"][0]["field"] == "evaluation.teacher.model"
    assert "the version's teacher" in gone["detail"]
    explicit = client.post(
        "/v1/training-runs",
        json=body(no_teacher, str(tiny_model_dir), evaluation={"teacher": vllm_teacher(tiny_model_dir)}),
        headers=admin,
    )
    assert explicit.status_code == 202, explicit.text


def test_from_scratch_student_and_lora_are_accepted(
    client: TestClient, admin: dict[str, str], version_id: int
) -> None:
    payload = {
        "dataset_id": version_id,
        "student": {"from_scratch": {"layers": 2, "hidden": 64, "heads": 2}},
        "method": "lora",
        "hyperparameters": {"lora_r": 4},
        "evaluation": {"enabled": False},
    }
    response = client.post("/v1/training-runs", json=payload, headers=admin)
    assert response.status_code == 202, response.text
    run = response.json()
    assert run["student"]["from_scratch"]["hidden"] == 64
    assert run["config"]["method"] == "lora"
    assert run["config"]["lora_r"] == 4
    assert run["evaluation"]["enabled"] is False


def test_page_size_is_bounded(client: TestClient, admin: dict[str, str]) -> None:
    response = client.get("/v1/training-runs", params={"limit": 10_000}, headers=admin)
    assert response.status_code == 422
    assert problem_fields(response) == ["limit"]
