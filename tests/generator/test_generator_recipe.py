"""Recipe format: loading YAML/JSON/mappings, one-line errors with field paths, template validation."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from generator.recipe import Recipe, RecipeError, load_recipe, validate_recipe
from generator.templates import TemplateError

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def recipe_data(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "name": "qa",
        "seeds": {"values": {"topic": ["rain", "snow"]}},
        "stages": [
            {
                "name": "questions",
                "messages": [{"role": "user", "content": "Write questions about {{ topic }}."}],
                "parser": {"type": "list", "max_items": 2},
            },
            {
                "name": "answer",
                "messages": [
                    {"role": "system", "content": "Be brief."},
                    {"role": "user", "content": "{{ questions }}"},
                ],
                "sampling": {"temperature": 0.2, "max_tokens": 32},
            },
            {
                "name": "judge",
                "judges": "answer",
                "messages": [{"role": "user", "content": "Q: {{ questions }}\nA: {{ answer }}\nScore:"}],
                "parser": {"type": "score", "min": 1, "max": 10},
            },
        ],
    }
    data.update(overrides)
    return data


def error_of(data: dict[str, Any]) -> str:
    with pytest.raises(RecipeError) as caught:
        load_recipe(data)
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_loads_yaml_json_and_mappings_alike(tmp_path: Path) -> None:
    import yaml

    data = recipe_data()
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(data))
    (tmp_path / "r.json").write_text(json.dumps(data))
    from_yaml = load_recipe(tmp_path / "r.yaml")
    assert from_yaml == load_recipe(str(tmp_path / "r.json")) == load_recipe(data)
    assert [stage.name for stage in from_yaml.stages] == ["questions", "answer", "judge"]
    assert from_yaml.stages[1].sampling.temperature == 0.2
    assert from_yaml.stages[0].sampling.max_tokens == 256  # default


def test_answer_stage_is_the_last_non_judge_unless_given() -> None:
    assert load_recipe(recipe_data()).answer_stage == "answer"
    assert load_recipe(recipe_data(answer_stage="questions")).answer_stage == "questions"


def test_round_trips_through_its_json_dump() -> None:
    recipe = load_recipe(recipe_data(answer_stage="answer"))
    dumped = recipe.model_dump(mode="json")
    assert dumped["answer_stage"] == "answer"
    assert Recipe.model_validate(dumped) == recipe


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (
            lambda d: d["stages"][1]["sampling"].update(temperature=-1),
            "stages[1].sampling.temperature: must be >= 0",
        ),
        (
            lambda d: d["stages"][1]["sampling"].update(temprature=0.5),
            "stages[1].sampling.temprature: unknown key (did you mean 'temperature'?)",
        ),
        (lambda d: d.update(stagez=[]), "stagez: unknown key (did you mean 'stages'?)"),
        (
            lambda d: d["stages"][0].update(parser={"type": "xml"}),
            "stages[0].parser.type: 'xml' is not one of",
        ),
        (lambda d: d["stages"][0].update(parser={"max_items": 2}), "stages[0].parser.type: required"),
        (
            lambda d: d["stages"][0].update(parser={"type": "list", "max_item": 2}),
            "stages[0].parser.max_item: unknown key (did you mean 'max_items'?)",
        ),
        (
            lambda d: d["stages"][1].update(name="questions"),
            "stages[1].name: duplicate stage name 'questions'",
        ),
        (lambda d: d["stages"][0].update(name="2nd"), "stages[0].name: must start with a letter"),
        (lambda d: d["stages"][0].update(name="loop"), "stages[0].name: 'loop' is reserved"),
        (
            lambda d: d["stages"][2].update(judges="answr"),
            "stages[2].judges: 'answr' is not an earlier stage",
        ),
        (
            lambda d: d["stages"][2].update(parser={"type": "text"}),
            "stages[2].parser.type: a judge stage needs the 'score' parser",
        ),
        (
            lambda d: d["stages"][1].update(messages=[]),
            "stages[1].messages: list should have at least 1 item",
        ),
        (
            lambda d: d["stages"][1].update(messages=[{"role": "assistant", "content": "x"}]),
            "stages[1].messages: the last message must have role 'user'",
        ),
        (
            lambda d: d["stages"][1]["messages"][0].update(role="tool"),
            "stages[1].messages[0].role: input should be",
        ),
        (lambda d: d["stages"][1]["sampling"].update(n=0), "stages[1].sampling.n: must be >= 1"),
        (
            lambda d: d["stages"][2]["parser"].update(min=10, max=1),
            "stages[2].parser.max: must be greater than min",
        ),
        (
            lambda d: d["stages"][1].update(parser={"type": "json", "schema": {"type": "bogus"}}),
            "stages[1].parser.schema: not a valid JSON schema",
        ),
        (lambda d: d.update(seeds={}), "seeds: give at least one of values, records, path, hf_dataset"),
        (
            lambda d: d.update(seeds={"values": {"topic": []}}),
            "seeds.values.topic: must list at least one value",
        ),
        (lambda d: d.update(answer_stage="judge"), "answer_stage: 'judge' is a judge stage"),
        (lambda d: d.pop("name"), "name: required"),
    ],
)
def test_bad_recipes_give_one_line_naming_field_and_reason(mutate: Any, expected: str) -> None:
    data = recipe_data()
    mutate(data)
    assert error_of(data).startswith(expected)


def test_a_typo_in_a_required_key_names_every_problem_unknown_keys_first() -> None:
    data = recipe_data()
    data["stages"][1]["mesages"] = data["stages"][1].pop("messages")
    data["stages"][1]["sampling"]["temperature"] = -1
    assert error_of(data) == (
        "stages[1].mesages: unknown key (did you mean 'messages'?); "
        "stages[1].messages: required; stages[1].sampling.temperature: must be >= 0"
    )


def test_many_problems_are_counted_after_the_first_five() -> None:
    data = recipe_data()
    data.update({f"extra_{i}": i for i in range(7)})
    message = error_of(data)
    assert message.count("unknown key") == 5
    assert message.endswith(" (and 2 more problems)")


def test_file_errors_are_one_line(tmp_path: Path) -> None:
    with pytest.raises(RecipeError, match="recipe file not found"):
        load_recipe(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nstages:\n  - name: a\n   messages: []\n")
    with pytest.raises(RecipeError, match=r"bad.yaml line \d+: invalid YAML"):
        load_recipe(bad)
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("just text")
    with pytest.raises(RecipeError, match="expected a mapping"):
        load_recipe(scalar)


def test_validate_reports_undefined_variables_with_template_line_and_name() -> None:
    data = recipe_data()
    data["stages"][1]["messages"][1]["content"] = "Answer this:\n{{ question }}"  # the stage is "questions"
    with pytest.raises(TemplateError) as caught:
        validate_recipe(load_recipe(data))
    error = caught.value
    assert (error.template, error.line, error.variable) == ("stages[1].messages[1]", 2, "question")
    assert "questions" in str(error)  # the available names are listed


def test_validate_refuses_later_stage_names_and_injection() -> None:
    data = recipe_data()
    data["stages"][0]["messages"][0]["content"] = "{{ answer }}"  # a later stage: not visible yet
    with pytest.raises(TemplateError, match="undefined variable 'answer'"):
        validate_recipe(load_recipe(data))
    data = recipe_data()
    data["stages"][1]["question"] = "{{ questions.__class__.__base__ }}"
    with pytest.raises(TemplateError) as caught:
        validate_recipe(load_recipe(data))
    assert caught.value.template == "stages[1].question"
    assert "refused" in str(caught.value)


def test_stage_name_may_not_shadow_a_seed_column() -> None:
    data = recipe_data(seeds={"records": [{"topic": "rain", "answer": "42"}]})
    with pytest.raises(RecipeError, match=r"stages\[1\].name: 'answer' is also a seed column"):
        validate_recipe(load_recipe(data))


def test_validate_reads_columns_of_seed_files(tmp_path: Path) -> None:
    (tmp_path / "rows.jsonl").write_text('{"subject": "rain"}\n')
    data = recipe_data(seeds={"path": "rows.jsonl"})
    with pytest.raises(TemplateError, match=r"undefined variable 'topic'.*available: subject"):
        validate_recipe(load_recipe(data), base_dir=tmp_path)
    data["stages"][0]["messages"][0]["content"] = "About {{ subject }}"
    validate_recipe(load_recipe(data), base_dir=tmp_path)


@pytest.mark.parametrize("name", ["arithmetic.yaml", "self_instruct.yaml"])
def test_examples_are_valid(name: str) -> None:
    recipe = load_recipe(EXAMPLES / name)
    validate_recipe(recipe, base_dir=EXAMPLES)
    assert recipe.answer_stage == "answer"
