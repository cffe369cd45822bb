"""What the demo asks: disjoint questions, prompts as the recipe renders them, held-out evaluation items."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.cli import CliError
from service.cli.demo.plan import (
    DEFAULT_RECIPE,
    MAX_ADDITION_QUESTIONS,
    TEACHER_ROWS,
    VALIDATION_ITEMS,
    TeacherData,
    addition_questions,
    build_plan,
    dataset_name,
    verifier_mode,
)
from service.cli.demo.teacher import teacher_key
from service.cli.display import elapsed, sparkline


def test_addition_sets_are_disjoint_and_the_teachers_never_move() -> None:
    small = addition_questions(items=100, eval_items=20)
    large = addition_questions(items=4000, eval_items=200)
    for questions in (small, large):
        sets = [
            set(questions.held_out),
            set(questions.fresh),
            set(questions.truth),
            set(questions.validation),
        ]
        assert sum(len(s) for s in sets) == len(set().union(*sets)), "no question may be in two sets"
    assert (len(large.held_out), len(large.fresh), len(large.truth), len(large.validation)) == (
        200,
        4000,
        TEACHER_ROWS,
        VALIDATION_ITEMS,
    )
    # The teacher's questions (hence its cache key) do not depend on --items / --eval-items.
    assert small.truth == large.truth
    assert small.validation == large.validation
    assert addition_questions(100, 20) == small, "the same options give the same questions"


def test_more_questions_than_exist_is_refused() -> None:
    addition_questions(MAX_ADDITION_QUESTIONS - 10, 10)
    with pytest.raises(CliError, match=f"at most {MAX_ADDITION_QUESTIONS:,}"):
        addition_questions(MAX_ADDITION_QUESTIONS, 1)


def test_default_plan_asks_the_arithmetic_recipe_fresh_questions_and_holds_out_others() -> None:
    plan = build_plan(None, None, items=300, eval_items=40, validation_items=50)
    questions = addition_questions(300, 40)
    assert plan.addition
    assert plan.recipe_name == "arithmetic"
    assert plan.verifier_mode == "numeric"
    assert plan.scorer == "numeric"
    assert plan.recipe_file == DEFAULT_RECIPE
    assert plan.system is None  # the demo's copy of the recipe has no system turn (shorter sequences)
    assert plan.max_new_tokens == 8
    # The job carries its seed rows inline: the fresh questions with their references.
    records = plan.job_recipe["seeds"]["records"]
    assert plan.items == len(records) == 300
    assert records[0] == {
        "a": questions.fresh[0][0],
        "b": questions.fresh[0][1],
        "reference": str(sum(questions.fresh[0])),
    }
    assert plan.limit is None
    # Held-out items are rendered exactly as the recipe renders a question.
    a, b = questions.held_out[0]
    first = plan.eval_items[0]
    assert (first.question, first.answer, first.system) == (f"What is {a}+{b}?", str(a + b), plan.system)
    assert len(plan.eval_items) == 40
    fresh_questions = {f"What is {r['a']}+{r['b']}?" for r in records}
    assert not fresh_questions & {item.question for item in plan.eval_items}
    # The teacher learns from ground truth in the same chat format.
    assert plan.teacher_data is not None
    row = plan.teacher_data.rows[0]
    a, b = questions.truth[0]
    assert row["prompt"] == [{"role": "user", "content": f"What is {a}+{b}?"}]
    assert row["completion"] == [{"role": "assistant", "content": str(a + b)}]
    assert len(plan.teacher_data.rows) == TEACHER_ROWS
    assert len(plan.teacher_data.validation) == 50


def test_the_full_arithmetic_recipe_keeps_its_system_prompt_everywhere() -> None:
    plan = build_plan(
        DEFAULT_RECIPE.parents[1] / "arithmetic.yaml", None, items=20, eval_items=5, validation_items=5
    )
    system = "Answer with a number only."
    assert plan.system == system, "stored with every dataset row, so the student is asked as the teacher was"
    assert all(item.system == system for item in plan.eval_items)
    assert plan.teacher_data is not None
    assert plan.teacher_data.rows[0]["prompt"][0] == {"role": "system", "content": system}
    assert plan.teacher_data.validation[0].messages()[0] == {"role": "system", "content": system}


def test_a_given_teacher_needs_no_training_data() -> None:
    plan = build_plan(None, "org/teacher", items=50, eval_items=10, validation_items=10)
    assert plan.addition
    assert plan.teacher_data is None
    assert len(plan.eval_items) == 10


def test_a_users_recipe_with_references_holds_seed_rows_out_of_generation(tmp_path: Path) -> None:
    seeds = tmp_path / "capitals.jsonl"
    seeds.write_text("".join(f'{{"country": "c{i}", "reference": "city {i}"}}\n' for i in range(50)))
    recipe = tmp_path / "capitals.yaml"
    recipe.write_text(
        "name: capitals quiz\nseeds: {path: capitals.jsonl}\nstages:\n"
        "  - name: answer\n    messages:\n      - {role: system, content: Be brief.}\n"
        "      - {role: user, content: 'Capital of {{ country }}?'}\n"
    )
    plan = build_plan(recipe, "org/teacher", items=1000, eval_items=200, validation_items=10)
    assert not plan.addition
    assert plan.teacher_data is None
    assert plan.verifier_mode == "normalized", "text references are compared normalised"
    assert len(plan.eval_items) == 10, "at most a fifth of the rows is held out"
    generated = plan.job_recipe["seeds"]["records"]
    assert plan.items == len(generated) == 40
    assert plan.limit is None
    asked = {f"Capital of {row['country']}?" for row in generated}
    assert not asked & {item.question for item in plan.eval_items}
    assert all(item.system == "Be brief." and item.answer.startswith("city ") for item in plan.eval_items)
    assert plan.system == "Be brief."
    assert dataset_name(plan.recipe_name) == "demo-capitals-quiz"


def test_a_users_recipe_without_references_skips_the_verifier_and_says_so(tmp_path: Path) -> None:
    recipe = tmp_path / "chat.yaml"
    recipe.write_text(
        "name: chat\nseeds: {values: {n: [1, 2, 3]}}\nstages:\n"
        "  - name: answer\n    messages: [{role: user, content: 'Say {{ n }}'}]\n"
    )
    plan = build_plan(recipe, "org/teacher", items=2, eval_items=10, validation_items=10)
    assert plan.verifier_mode is None
    assert plan.eval_items == []
    assert plan.limit == 2, "the recipe keeps its own seeds; the job is limited to --items"
    assert any("no verifier" in note for note in plan.notes)


def test_verifier_mode_and_dataset_names() -> None:
    assert verifier_mode(["46", "1,024", "-3.5"]) == "numeric"
    assert verifier_mode(["46", "Paris"]) == "normalized"
    assert verifier_mode([]) == "normalized"
    assert dataset_name("arithmetic") == "demo-arithmetic"
    assert dataset_name("!!!") == "demo-recipe"


def test_teacher_key_names_the_data_and_the_settings() -> None:
    plan = build_plan(None, None, items=10, eval_items=10, validation_items=10)
    data = plan.teacher_data
    assert data is not None
    shapes, settings = {"layers": 4, "hidden": 128}, {"target": 0.97}
    key = teacher_key(data, shapes, settings)
    assert key == teacher_key(data, dict(shapes), dict(settings))
    assert key != teacher_key(data, {**shapes, "layers": 2}, settings)
    assert key != teacher_key(data, shapes, {"target": 0.9})
    fewer = TeacherData(rows=data.rows[:-1], validation=data.validation)
    assert key != teacher_key(fewer, shapes, settings)


def test_narration_formats() -> None:
    assert elapsed(12.34) == "12.3 s"
    assert elapsed(250) == "4:10"
    line = sparkline([3.0, 2.0, 1.0, 0.5, 0.5])
    assert line[0] == "█"
    assert line[-1] == "▁"
    assert len(line) == 5
    assert len(sparkline([float(i) for i in range(100)], width=20)) == 20
    assert sparkline([]) == ""
