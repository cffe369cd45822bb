"""Output parsers: text, JSON (schema-checked), list split, judge score."""

from __future__ import annotations

import pytest

from generator.parsers import (
    JsonParser,
    ListParser,
    ScoreParser,
    TextParser,
    answer_text,
    engine_json_schema,
    parse_completion,
)


def test_text_strips_and_refuses_empty() -> None:
    assert parse_completion(TextParser(), "  42 \n").values == ["42"]
    failed = parse_completion(TextParser(), " \n\n")
    assert not failed.ok
    assert failed.error == "empty completion"


def test_list_splits_lines_and_removes_numbering() -> None:
    text = "1. What is rain?\n\n2) Why is snow white?\n- How do clouds form?\n* What is fog?\nQ5: Last one"
    outcome = parse_completion(ListParser(type="list"), text)
    assert outcome.values == [
        "What is rain?",
        "Why is snow white?",
        "How do clouds form?",
        "What is fog?",
        "Last one",
    ]
    assert parse_completion(ListParser(type="list", max_items=2), text).values == [
        "What is rain?",
        "Why is snow white?",
    ]
    kept = parse_completion(ListParser(type="list", separator=";", strip_numbering=False), "1. a; b ;")
    assert kept.values == ["1. a", "b"]
    assert parse_completion(ListParser(type="list"), "\n \n").error == "no items in the completion"


def test_json_parses_and_checks_the_schema() -> None:
    schema = {
        "type": "object",
        "properties": {"answer": {"type": "integer"}},
        "required": ["answer"],
    }
    parser = JsonParser.model_validate({"type": "json", "schema": schema})
    assert parse_completion(parser, '{"answer": 4}').values == [{"answer": 4}]
    assert "invalid JSON" in (parse_completion(parser, '{"answer": 4').error or "")
    mismatch = parse_completion(parser, '{"answer": "four"}').error or ""
    assert mismatch.startswith("JSON does not match the schema at answer")
    # Control characters inside strings are accepted (strict=False).
    assert parse_completion(JsonParser(type="json"), '"a\tb"').values == ["a\tb"]
    assert engine_json_schema(parser) == schema


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("8", 8),
        ("Score: 7/10", 7),
        ("The answer is wrong in 2 places. Rating: 3", 3),
        ("I'd give it 9.5", 9.5),
    ],
)
def test_score_extracts_the_judges_number(text: str, expected: float) -> None:
    assert parse_completion(ScoreParser(type="score"), text).values == [expected]


def test_score_failures_say_why() -> None:
    parser = ScoreParser(type="score", min=1, max=10)
    assert parse_completion(parser, "excellent").error == "no number in the judge's completion"
    assert parse_completion(parser, "Score: 11").error == "score 11 outside [1, 10]"


def test_structured_score_asks_the_engine_for_an_integer_in_range() -> None:
    assert engine_json_schema(ScoreParser(type="score", structured=True)) == {
        "type": "integer",
        "minimum": 1,
        "maximum": 10,
    }
    assert engine_json_schema(ScoreParser(type="score")) is None
    assert engine_json_schema(ListParser(type="list")) is None


def test_answer_text_forms() -> None:
    assert answer_text("x") == "x"
    assert answer_text(7) == "7"
    assert answer_text(7.5) == "7.5"
    assert answer_text({"a": "é"}) == '{"a": "é"}'
    assert answer_text(True) == "true"
