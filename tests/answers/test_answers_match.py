"""answers.match: one table of answers, and the verifier filter and the evaluation agree on every row."""

from __future__ import annotations

from typing import Any

import pytest

from answers.match import (
    answers_match,
    is_plain_number,
    last_number,
    match_answer,
    normalize_answer,
)
from service.filters.builtin.verifier import ReferenceVerifier
from service.filters.records import sample_record
from service.filters.specs import VerifierParams
from trainer.evaluate import score_predictions

MARKER = r"####\s*(.+)"

# (answer, reference, mode, options, correct)
TABLE: list[tuple[str, str, str, dict[str, Any], bool]] = [
    # articles
    ("The Eiffel Tower", "eiffel tower", "normalized", {}, True),
    ("eiffel tower", "The Eiffel Tower", "normalized", {}, True),
    ("an apple", "Apple", "normalized", {}, True),
    ("the theory", "theory", "normalized", {}, True),
    ("Theory", "ory", "normalized", {}, False),
    ("A", "a", "normalized", {}, True),  # nothing but an article: kept, so a choice letter still counts
    ("B", "A", "normalized", {}, False),
    ("The Eiffel Tower", "eiffel tower", "exact", {}, False),
    # case
    ("PARIS", "paris", "normalized", {}, True),
    ("Straße", "STRASSE", "normalized", {}, True),
    ("SÃO PAULO", "são paulo", "normalized", {}, True),
    ("PARIS", "paris", "exact", {}, False),
    ("Lyon", "Paris", "normalized", {}, False),
    # punctuation
    ("  paris! ", "Paris", "normalized", {}, True),
    ("  paris! ", "Paris", "exact", {}, False),
    ("U.S.", "US", "normalized", {}, True),
    ("don't", "dont", "normalized", {}, True),
    ("New-York", "newyork", "normalized", {}, True),
    ("\ufb01ne", "fine", "normalized", {}, True),  # NFKC: the ligature is two letters
    (",", "?!", "normalized", {}, False),  # a reference that normalises to nothing matches as written
    (" ?! ", "?!", "normalized", {}, True),
    # whitespace
    ("hello\n\tworld", "hello  world", "normalized", {}, True),
    (" 42\n", "42", "exact", {}, True),
    ("42.", "42", "exact", {}, False),
    # numbers as text: plain numbers compare as numbers, a decimal point is never dropped
    ("1,000", "1000", "normalized", {}, True),
    ("17.0", "17", "normalized", {}, True),
    ("3.5", "35", "normalized", {}, False),
    ("3.5 apples", "35 apples", "normalized", {}, False),
    ("x = 4.", "4", "normalized", {}, False),
    # numbers: the last one written, within tolerance
    ("1,000", "1000", "numeric", {}, True),
    ("-3.5", "-3.5", "numeric", {}, True),
    ("\u22123.5", "-3.5", "numeric", {}, True),  # a Unicode minus sign
    ("The answer is -3.5.", "3.5", "numeric", {}, False),
    ("12 + 7 = 19", "19", "numeric", {}, True),
    ("12 + 7 = 19", "12", "numeric", {}, False),
    ("x = 4.", "4", "numeric", {}, True),
    ("So the total is $1,234.50.", "1234.5", "numeric", {}, True),
    ("The answer is 1,234.", "1234", "numeric", {}, True),
    ("it is 4", "4.0", "numeric", {}, True),
    ("2e-3", "0.002", "numeric", {}, True),
    ("about 12", "13", "numeric", {}, False),
    ("no digits", "3", "numeric", {}, False),
    ("7", "no number", "numeric", {}, False),
    ("x = 0.30000001", "0.3", "numeric", {}, True),
    ("0.1000001", "0.1", "numeric", {"tolerance": 1e-3}, True),
    ("0.11", "0.1", "numeric", {}, False),
    ("1000000.5", "1000000", "numeric", {}, False),
    ("1000000.5", "1000000", "numeric", {"relative_tolerance": 1e-6}, True),
    # a pattern extracts the final answer first (last match, group 1)
    ("work... #### 42", "42", "regex", {"pattern": MARKER}, True),
    ("thinking #### Paris.", "paris", "regex", {"pattern": MARKER}, True),
    ("#### 17.0", "17", "regex", {"pattern": MARKER}, True),
    ("no marker", "42", "regex", {"pattern": MARKER}, False),
    ("#### 3 and then #### 4", "4", "regex", {"pattern": r"####\s*(\d+)"}, True),
    ("Answer: Yes", "yes", "regex", {"pattern": r"Answer: (\w+)"}, True),
    ("Answer: Yes", "yes", "exact", {"pattern": r"Answer: (\w+)"}, False),
    ("Answer: 12, so 12 + 1 = 13", "12", "numeric", {"pattern": r"Answer: (\d+)"}, True),
    ("Answer: none", "3", "numeric", {"pattern": r"Answer: (\d+)?"}, False),  # the group took no part
]


def _row_id(row: tuple[str, str, str, dict[str, Any], bool]) -> str:
    answer, reference, mode, options, correct = row
    return f"{mode}:{answer!r}{'=' if correct else '≠'}{reference!r}{options or ''}"


def verifier_verdict(answer: str, reference: str, mode: str, options: dict[str, Any]) -> bool:
    verifier = ReferenceVerifier(VerifierParams.model_validate({"mode": mode, **options}))
    return verifier.judge(sample_record(1, "q", answer, inputs={"reference": reference})).passed


def trainer_verdict(answer: str, reference: str, mode: str, options: dict[str, Any]) -> bool:
    (verdict,) = score_predictions([answer], [reference], mode, **options).per_item
    return verdict


@pytest.mark.parametrize(
    ("answer", "reference", "mode", "options", "correct"), TABLE, ids=map(_row_id, TABLE)
)
def test_one_verdict_everywhere(
    answer: str, reference: str, mode: str, options: dict[str, Any], correct: bool
) -> None:
    assert match_answer(answer, reference, mode, **options).correct is correct
    assert answers_match([answer], [reference], mode, **options) == [correct]
    assert verifier_verdict(answer, reference, mode, options) is correct, "the verifier filter"
    assert trainer_verdict(answer, reference, mode, options) is correct, "the evaluation scorer"


def test_the_verifier_and_the_scorer_agree_on_the_whole_table_at_once() -> None:
    for mode in ("exact", "normalized", "numeric", "regex"):
        rows = [row for row in TABLE if row[2] == mode and not row[3]]
        if mode == "regex":
            rows = [row for row in TABLE if row[2] == mode and row[3] == {"pattern": MARKER}]
        options = rows[0][3]
        answers, references = [row[0] for row in rows], [row[1] for row in rows]
        scored = score_predictions(answers, references, mode, **options).per_item
        filtered = [verifier_verdict(a, r, mode, options) for a, r in zip(answers, references, strict=True)]
        assert scored == filtered == [row[4] for row in rows], mode


@pytest.mark.parametrize(
    ("text", "normalized"),
    [
        ("The  Eiffel Tower!", "eiffel tower"),
        ("An apple a day", "apple day"),
        ("The", "the"),
        ("a_b-c", "abc"),
        ("It costs $3.50, or 1,000 yen.", "it costs 3.50 or 1,000 yen"),
        ("x = 4.", "x 4"),
        ("12 + 7 = 19", "12 7 19"),
        ("?!", ""),
    ],
)
def test_normalize_answer(text: str, normalized: str) -> None:
    assert normalize_answer(text) == normalized


@pytest.mark.parametrize(
    ("text", "number"),
    [
        ("1,000", 1000.0),
        ("-3.5", -3.5),
        ("12 + 7 = 19", 19.0),
        ("x = 4.", 4.0),
        ("from 3 to -7", -7.0),
        ("so the total is $1,234.50.", 1234.5),
        ("about .5 of it", 0.5),
        ("1.5e3", 1500.0),
        ("none", None),
    ],
)
def test_last_number(text: str, number: float | None) -> None:
    assert last_number(text) == number


def test_plain_numbers() -> None:
    assert all(is_plain_number(text) for text in ["17", " -3.5\n", "1,000", "2e-3", "\u22124"])
    assert not any(is_plain_number(text) for text in ["4.", "x = 4", "1,00", "12 apples", ""])


def test_references_that_are_not_strings() -> None:
    assert match_answer("#### 42", 42, "regex", pattern=MARKER).reason == "answer 42 = reference 42"
    assert match_answer("0.1000001", 0.1, "numeric", tolerance=1e-3).correct
    assert match_answer("7", 7, "normalized").correct
    assert not match_answer("1", True, "numeric").correct


def test_reasons_people_read() -> None:
    assert match_answer("So the total is 61.", "62", "numeric").reason == "answer 61 ≠ reference 62"
    assert match_answer("Lyon", "Paris").reason == "answer 'Lyon' ≠ reference 'Paris'"
    assert match_answer("no digits", "3", "numeric").reason == "no number in the answer 'no digits'"
    assert match_answer("7", "seven", "numeric").reason == "reference 'seven' is not a number"
    assert match_answer("no marker", "42", "regex", pattern=MARKER).reason == (
        "no final answer matching /####\\s*(.+)/ in the answer"
    )


def test_bad_calls_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown scoring method 'fuzzy'"):
        match_answer("a", "a", "fuzzy")
    with pytest.raises(ValueError, match="needs a pattern"):
        match_answer("a", "a", "regex")
    with pytest.raises(ValueError, match="needs a pattern"):
        answers_match(["a"], ["a"], "regex")
    with pytest.raises(ValueError, match="invalid regex"):
        answers_match(["a"], ["a"], "regex", pattern="(")
    with pytest.raises(ValueError, match="2 predictions for 1 references"):
        answers_match(["a", "b"], ["a"], "exact")
