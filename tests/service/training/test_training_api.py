"""The training-runs API without a worker: submission and its validation, reading, paging, cancel, roles."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import insert, text

from service.db.models import TrainingMetric, TrainingRun
from service.db.session import transaction
from service.settings import Settings
from service.workers.evaluate import EvalItem, ModelScore, evaluation_item_rows, replace_evaluation_items
from tests.service.training.factories import FAST, addition_version, make_version, vllm_teacher


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


# --- per-item evaluation results ---------------------------------------------------------------


def scored(name: str, model: str, answers: list[str], verdicts: list[bool]) -> ModelScore:
    return ModelScore(
        name=name,
        model=model,
        items=len(answers),
        correct=sum(verdicts),
        accuracy=sum(verdicts) / len(answers),
        empty_answers=0,
        items_digest="d",
        answers=answers,
        verdicts=verdicts,
    )


@pytest.fixture
def evaluated_run(training_db_url: str, version_id: int) -> int:
    """A run whose 12 items were stored by the worker's own functions: item i's reference is i+1.

    Teacher: right except items 3 and 7. Student after: right except 3, 5 and 11; item 9 is right
    in a different text ("10.0" vs "10"). So disagreements: 5, 7, 9, 11 (3: both wrong, same text).
    """
    references = [str(i + 1) for i in range(12)]
    teacher = [r if i not in (3, 7) else "0" for i, r in enumerate(references)]
    after = [r if i not in (3, 5, 11) else "0" for i, r in enumerate(references)]
    after[9] = "10.0"
    items = [EvalItem(question=f"What is {i}+1?", reference=r) for i, r in enumerate(references)]
    scores = {
        "teacher": scored("teacher", "/t", teacher, [i not in (3, 7) for i in range(12)]),
        "student_before": scored("student_before", "/s", ["x"] * 12, [False] * 12),
        "student_after": scored("student_after", "/s/final", after, [i not in (3, 5, 11) for i in range(12)]),
    }
    with transaction(training_db_url) as session:
        run = TrainingRun(
            dataset_id=version_id, status="succeeded", student={"model": "/s"}, method="full", config={}
        )
        session.add(run)
        session.flush()
        # An earlier evaluation's rows are replaced, not mixed in.
        replace_evaluation_items(session, run.id, evaluation_item_rows(run.id, items * 2, scores))
        stored = replace_evaluation_items(session, run.id, evaluation_item_rows(run.id, items, scores))
        assert stored == 12
        return int(run.id)


def item_page(client: TestClient, headers: dict[str, str], run_id: int, **params: Any) -> Any:
    response = client.get(f"/v1/training-runs/{run_id}/evaluation/items", params=params, headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


def test_evaluation_items_are_paged_and_filtered(
    client: TestClient, viewer: dict[str, str], evaluated_run: int
) -> None:
    first = item_page(client, viewer, evaluated_run, limit=5)
    assert (first["total"], first["limit"], first["offset"]) == (12, 5, 0)
    assert [item["index"] for item in first["items"]] == [0, 1, 2, 3, 4]
    assert first["items"][0] == {
        "index": 0,
        "question": "What is 0+1?",
        "reference": "1",
        "system": None,
        "teacher": {"answer": "1", "correct": True},
        "student_before": {"answer": "x", "correct": False},
        "student_after": {"answer": "1", "correct": True},
        "disagreement": False,
    }
    last = item_page(client, viewer, evaluated_run, limit=5, offset=10)
    assert [item["index"] for item in last["items"]] == [10, 11]

    def indices(item_filter: str) -> list[int]:
        page = item_page(client, viewer, evaluated_run, filter=item_filter, limit=50)
        assert page["total"] == len(page["items"])
        return [item["index"] for item in page["items"]]

    assert indices("disagreements") == [5, 7, 9, 11]
    assert indices("student_wrong") == [3, 5, 11]
    assert indices("teacher_wrong") == [3, 7]
    assert indices("all") == list(range(12))
    page = item_page(client, viewer, evaluated_run, filter="disagreements", limit=2, offset=2)
    assert (page["total"], [item["index"] for item in page["items"]]) == (4, [9, 11])
    assert all(item["disagreement"] for item in page["items"])


def test_evaluation_items_errors_are_problems(
    client: TestClient, admin: dict[str, str], evaluated_run: int
) -> None:
    missing = client.get("/v1/training-runs/987654/evaluation/items", headers=admin)
    assert missing.status_code == 404
    assert missing.headers["content-type"].startswith("application/problem+json")
    assert "training run 987654 does not exist" in missing.json()["detail"]
    bad = client.get(f"/v1/training-runs/{evaluated_run}/evaluation/items?filter=wrong", headers=admin)
    assert bad.status_code == 422
    assert problem_fields(bad) == ["filter"]
    assert "disagreements" in bad.text
    too_big = client.get(f"/v1/training-runs/{evaluated_run}/evaluation/items?limit=100000", headers=admin)
    assert too_big.status_code == 422
    assert problem_fields(too_big) == ["limit"]
    assert client.get(f"/v1/training-runs/{evaluated_run}/evaluation/items").status_code == 401


def test_a_run_not_yet_evaluated_has_no_items(
    client: TestClient, admin: dict[str, str], version_id: int, tiny_model_dir: Path
) -> None:
    response = client.post("/v1/training-runs", json=body(version_id, str(tiny_model_dir)), headers=admin)
    page = item_page(client, admin, response.json()["id"])
    assert (page["items"], page["total"]) == ([], 0)


@pytest.mark.parametrize("name", ["training_run.json", "training_run_lora.yaml"])
def test_the_readme_examples_are_valid_training_run_bodies(name: str) -> None:
    import yaml

    from service.training.schemas import TrainingRunCreate

    path = Path(__file__).resolve().parents[3] / "examples" / name
    body = TrainingRunCreate.model_validate(yaml.safe_load(path.read_text()))
    assert body.evaluation.enabled
    assert f"examples/{name}" in (path.parents[1] / "README.md").read_text()


@pytest.mark.slow
def test_the_train_worker_stores_every_scored_item(
    client: TestClient,
    admin: dict[str, str],
    training_db_url: str,
    training_settings: Settings,
    tiny_model_dir: Path,
    train_worker: Any,
) -> None:
    """A real run (TRL, then vLLM for the three models): its evaluation write stores each item."""
    version = addition_version(training_db_url, 32, 7, teacher=vllm_teacher(tiny_model_dir))
    response = client.post(
        "/v1/training-runs",
        json=body(version, str(tiny_model_dir), evaluation={"scorer": "exact", "max_new_tokens": 4}),
        headers=admin,
    )
    assert response.status_code == 202, response.text
    run_id = response.json()["id"]
    train_worker(training_settings).start().join(600)
    run = client.get(f"/v1/training-runs/{run_id}", headers=admin).json()
    assert run["status"] == "succeeded", run["last_error"]
    page = item_page(client, admin, run_id, limit=50)
    assert page["total"] == run["results"]["items"] == 7
    assert [item["index"] for item in page["items"]] == list(range(7))
    for name in ("teacher", "student_before", "student_after"):
        answers = [item[name] for item in page["items"]]
        assert all(answer is not None for answer in answers), name
        assert sum(answer["correct"] for answer in answers) == run["results"][name]["correct"]
    for item, example in zip(page["items"], run["results"]["examples"], strict=False):
        assert item["question"] == example["question"]
        assert item["teacher"]["answer"] == example["teacher"]
        assert item["student_after"]["answer"] == example["student_after"]
    # The teacher is the initial student (same random model): identical greedy answers.
    assert [i["teacher"] for i in page["items"]] == [i["student_before"] for i in page["items"]]
    flagged = item_page(client, admin, run_id, filter="disagreements", limit=50)["items"]
    expected = [
        i["index"]
        for i in page["items"]
        if i["teacher"]["correct"] != i["student_after"]["correct"]
        or i["teacher"]["answer"] != i["student_after"]["answer"]
    ]
    assert [i["index"] for i in flagged] == expected
