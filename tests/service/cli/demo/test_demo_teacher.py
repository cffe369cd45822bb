"""The demo's teacher: trained from scratch in a child process, stopped at its target, then cached."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from service.cli.demo.plan import TeacherData, build_plan
from service.cli.demo.teacher import (
    RESULT_FILE,
    TeacherJob,
    cached_teacher,
    run_teacher_training,
    teacher_key,
    write_training_data,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]  # a guard: bounded by steps


def test_training_stops_at_the_first_checkpoint_that_reaches_the_target_and_is_cached(tmp_path: Path) -> None:
    plan = build_plan(None, None, items=10, eval_items=10, validation_items=8)
    assert plan.teacher_data is not None
    data = TeacherData(rows=plan.teacher_data.rows[:64], validation=plan.teacher_data.validation)
    settings = {"max_steps": 6, "round_steps": 2, "target": 0.0}
    folder = tmp_path / "teacher" / teacher_key(data, {"layers": 1}, settings)
    assert cached_teacher(folder) is None
    job = TeacherJob(
        folder=str(folder),
        data_path=str(write_training_data(folder, data)),
        validation=data.validation,
        shapes={"layers": 1, "hidden": 64, "heads": 2, "vocab": 300},
        schedule={"learning_rate": 1e-3, "per_device_train_batch_size": 8, "max_length": 64, "seed": 0},
        max_steps=6,
        round_steps=2,
        target=0.0,  # any accuracy reaches it: training must stop at the first checkpoint
        scorer="numeric",
        max_new_tokens=4,
        log_path=str(tmp_path / "teacher.log"),
        threads=1,
    )
    events = [event for event in run_teacher_training(job, poll_seconds=0.5) if event["kind"] != "waiting"]

    validations = [e for e in events if e["kind"] == "validation"]
    assert [e["step"] for e in validations] == [2], events
    assert 0.0 <= validations[0]["accuracy"] <= 1.0
    assert any(e["kind"] == "step" for e in events)
    done = events[-1]
    assert done["kind"] == "done"
    assert done["steps"] == 2, "stopped early, not at max_steps"
    assert done["validation_items"] == 8
    assert done["parameters"] > 0
    final = Path(done["model_path"])
    assert (final / "config.json").is_file()
    assert (final / "tokenizer.json").is_file()

    cached = cached_teacher(folder)
    assert cached == json.loads((folder / RESULT_FILE).read_text())
    assert cached is not None
    assert cached["model_path"] == done["model_path"]


def test_a_failing_training_is_one_line_naming_its_log(tmp_path: Path) -> None:
    folder = tmp_path / "teacher"
    folder.mkdir()
    broken = folder / "truth.jsonl"
    broken.write_text('{"prompt": "not a conversation"}\n')
    job = TeacherJob(
        folder=str(folder),
        data_path=str(broken),
        validation=[],
        shapes={"layers": 1, "hidden": 64, "heads": 2, "vocab": 300},
        schedule={"per_device_train_batch_size": 8, "max_length": 64},
        max_steps=2,
        round_steps=2,
        target=1.0,
        scorer="numeric",
        max_new_tokens=4,
        log_path=str(tmp_path / "teacher.log"),
        threads=1,
    )
    with pytest.raises(RuntimeError) as caught:
        list(run_teacher_training(job, poll_seconds=0.5))
    message = str(caught.value)
    assert "\n" not in message
    assert "teacher.log" in message
    assert "Error" in message  # the exception's type, e.g. DatasetError
    assert "Traceback" in (tmp_path / "teacher.log").read_text(), "the details go to the log"
    assert cached_teacher(folder) is None
