"""`hardlabel run ...` against a live API (uvicorn in a thread) on the session's database."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import update

from service.cli import main
from service.db.models import TrainingMetric, TrainingRun
from service.db.session import transaction
from service.workers.evaluate import EvalItem, ModelScore, evaluation_item_rows, replace_evaluation_items
from tests.service.training.factories import make_version

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "training_run.json"
RESULTS = {
    "items": 4,
    "scorer": "numeric",
    "source": "test split of dataset add v1",
    "teacher": {"model": "/models/teacher", "items": 4, "correct": 3, "accuracy": 0.75},
    "student_before": {"model": "/models/student", "items": 4, "correct": 0, "accuracy": 0.0},
    "student_after": {"model": "/runs/7/final", "items": 4, "correct": 2, "accuracy": 0.5},
    "ratio": 0.666667,
    "examples": [],
}


def invoke(*args: str) -> Result:
    # A wide terminal: rich lays tables out to the width, and these tests read table rows.
    return CliRunner(env={"COLUMNS": "200"}).invoke(main, ["run", *args])


def cells(table_row: str) -> list[str]:
    return [cell.strip() for cell in table_row.strip().strip("│").split("│")]


def one_line_error(result: Result) -> str:
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.output
    return lines[0]


@pytest.fixture(scope="module")
def version_id(database_url: str) -> int:
    rows = [(f"What is {i}+1?", str(i + 1)) for i in range(8)]
    return make_version(database_url, train=rows[:6], test=rows[6:])


@pytest.fixture
def student_folder(tmp_path: Path, tiny_model_dir: Path) -> Path:
    """The tiny model under a folder of this test (a link), named relatively by the test."""
    folder = tmp_path / "students" / "tiny"
    folder.parent.mkdir(parents=True)
    folder.symlink_to(tiny_model_dir, target_is_directory=True)
    return folder.resolve()


def scored(name: str, answers: list[str], verdicts: list[bool]) -> ModelScore:
    return ModelScore(
        name=name,
        model=f"/models/{name}",
        items=len(answers),
        correct=sum(verdicts),
        accuracy=sum(verdicts) / len(answers),
        empty_answers=0,
        items_digest="d",
        answers=answers,
        verdicts=verdicts,
    )


def add_run(url: str, dataset_id: int, **values: Any) -> int:
    """A run row as the worker leaves it; a finished one carries RESULTS and 4 scored items."""
    with transaction(url) as session:
        run = TrainingRun(
            dataset_id=dataset_id,
            student={"model": "/models/student"},
            method="full",
            config={"method": "full"},
            **values,
        )
        session.add(run)
        session.flush()
        if values.get("results"):
            items = [EvalItem(question=f"What is {i}+1?", reference=str(i + 1)) for i in range(4)]
            scores = {
                "teacher": scored("teacher", ["1", "2", "3", "0"], [True, True, True, False]),
                "student_before": scored("student_before", ["", "", "", ""], [False] * 4),
                "student_after": scored("student_after", ["1", "9", "3", "0"], [True, False, True, False]),
            }
            replace_evaluation_items(session, run.id, evaluation_item_rows(run.id, items, scores))
        return int(run.id)


def test_submit_status_cancel_and_resume(
    cli_env: dict[str, str],
    version_id: int,
    student_folder: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    hyperparameters = tmp_path / "hp.yaml"
    hyperparameters.write_text("learning_rate: 0.001\nmax_steps: 50\nper_device_train_batch_size: 4\n")
    monkeypatch.chdir(tmp_path)
    result = invoke(
        "submit",
        str(version_id),
        "--student",
        "students/tiny",
        "--method",
        "lora",
        "--hyperparameters",
        str(hyperparameters),
        "--set",
        "max_steps=7",
        "--no-eval",
        "--priority",
        "3",
    )
    assert result.exit_code == 0, result.output
    run_id = int(result.stdout.strip())
    assert f"training run {run_id} queued: lora fine-tune of {student_folder}" in result.stderr

    detail = invoke("status", str(run_id))
    assert detail.exit_code == 0, detail.output
    assert f"training run {run_id} queued" in detail.stdout
    assert "step 0 (0%)" in detail.stdout
    listing = invoke("status", "--status", "queued", "--limit", "50")
    assert listing.exit_code == 0, listing.output
    assert str(run_id) in listing.stdout

    cancelled = invoke("cancel", str(run_id))
    assert cancelled.exit_code == 0, cancelled.output
    assert cancelled.stdout.strip() == f"training run {run_id} cancelled at step 0"
    assert "already finished" in one_line_error(invoke("cancel", str(run_id)))
    resumed = invoke("resume", str(run_id))
    assert resumed.exit_code == 0, resumed.output
    assert f"training run {run_id} queued" in resumed.stderr
    assert "has no results: evaluation is disabled for it" in one_line_error(invoke("results", str(run_id)))
    assert invoke("cancel", str(run_id)).exit_code == 0

    with transaction(cli_env["HARDLABEL_DATABASE_URL"]) as session:
        run = session.get_one(TrainingRun, run_id)
        assert run.student == {"model": str(student_folder)}, "a local folder is sent absolute"
        assert run.method == "lora"
        assert run.config["learning_rate"] == 0.001
        assert run.config["max_steps"] == 7, "--set wins over the file"
        assert run.config["per_device_train_batch_size"] == 4
        assert run.evaluation["enabled"] is False


def test_submit_the_readme_example_spec_with_overrides(cli_env: dict[str, str], version_id: int) -> None:
    example = json.loads(EXAMPLE.read_text())
    result = invoke("submit", str(version_id), "--spec", str(EXAMPLE), "--layers", "3", "--no-eval")
    assert result.exit_code == 0, result.output
    run_id = int(result.stdout.strip())
    with transaction(cli_env["HARDLABEL_DATABASE_URL"]) as session:
        run = session.get_one(TrainingRun, run_id)
        assert run.dataset_id == version_id, "the argument wins over the file's dataset_id"
        shapes = {**example["student"]["from_scratch"], "layers": 3}
        assert {key: run.student["from_scratch"][key] for key in shapes} == shapes
        for key, value in example["hyperparameters"].items():
            assert run.config[key] == value, key
        assert run.evaluation["scorer"] == "numeric"
        assert run.evaluation["reference_field"] == "reference"
        assert run.evaluation["enabled"] is False
    assert invoke("cancel", str(run_id)).exit_code == 0


def test_bad_input_is_one_line(
    cli_env: dict[str, str], version_id: int, student_folder: Path, tmp_path: Path
) -> None:
    assert "no student" in one_line_error(invoke("submit", str(version_id)))
    both = invoke("submit", str(version_id), "--student", str(student_folder), "--from-scratch")
    assert "not both" in one_line_error(both)
    broken = tmp_path / "broken.yaml"
    broken.write_text("learning_rate: [1, 2\n")
    message = one_line_error(
        invoke("submit", str(version_id), "--student", str(student_folder), "--hyperparameters", str(broken))
    )
    assert str(broken) in message
    assert "not JSON or YAML" in message
    listed = tmp_path / "list.yaml"
    listed.write_text("- 1\n- 2\n")
    message = one_line_error(
        invoke("submit", str(version_id), "--student", str(student_folder), "--hyperparameters", str(listed))
    )
    assert "expected a mapping" in message
    too_fast = invoke(
        "submit", str(version_id), "--student", str(student_folder), "--set", "learning_rate=5", "--no-eval"
    )
    assert "hyperparameters.learning_rate" in one_line_error(too_fast)
    assert "no such model folder" in one_line_error(
        invoke("submit", str(version_id), "--student", "./nowhere", "--no-eval")
    )
    assert "dataset version 987654 does not exist" in one_line_error(
        invoke("submit", "987654", "--student", str(student_folder))
    )
    for command in ("status", "follow", "results", "items", "cancel", "resume"):
        assert "training run 987654 does not exist" in one_line_error(invoke(command, "987654"))
    bad_filter = invoke("items", "1", "--filter", "nope")
    assert bad_filter.exit_code == 2
    assert "Invalid value for '--filter'" in bad_filter.output


def test_results_and_items_of_a_finished_run(cli_env: dict[str, str], version_id: int) -> None:
    run_id = add_run(
        cli_env["HARDLABEL_DATABASE_URL"],
        version_id,
        status="succeeded",
        step=10,
        total_steps=10,
        results=RESULTS,
    )
    result = invoke("results", str(run_id))
    assert result.exit_code == 0, result.output
    rows = [line for line in result.stdout.splitlines() if "%" in line]
    assert len(rows) == 3, result.stdout
    teacher, before, after = rows
    assert cells(teacher) == ["teacher", "/models/teacher", "3/4", "75.0%"]
    assert cells(before) == ["student before", "/models/student", "0/4", "0.0%"]
    assert cells(after) == ["student after", "/runs/7/final", "2/4", "50.0%"]
    assert "student after / teacher: 0.667" in result.stdout
    assert json.loads(invoke("results", str(run_id), "--json").stdout)["ratio"] == 0.666667

    all_items = invoke("items", str(run_id), "--limit", "3")
    assert all_items.exit_code == 0, all_items.output
    assert "items 1–3 of 4 (all)" in all_items.stdout
    disagreements = invoke("items", str(run_id), "--filter", "disagreements")
    assert disagreements.exit_code == 0, disagreements.output
    assert "items 1–1 of 1 (disagreements)" in disagreements.stdout
    assert "What is 1+1?" in disagreements.stdout
    assert "✗ 9" in disagreements.stdout
    assert "What is 0+1?" not in disagreements.stdout
    page = json.loads(invoke("items", str(run_id), "--filter", "student_wrong", "--json").stdout)
    assert [item["index"] for item in page["items"]] == [1, 3]


def test_follow_shows_steps_and_loss_until_the_run_ends_then_the_results(
    cli_env: dict[str, str], version_id: int
) -> None:
    url = cli_env["HARDLABEL_DATABASE_URL"]
    run_id = add_run(url, version_id, status="running", step=2, total_steps=10)
    with transaction(url) as session:
        session.add(TrainingMetric(training_run_id=run_id, step=2, data={"step": 2, "loss": 2.5}))

    def finish() -> None:
        time.sleep(1.0)
        with transaction(url) as session:
            session.add(TrainingMetric(training_run_id=run_id, step=10, data={"step": 10, "loss": 0.125}))
            session.execute(
                update(TrainingRun)
                .where(TrainingRun.id == run_id)
                .values(status="succeeded", step=10, results=RESULTS)
            )

    finisher = threading.Thread(target=finish)
    finisher.start()
    result = invoke("follow", str(run_id), "--interval", "0.2")
    finisher.join()
    assert result.exit_code == 0, result.output
    assert f"run {run_id} succeeded" in result.stderr
    assert "10/10 steps · loss 0.1250" in result.stderr
    assert "student after / teacher: 0.667" in result.stdout

    failed = add_run(url, version_id, status="failed", error="training: out of patience")
    result = invoke("follow", str(failed))
    assert result.exit_code == 1
    assert f"training run {failed} failed: training: out of patience" in result.stderr
