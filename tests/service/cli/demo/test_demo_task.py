"""`hardlabel demo --task NAME`: the real-teacher task's plan, options and training request (fast)."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from rich.console import Console

from service.cli import main
from service.cli.demo.loop import Demo, Options
from service.cli.demo.plan import REFERENCE_FIELD, Plan
from service.cli.demo.tasks import FINAL_NUMBER, TASKS, find_task
from service.filters.builtin.verifier import ReferenceVerifier
from service.filters.specs import VerifierParams
from service.settings import Settings

TASK = TASKS["smollm2-addition"]


def task_plan(items: int = TASK.items, eval_items: int = TASK.eval_items) -> Plan:
    return TASK.plan(Path("models"), items, eval_items)


def test_the_task_holds_out_sums_the_teacher_never_answers() -> None:
    plan = task_plan()
    assert plan.verifier_mode == "numeric"
    assert plan.scorer == "numeric"
    assert len(plan.eval_items) == 40
    generated = plan.job_recipe["seeds"]["records"]
    assert plan.items == len(generated) == 60
    asked = {f"What is {row['a']}+{row['b']}?" for row in generated}
    held_out = {item.question for item in plan.eval_items}
    assert not asked & held_out, "no held-out question is answered by the teacher (or trained on)"
    assert len(asked | held_out) == 100, "together they are every single-digit sum"
    for item in plan.eval_items:
        a, b = (int(part) for part in item.question.removeprefix("What is ").rstrip("?").split("+"))
        assert item.answer == str(a + b)
        assert item.system == "Answer with a number only."
    assert all(row[REFERENCE_FIELD] == str(row["a"] + row["b"]) for row in generated)
    # Rejection sampling: several sampled answers per question, cut short (the model rambles).
    sampling = plan.job_recipe["stages"][0]["sampling"]
    assert sampling["n"] > 1
    assert sampling["temperature"] > 0
    assert sampling["max_tokens"] <= 16
    assert sampling["stop"] == ["\n"]


def test_items_and_eval_items_shrink_the_task() -> None:
    plan = task_plan(items=5, eval_items=3)
    assert plan.items == 5
    assert len(plan.eval_items) == 3
    # The share caps the held-out rows: never more than 40 of the 100.
    assert len(task_plan(eval_items=90).eval_items) == 40


def test_unknown_task_and_conflicting_options_are_one_line(tmp_path: Path) -> None:
    home = tmp_path / "home"
    for args, message in (
        (["--task", "nope"], "--task: unknown task 'nope'; known: smollm2-addition"),
        (["--task", TASK.name, "--teacher", "x"], "--teacher and --task"),
        (["--task", TASK.name, "--recipe", str(TASK.recipe)], "--recipe and --task"),
        (["--task", TASK.name, "--student", "x"], "--student and --task"),
        (["--student-layers", "4"], "--student-layers needs --task"),
    ):
        result = CliRunner().invoke(main, ["demo", *args, "--home", str(home), "--no-serve"])
        assert result.exit_code == 2, result.output
        lines = result.output.strip().splitlines()
        assert len(lines) == 1, result.output
        assert lines[0].startswith("error: ")
        assert message in lines[0]
        assert not home.exists(), "nothing may start for refused options"


def test_help_lists_the_task_options() -> None:
    result = CliRunner().invoke(main, ["demo", "--help"])
    assert result.exit_code == 0
    assert "--task" in result.output
    assert "--student-layers" in result.output
    assert "smollm2-addition" in result.output


def _demo(tmp_path: Path, student_layers: int | None) -> Demo:
    options = Options(
        teacher=None,
        student=None,
        eval_items=TASK.eval_items,
        student_steps=None,
        teacher_max_steps=1,
        teacher_target=0.5,
        threads=1,
        task=find_task(TASK.name),
        student_layers=student_layers,
    )
    demo = Demo(Console(record=True), options, task_plan(), Settings(home=tmp_path))
    demo.demo_dir.mkdir(parents=True)
    demo.student_model = tmp_path / "models" / "student"
    return demo


def test_the_training_run_is_lora_on_the_teacher_scored_on_the_held_out_sums(tmp_path: Path) -> None:
    body, described, where = _demo(tmp_path, None).training_request(7)
    assert body["dataset_id"] == 7
    assert body["method"] == "lora"
    assert body["student"] == {"model": str(tmp_path / "models" / "student")}
    assert body["hyperparameters"]["num_train_epochs"] == TASK.hyperparameters["num_train_epochs"]
    evaluation = body["evaluation"]
    assert evaluation["scorer"] == "numeric"
    assert evaluation["pattern"] == FINAL_NUMBER  # the verifier's own reading of an answer
    assert evaluation["max_items"] == 40
    # Choosing the best checkpoint by the held-out score would report a test score it was chosen by.
    assert evaluation["during_training"] == {"enabled": False}
    held_out = Path(evaluation["eval_set"]["path"]).read_text().splitlines()
    assert len(held_out) == 40
    assert "LoRA" in described
    assert "40 held-out questions" in where


@pytest.mark.parametrize("layers", [12])
def test_a_pruned_student_is_fine_tuned_in_full(tmp_path: Path, layers: int) -> None:
    body, described, _ = _demo(tmp_path, layers).training_request(1)
    assert body["method"] == "full"
    assert "full fine-tune" in described


@pytest.mark.parametrize(
    ("answer", "right"),
    [
        ("12", True),
        ("6 + 6 = 12", True),
        ("5 + 7 = 12.", True),
        ("5 + 7 equals 12.", True),
        ("The answer is 12", True),
        ("12\nWhat is 7+1?", True),  # the first line is the answer
        ("12 apples", False),
        ("6 + 6 = 12. The", False),
        # Real teacher samples cut at max_tokens whose last number happens to be the sum.
        ("The concept of 0+12 in", False),
        ("To find 0 + 12,", False),
        ("A little math: 12 +", False),
        ("0+12", False),
    ],
)
def test_the_verifier_reads_only_an_answer_that_ends_with_the_number(answer: str, right: bool) -> None:
    verifier = ReferenceVerifier(VerifierParams(mode="numeric", pattern=FINAL_NUMBER))
    verdict = verifier.judge({"id": 1, "inputs": {"a": 5, "b": 7, "reference": "12"}, "answer": answer})  # type: ignore[typeddict-item]
    assert verdict.passed is right, verdict
