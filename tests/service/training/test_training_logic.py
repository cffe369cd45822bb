"""Fast tests of the pure parts: progress/ETA arithmetic, scoring with the filters' verifier, eval sets."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from generator.engines.base import Completion, GenerationRequest, GenerationResult
from service.filters.specs import VerifierParams
from service.training.progress import compute_progress, phase_of, step_rate
from service.workers.evaluate import (
    STUDENT_AFTER,
    STUDENT_BEFORE,
    TEACHER,
    EvalItem,
    EvalSetError,
    ModelScore,
    append_score,
    comparison_table,
    generate_answers,
    items_digest,
    load_eval_set,
    read_scores,
    score_answers,
)
from trainer.run_folder import list_checkpoints

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def test_step_rate_uses_only_the_current_attempt() -> None:
    # Attempt 1 logged steps 2..8 at t=0..3; the resumed attempt re-logged 6 and 8 at t=100, 101.
    rows = [(2, 0.0), (4, 1.0), (6, 100.0), (8, 101.0)]
    assert step_rate(rows) == pytest.approx(6 / 101)
    assert step_rate(rows, since=50.0) == pytest.approx(2.0)
    assert step_rate([(2, 0.0)]) is None
    assert step_rate([(2, 5.0), (4, 5.0)]) is None


def test_progress_eta_fraction_and_phases() -> None:
    started = NOW - timedelta(seconds=100)
    running = compute_progress(
        status="running",
        phase="training",
        step=50,
        total_steps=150,
        tokens_per_second=1234.0,
        started_at=started,
        finished_at=None,
        recent_steps=[(40, 1000.0), (50, 1010.0)],
        now=NOW,
    )
    assert running.fraction == pytest.approx(1 / 3)
    assert running.steps_per_second == pytest.approx(1.0)
    assert running.eta_seconds == pytest.approx(100.0)
    assert running.elapsed_seconds == pytest.approx(100.0)
    # One step logged so far: the attempt's average rate (start-up included) gives the first ETA.
    first = compute_progress(
        status="running",
        phase="training",
        step=18,
        total_steps=50,
        tokens_per_second=None,
        started_at=started,
        finished_at=None,
        recent_steps=[(10, 1000.0)],
        attempt_started_at=NOW - timedelta(seconds=36),
        now=NOW,
    )
    assert first.steps_per_second == pytest.approx(0.5)
    assert first.eta_seconds == pytest.approx(64.0)
    evaluating = compute_progress(
        status="running",
        phase="evaluating",
        step=150,
        total_steps=150,
        tokens_per_second=None,
        started_at=started,
        finished_at=None,
        recent_steps=[],
        now=NOW,
    )
    assert evaluating.eta_seconds is None
    assert evaluating.fraction == 1.0
    done = compute_progress(
        status="succeeded",
        phase="evaluating",
        step=150,
        total_steps=150,
        tokens_per_second=None,
        started_at=started,
        finished_at=NOW,
        recent_steps=[],
        now=NOW + timedelta(hours=1),
    )
    assert (done.phase, done.eta_seconds, done.elapsed_seconds) == ("succeeded", 0.0, 100.0)
    assert phase_of(None, 0) is None
    assert phase_of("queued", 1) == "queued"
    assert phase_of("running", 0) == "training"
    assert phase_of("running", 1) == "evaluating"


ITEMS = [
    EvalItem("What is 2+3?", "5"),
    EvalItem("Capital of France?", "Paris"),
    EvalItem("Say hi", "Hello, World"),
]


@pytest.mark.parametrize(
    ("mode", "answers", "expected", "extra"),
    [
        ("exact", ["5", "paris", "Hello, World"], [True, False, True], {}),
        ("normalized", ["5", "paris.", "hello world"], [True, True, True], {}),
        ("numeric", ["The sum is 5.0", "Paris", ""], [True, False, False], {}),
        (
            "regex",
            ["so #### 5", "#### Paris", "#### hello world!"],
            [True, True, True],
            {"pattern": r"####\s*(.+)"},
        ),
    ],
)
def test_scoring_uses_the_verifier_filters_comparison(
    mode: str, answers: list[str], expected: list[bool], extra: dict[str, Any]
) -> None:
    assert score_answers(answers, ITEMS, VerifierParams(mode=mode, **extra)) == expected


def score(name: str, correct: list[bool], answers: list[str] | None = None) -> ModelScore:
    return ModelScore(
        name=name,
        model=f"/models/{name}",
        items=len(correct),
        correct=sum(correct),
        accuracy=sum(correct) / len(correct),
        empty_answers=0,
        items_digest=items_digest(ITEMS),
        answers=answers or ["x"] * len(correct),
        verdicts=correct,
    )


def test_comparison_table_ratio_and_examples(tmp_path: Path) -> None:
    scores = {
        TEACHER: score(TEACHER, [True, True, False]),
        STUDENT_BEFORE: score(STUDENT_BEFORE, [False, False, False]),
        STUDENT_AFTER: score(STUDENT_AFTER, [True, False, False], ["5", "Lyon", "hey"]),
    }
    table = comparison_table(ITEMS, VerifierParams(mode="exact"), "test split", scores)
    assert table["items"] == 3
    assert table["ratio"] == pytest.approx(0.5)
    assert table[TEACHER] == {
        "model": "/models/teacher",
        "items": 3,
        "correct": 2,
        "accuracy": 2 / 3,
        "empty_answers": 0,
    }
    assert table["examples"][1] == {
        "question": "Capital of France?",
        "reference": "Paris",
        "teacher": "x",
        "teacher_correct": True,
        "student_before": "x",
        "student_before_correct": False,
        "student_after": "Lyon",
        "student_after_correct": False,
    }
    partial = comparison_table(
        ITEMS, VerifierParams(mode="regex", pattern="(.+)"), "s", {TEACHER: scores[TEACHER]}
    )
    assert partial["ratio"] is None
    assert partial[STUDENT_AFTER] is None
    assert partial["scorer"] == "regex /(.+)/"

    path = tmp_path / "scores.jsonl"
    for value in scores.values():
        append_score(path, value)
    with path.open("a") as handle:
        handle.write('{"name": "cut by a cra')
    assert read_scores(path) == scores


class ScriptedEngine:
    """Answers each prompt with its last user message reversed (no model)."""

    def __init__(self) -> None:
        self.requests: list[GenerationRequest] = []

    def generate(self, requests: list[GenerationRequest]) -> list[GenerationResult]:
        self.requests.extend(requests)
        return [
            GenerationResult([Completion(f" {r.messages[-1]['content'][::-1]} ", 3, "stop")], 5, 0.0)
            if r.messages[-1]["content"]
            else GenerationResult([], 0, 0.0, error="empty")
            for r in requests
        ]


def test_generation_is_greedy_with_the_items_chat_prompt() -> None:
    engine = ScriptedEngine()
    items = [EvalItem("abc", "cba", system="Be brief."), EvalItem("", "x")]
    assert generate_answers(engine, items, max_new_tokens=7) == ["cba", ""]
    first = engine.requests[0]
    assert first.messages == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "abc"}]
    assert (first.sampling.temperature, first.sampling.max_tokens, first.sampling.n) == (0.0, 7, 1)


def test_eval_sets_jsonl_parquet_and_errors(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    jsonl = tmp_path / "eval.jsonl"
    jsonl.write_text("".join(json.dumps({"q": f"q{i}", "a": i, "sys": "s"}) + "\n" for i in range(5)))
    items = load_eval_set(str(jsonl), question_field="q", answer_field="a", system_field="sys", limit=3)
    assert items == [EvalItem("q0", "0", "s"), EvalItem("q1", "1", "s"), EvalItem("q2", "2", "s")]
    parquet = tmp_path / "eval.parquet"
    pq.write_table(pa.table({"question": ["x"], "answer": ["y"]}), parquet)
    assert load_eval_set(str(parquet)) == [EvalItem("x", "y")]
    with pytest.raises(EvalSetError, match="row 0: no 'answer' field"):
        load_eval_set(str(jsonl), question_field="q")
    with pytest.raises(EvalSetError, match="no such file"):
        load_eval_set(str(tmp_path / "missing.jsonl"))
    (tmp_path / "bad.jsonl").write_text("{not json\n")
    with pytest.raises(EvalSetError, match=r"bad\.jsonl:1: not JSON"):
        load_eval_set(str(tmp_path / "bad.jsonl"))


def test_only_complete_checkpoints_count(tmp_path: Path) -> None:
    for step, complete in ((10, True), (20, True), (30, False)):
        folder = tmp_path / f"checkpoint-{step}"
        folder.mkdir()
        if complete:
            (folder / "trainer_state.json").write_text("{}")
    (tmp_path / "checkpoint-x").mkdir()
    assert [p.name for p in list_checkpoints(tmp_path)] == ["checkpoint-10", "checkpoint-20"]
    assert list_checkpoints(tmp_path / "nothing") == []


def test_the_api_validates_hyperparameters_with_the_trainers_declaration() -> None:
    from pydantic import ValidationError

    from service.training.schemas import TrainingRunCreate
    from trainer.spec import Hyperparameters

    assert TrainingRunCreate.model_fields["hyperparameters"].annotation is Hyperparameters
    bad_values: list[dict[str, Any]] = [
        {"max_steps": 0},
        {"warmup_ratio": 0.1, "warmup_steps": 5},
        {"lora_target_modules": []},
        {"lora_target_modules": [" "]},
        {"learning_rate": 2.0},
        {"lr_scheduler_type": "cyclic"},
    ]
    for bad in bad_values:
        with pytest.raises(ValidationError):
            TrainingRunCreate(dataset_id=1, student={"model": "m"}, hyperparameters=bad)


def test_api_scratch_shapes_follow_the_tiny_model_rules() -> None:
    import itertools
    from dataclasses import asdict, fields

    from pydantic import ValidationError

    from service.training.schemas import MIN_SCRATCH_VOCAB, ScratchShapes
    from trainer.tiny_model import MIN_VOCAB, TinyModelSpec

    assert MIN_SCRATCH_VOCAB == MIN_VOCAB
    assert set(ScratchShapes.model_fields) == {f.name for f in fields(TinyModelSpec)}
    assert ScratchShapes().model_dump() == asdict(TinyModelSpec())
    for layers, hidden, heads, vocab, position in itertools.product(
        (0, 1, 128, 129), (7, 8, 12, 64, 96), (0, 1, 2, 3, 4, 6), (259, 260, 512), (15, 16, 512)
    ):
        shapes: dict[str, Any] = {
            "layers": layers,
            "hidden": hidden,
            "heads": heads,
            "vocab": vocab,
            "max_position": position,
        }
        try:
            ScratchShapes(**shapes)
            api_ok = True
        except ValidationError:
            api_ok = False
        try:
            TinyModelSpec(**shapes)
            library_ok = True
        except ValueError:
            library_ok = False
        assert api_ok == library_ok, shapes


def test_run_detail_shows_the_training_outcome_beside_the_evaluation_table() -> None:
    from types import SimpleNamespace

    from service.training.schemas import TRAINING_KEY, TrainingRunDetail

    outcome = {"best_step": 40, "best_score": 0.9, "stopped": "plateau", "eval_share": 0.02}
    table = {"items": 3, "scorer": "exact", "source": "test split", "ratio": 0.5}

    def view(results: dict[str, Any] | None) -> Any:
        run = SimpleNamespace(
            id=1,
            status="succeeded",
            dataset_id=1,
            student={"model": "/m"},
            method="full",
            config={"method": "full"},
            evaluation={},
            step=60,
            total_steps=200,
            tokens_per_second=None,
            model_path="/out/final",
            output_dir="/out",
            error=None,
            created_by=None,
            created_at=NOW,
            started_at=NOW,
            finished_at=NOW,
            checkpoints=[],
            results=results,
        )
        return SimpleNamespace(
            run=run,
            dataset={"id": 1, "name": "d", "version": 1},
            attempts=1,
            last_error=None,
            phase="succeeded",
            recent_steps=[],
            attempt_started_at=None,
        )

    trained_only = TrainingRunDetail.model_validate(view({TRAINING_KEY: outcome})).model_dump(mode="json")
    assert trained_only["results"] is None, "no evaluation table yet"
    assert (trained_only["best_step"], trained_only["best_score"]) == (40, 0.9)
    assert trained_only["training"]["stopped"] == "plateau"
    both = TrainingRunDetail.model_validate(view({**table, TRAINING_KEY: outcome})).model_dump(mode="json")
    assert both["results"]["ratio"] == 0.5
    assert TRAINING_KEY not in both["results"]
    assert both["training"]["eval_share"] == 0.02
    nothing = TrainingRunDetail.model_validate(view(None)).model_dump(mode="json")
    assert (nothing["results"], nothing["training"], nothing["best_step"]) == (None, None, None)
