"""Bad model input is refused at submission with a 422 naming the field, without loading anything.

Variants of the real SmolLM2 folder (links to its files, so nothing big is copied): a missing path,
a folder that is not a model, one without weights, one without a chat template, a GGUF file when
the `gguf` package is missing. Hub ids (a name that is not a path) stay allowed for the worker.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

import service.model_folders
from service.model_folders import is_local_path, student_model_problem, teacher_model_problem
from tests.realmodel.recipes import CAPITAL_SYSTEM
from tests.service.training.factories import make_version

RECIPE = {
    "name": "bad-input",
    "seeds": {"records": [{"country": "France"}]},
    "stages": [
        {
            "name": "capital",
            "messages": [
                {"role": "system", "content": CAPITAL_SYSTEM},
                {"role": "user", "content": "What is the capital of {{ country }}?"},
            ],
            "sampling": {"max_tokens": 8},
        }
    ],
}


def linked_copy(source: Path, target: Path, *, leave_out: tuple[str, ...] = ()) -> Path:
    """A model folder of links to `source`'s files, without `leave_out`."""
    target.mkdir(parents=True)
    for file in source.iterdir():
        if file.name not in leave_out:
            (target / file.name).symlink_to(file)
    return target


@pytest.fixture(scope="module")
def folders(real_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bad-models")
    empty = root / "empty"
    empty.mkdir()
    not_a_model = root / "not-a-model"
    not_a_model.mkdir()
    (not_a_model / "config.json").write_text(json.dumps({"hello": "world"}))
    gguf = root / "gguf-folder"
    gguf.mkdir()
    (gguf / "SmolLM2-135M-Instruct.Q4_1.gguf").write_bytes(b"GGUF\x03\x00\x00\x00")
    no_template = linked_copy(real_model_dir, root / "no-template", leave_out=("chat_template.jinja",))
    # transformers also reads a template from tokenizer_config.json: a copy that has one there is fine.
    in_config = linked_copy(real_model_dir, root / "template-in-config", leave_out=("chat_template.jinja",))
    config = json.loads((real_model_dir / "tokenizer_config.json").read_text())
    (in_config / "tokenizer_config.json").unlink()
    (in_config / "tokenizer_config.json").write_text(
        json.dumps({**config, "chat_template": (real_model_dir / "chat_template.jinja").read_text()})
    )
    return {
        "good": real_model_dir,
        "missing": root / "missing",
        "empty": empty,
        "not_a_model": not_a_model,
        "no_weights": linked_copy(real_model_dir, root / "no-weights", leave_out=("model.safetensors",)),
        "no_tokenizer": linked_copy(real_model_dir, root / "no-tokenizer", leave_out=("tokenizer.json",)),
        "no_template": no_template,
        "template_in_config": in_config,
        "gguf_folder": gguf,
        "gguf_file": gguf / "SmolLM2-135M-Instruct.Q4_1.gguf",
    }


# (folder, what the problem says): refused both as a job's teacher and as a run's student.
REFUSED = [
    ("missing", "no such model folder"),
    ("empty", "not a model folder (no config.json)"),
    ("not_a_model", "names no model_type or architectures"),
    ("no_weights", "no weights"),
    ("no_tokenizer", "has no tokenizer"),
    ("no_template", "has no chat template"),
    ("gguf_folder", "it holds GGUF file(s): name the file itself"),
]


def problem(response: Any, field: str) -> str:
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert [error["field"] for error in body["errors"]] == [field], body
    assert body["detail"].startswith(f"{field}: ")
    return str(body["detail"])


def teacher(model: Path | str, **options: Any) -> dict[str, Any]:
    return {"model": str(model), "engine": "vllm", "enforce_eager": True, **options}


@pytest.mark.parametrize(("name", "reason"), REFUSED)
def test_a_jobs_teacher_that_cannot_serve_chat_is_a_422_naming_teacher_model(
    client: TestClient, admin: dict[str, str], folders: dict[str, Path], name: str, reason: str
) -> None:
    response = client.post(
        "/v1/jobs", json={"recipe": RECIPE, "teacher": teacher(folders[name])}, headers=admin
    )
    assert reason in problem(response, "teacher.model")


def test_gguf_files_need_the_gguf_package(
    client: TestClient, admin: dict[str, str], folders: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    gguf = str(folders["gguf_file"])
    assert teacher_model_problem(gguf) is None, "with `gguf` installed, vLLM can read the file"
    assert "cannot be fine-tuned directly" in (student_model_problem(gguf) or "")
    # This machine has the package: the API process is made to see an installation without it.
    monkeypatch.setattr(service.model_folders, "gguf_reader_installed", lambda: False)
    response = client.post("/v1/jobs", json={"recipe": RECIPE, "teacher": teacher(gguf)}, headers=admin)
    assert "needs the `gguf` package" in problem(response, "teacher.model")
    assert "needs the `gguf` package" in (student_model_problem(gguf) or "")


def test_good_folders_hub_ids_and_served_names_are_accepted(
    client: TestClient, admin: dict[str, str], folders: dict[str, Path]
) -> None:
    accepted = [
        teacher(folders["good"]),
        teacher(folders["template_in_config"]),
        # A tokenizer given in engine_kwargs brings the chat template: the folder's own is not used.
        teacher(folders["no_template"], engine_kwargs={"tokenizer": str(folders["good"])}),
        teacher("HuggingFaceTB/SmolLM2-135M-Instruct"),  # a hub id: the worker resolves it
        {"model": "/served/name", "engine": "openai", "base_url": "http://127.0.0.1:9/v1"},
    ]
    for config in accepted:
        response = client.post("/v1/jobs", json={"recipe": RECIPE, "teacher": config}, headers=admin)
        assert response.status_code == 202, response.text
        # Nothing here is for a worker: the generation tests' worker must not claim these.
        cancel = client.post(f"/v1/jobs/{response.json()['id']}/cancel", headers=admin)
        assert cancel.status_code == 200, cancel.text


@pytest.mark.parametrize("model", ["/models/a\x00b", "/" + "a" * 5000, "a" * 5000])
def test_names_the_file_system_cannot_take_are_problems_not_errors(
    client: TestClient, admin: dict[str, str], model: str
) -> None:
    problem = teacher_model_problem(model)
    if model.startswith("/"):
        assert problem, model[:40]
        assert problem.startswith(("not a readable path", "no such model folder")), problem
    else:
        assert problem is None, "a long name that is no path is a hub id"
    response = client.post("/v1/jobs", json={"recipe": RECIPE, "teacher": teacher(model)}, headers=admin)
    if problem is None:
        assert response.status_code == 202, response.text
        assert client.post(f"/v1/jobs/{response.json()['id']}/cancel", headers=admin).status_code == 200
    else:
        assert response.status_code == 422, response.text
        assert response.json()["errors"][0]["field"] == "teacher.model"


def test_path_or_hub_id() -> None:
    assert is_local_path("/models/teacher")
    assert is_local_path("./models/teacher")
    assert is_local_path("~/models/teacher")
    assert is_local_path("teacher.Q4_0.gguf")
    assert not is_local_path("HuggingFaceTB/SmolLM2-135M-Instruct")
    assert not is_local_path("gpt2")


@pytest.fixture(scope="module")
def version_id(real_db_url: str, real_model_dir: Path) -> int:
    return make_version(
        real_db_url,
        train=[("What is the capital of France?", "The capital of France is Paris.")],
        test=[("What is the capital of Japan?", "The capital of Japan is Tokyo.")],
        teacher=teacher(real_model_dir),
    )


def run_body(version_id: int, student: Path | str, **extra: Any) -> dict[str, Any]:
    return {
        "dataset_id": version_id,
        "student": {"model": str(student)},
        "hyperparameters": {"max_steps": 1},
        **extra,
    }


@pytest.mark.parametrize(("name", "reason"), REFUSED)
def test_a_runs_student_that_cannot_be_trained_is_a_422_naming_student_model(
    client: TestClient,
    admin: dict[str, str],
    folders: dict[str, Path],
    version_id: int,
    name: str,
    reason: str,
) -> None:
    response = client.post("/v1/training-runs", json=run_body(version_id, folders[name]), headers=admin)
    assert reason in problem(response, "student.model")


def test_a_runs_evaluation_teacher_without_a_chat_template_is_a_422(
    client: TestClient, admin: dict[str, str], folders: dict[str, Path], version_id: int
) -> None:
    response = client.post(
        "/v1/training-runs",
        json=run_body(version_id, folders["good"], evaluation={"teacher": teacher(folders["no_template"])}),
        headers=admin,
    )
    assert "has no chat template" in problem(response, "evaluation.teacher.model")
    gguf_student = client.post(
        "/v1/training-runs", json=run_body(version_id, folders["gguf_file"]), headers=admin
    )
    assert "cannot be fine-tuned directly" in problem(gguf_student, "student.model")
