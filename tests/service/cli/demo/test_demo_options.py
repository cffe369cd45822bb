"""`hardlabel demo`: its help, and options refused with one line before anything starts."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from service.cli import main
from service.cli.demo.loop import Demo, DemoError, Options
from service.cli.demo.plan import DEFAULT_RECIPE, MAX_ADDITION_QUESTIONS, build_plan
from service.settings import Settings

EXAMPLES = DEFAULT_RECIPE.parents[1]  # examples/


def run_demo(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["demo", *args])
    return result.exit_code, result.output


def test_help_lists_every_option() -> None:
    code, output = run_demo("--help")
    assert code == 0
    for option in (
        "--no-serve",
        "--teacher",
        "--student",
        "--recipe",
        "--items",
        "--eval-items",
        "--home",
        "--port",
        "--student-steps",
        "--teacher-max-steps",
        "--teacher-target",
        "--threads",
    ):
        assert option in output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--items", str(MAX_ADDITION_QUESTIONS - 100), "--eval-items", "101"],
            f"--items + --eval-items must be at most {MAX_ADDITION_QUESTIONS:,}",
        ),
        (["--recipe", "no/such/recipe.yaml"], "--recipe: file not found: no/such/recipe.yaml"),
        (
            ["--recipe", str(EXAMPLES / "self_instruct.yaml")],
            "without --teacher the demo trains a teacher for 2-digit addition",
        ),
        (["--teacher", " "], "--teacher: give a model folder or hub id"),
        (["--student", ""], "--student: give a model folder or hub id"),
    ],
)
def test_bad_options_fail_with_one_line_before_anything_starts(
    tmp_path: Path, args: list[str], message: str
) -> None:
    home = tmp_path / "home"
    code, output = run_demo(*args, "--home", str(home), "--no-serve")
    assert code == 2
    lines = output.strip().splitlines()
    assert len(lines) == 1, output
    assert lines[0].startswith("error: ")
    assert message in lines[0]
    assert not home.exists(), "nothing may start (no database, no state folder) for refused options"


@pytest.mark.parametrize(
    "args",
    [
        ["--items", "0"],
        ["--eval-items", "0"],
        ["--teacher-target", "1.5"],
        ["--port", "70000"],
        ["--threads", "0"],
    ],
)
def test_out_of_range_numbers_are_usage_errors(tmp_path: Path, args: list[str]) -> None:
    code, output = run_demo(*args, "--home", str(tmp_path / "home"))
    assert code == 2
    assert "Invalid value" in output
    assert "Traceback" not in output


def test_a_broken_recipe_is_one_line(tmp_path: Path) -> None:
    recipe = tmp_path / "broken.yaml"
    recipe.write_text(
        "name: broken\nseeds: {values: {a: [1]}}\nstages:\n  - name: answer\n    messages: [oops\n"
    )
    code, output = run_demo("--recipe", str(recipe), "--teacher", "some/model", "--home", str(tmp_path / "h"))
    assert code == 2
    assert output.startswith("error: ")
    assert len(output.strip().splitlines()) == 1, output
    assert "invalid YAML" in output


def test_a_recipe_whose_templates_need_other_variables_cannot_use_the_addition_teacher(
    tmp_path: Path,
) -> None:
    recipe = tmp_path / "topics.yaml"
    recipe.write_text(
        "name: topics\nseeds: {values: {topic: [rain]}}\nstages:\n"
        "  - name: answer\n    messages: [{role: user, content: 'Tell me about {{ topic }}'}]\n"
    )
    code, output = run_demo("--recipe", str(recipe), "--home", str(tmp_path / "h"))
    assert code == 2
    assert "error: " in output
    assert "topic" in output
    assert len(output.strip().splitlines()) == 1, output


def test_a_failing_step_becomes_one_line_with_exit_code_1(tmp_path: Path) -> None:
    plan = build_plan(None, "given/teacher", 10, 5, 5)
    options = Options(
        teacher="given/teacher",
        student=None,
        eval_items=5,
        student_steps=None,
        teacher_max_steps=1,
        teacher_target=0.5,
        threads=1,
    )
    from rich.console import Console

    console = Console(record=True, width=100)
    demo = Demo(console, options, plan, Settings(home=tmp_path))
    tmp_path.joinpath("demo").mkdir()
    with pytest.raises(DemoError) as caught, demo.step(2, "Generation"):
        raise RuntimeError("the teacher fell over\nsecond line of detail")
    error = caught.value
    assert error.exit_code == 1
    assert error.format_message().startswith("generation: RuntimeError: the teacher fell over")
    assert "second line" not in error.format_message()
    assert "demo.log" in error.format_message()
