"""bench/distill_tasks.py's tasks: references right, splits disjoint, verifier and scorer agreeing with them.

Fast (no model): the bench's goals only mean something if every reference is the true answer and
the verifier keeps exactly the right answers.
"""

from __future__ import annotations

import importlib.util
import random
import sys
from pathlib import Path
from types import ModuleType

import pytest

from generator.recipe import compile_stages, load_recipe
from service.filters.builtin.verifier import ReferenceVerifier
from service.filters.records import sample_record
from service.filters.specs import VerifierParams

BENCH = Path(__file__).resolve().parents[2] / "bench" / "distill_tasks.py"
ROWS = 500


def load_bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("distill_tasks", BENCH)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


bench = load_bench()
TASK_NAMES = sorted(bench.TASKS)


def rows_of(name: str, count: int = ROWS) -> list[dict[str, object]]:
    rng = random.Random(1)
    return [bench.TASKS[name].make_row(rng) for _ in range(count)]


def verdicts(name: str, pairs: list[tuple[str, dict[str, object]]]) -> list[bool]:
    verifier = ReferenceVerifier(VerifierParams(**bench.verifier_params(bench.TASKS[name])))
    return [
        verifier.judge(sample_record(i, str(row["question"]), answer, inputs=dict(row))).passed
        for i, (answer, row) in enumerate(pairs)
    ]


def test_there_are_three_tasks_of_different_shapes() -> None:
    assert TASK_NAMES == ["addition", "extraction", "reversal"]
    assert {task.verifier_mode for task in bench.TASKS.values()} == {"numeric", "exact"}


def test_addition_references_are_the_sums() -> None:
    for row in rows_of("addition"):
        a, b = row["a"], row["b"]
        assert isinstance(a, int)
        assert isinstance(b, int)
        assert 0 <= a < 100
        assert 0 <= b < 100
        assert row["question"] == f"What is {a}+{b}?"
        assert row["reference"] == str(a + b)


def test_reversal_references_are_the_letters_backwards() -> None:
    for row in rows_of("reversal"):
        word = str(row["word"])
        assert 3 <= len(word) <= 5
        assert word.isalpha()
        assert word.islower()
        assert row["question"] == "Reverse: " + " ".join(word)
        assert str(row["reference"]).split(" ") == list(word)[::-1]


def test_extraction_references_are_the_asked_field_of_the_sentence() -> None:
    shapes = set()
    for row in rows_of("extraction"):
        question = str(row["question"])
        asked = str(row["field"])
        assert question.endswith(f" What is the {asked}?")
        sentence = question.removesuffix(f" What is the {asked}?")
        for name in bench.EXTRACTION_FIELDS:
            assert str(row[name]) in sentence
        assert row["reference"] == row[asked]
        assert row["name"] in bench.NAMES
        assert row["city"] in bench.CITIES
        assert 18 <= int(str(row["age"])) <= 89
        shapes.add(next(i for i, s in enumerate(bench.SENTENCES) if s.format(**row) == sentence))
    assert shapes == set(range(len(bench.SENTENCES))), "every sentence shape is drawn"


@pytest.mark.parametrize("name", TASK_NAMES)
def test_the_verifier_keeps_the_reference_and_drops_wrong_answers(name: str) -> None:
    rows = rows_of(name, 200)
    assert all(verdicts(name, [(str(row["reference"]), row) for row in rows]))
    wrong = {
        "addition": lambda row: str(int(str(row["reference"])) + 1),
        "reversal": lambda row: " ".join(str(row["word"])) + " x",
        "extraction": lambda row: str(row["reference"]) + "s",
    }[name]
    assert not any(verdicts(name, [(wrong(row), row) for row in rows]))


def test_reversal_is_checked_exactly_so_an_unreversed_answer_fails() -> None:
    row = {"word": "abc", "question": "Reverse: a b c", "reference": "c b a"}
    assert verdicts("reversal", [("c b a", row), ("a b c", row), ("c b", row)]) == [True, False, False]


@pytest.mark.parametrize("name", TASK_NAMES)
def test_the_evaluation_scorer_agrees_with_the_verifier(name: str) -> None:
    rows = rows_of(name, 100)
    answers = [str(row["reference"]) if i % 3 else str(row["reference"]) + "9" for i, row in enumerate(rows)]
    scored = bench.answers_match(bench.TASKS[name], answers, [str(row["reference"]) for row in rows])
    assert scored == verdicts(name, list(zip(answers, rows, strict=True)))
    assert scored == [bool(i % 3) for i in range(len(rows))]


@pytest.mark.parametrize("name", TASK_NAMES)
def test_splits_are_disjoint_deterministic_and_sized(name: str) -> None:
    task = bench.TASKS[name]
    split = bench.split_task(task, truth=300, fresh=200, held_out=50, validation=40)
    parts = [split.held_out, split.validation, split.truth, split.fresh]
    assert [len(part) for part in parts] == [50, 40, 300, 200]
    questions = [str(row["question"]) for part in parts for row in part]
    assert len(set(questions)) == len(questions), "no question in two sets"
    again = bench.split_task(task, truth=300, fresh=200, held_out=50, validation=40)
    assert again == split
    bigger = bench.split_task(task, truth=600, fresh=10, held_out=50, validation=40)
    assert bigger.held_out == split.held_out
    assert bigger.validation == split.validation


@pytest.mark.parametrize("name", TASK_NAMES)
def test_the_recipe_asks_the_rows_question(name: str) -> None:
    task = bench.TASKS[name]
    rows = rows_of(name, 5)
    spec = bench.recipe_for(task, rows)
    stage = compile_stages(load_recipe(spec), list(rows[0]))[0]
    for row in rows:
        messages, question = stage.render(row)
        assert messages == bench.prompt_of(row)
        assert question == row["question"]
        assert bench.prompt_completion(row)["completion"][0]["content"] == row["reference"]


def test_the_noisy_teacher_is_the_checkpoint_nearest_the_aim() -> None:
    kept: float | None = None
    chosen = []
    for accuracy in [0.0, 0.3, 0.72, 0.86, 0.79, 0.97]:
        if bench.nearer_to(0.8, kept, accuracy):
            kept = accuracy
            chosen.append(accuracy)
    assert chosen == [0.0, 0.3, 0.72, 0.86, 0.79]
    assert not bench.nearer_to(0.5, 0.25, 0.75), "on a tie the earlier (more under-trained) one stays"
