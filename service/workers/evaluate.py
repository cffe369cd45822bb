"""Student vs teacher: greedy answers of each model on the same items, scored by the filters' verifier.

Each model is served in turn by the generator's engine (vLLM for model folders), asked every item
greedily (temperature 0), and closed before the next one loads, so only one model is in memory at a
time. Answers are scored with the verifier filter's own comparison (`ReferenceVerifier`: exact,
normalised, numeric within tolerance, or a regex-extracted final answer), so "correct" means the
same thing at evaluation as when the teacher's labels were filtered.

The train worker runs `evaluate_models` in a child process (`train_child evaluate`); the pieces are
plain functions so a CLI can score models the same way.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import delete, insert
from sqlalchemy.orm import Session

from generator.engines.base import GenerationRequest, SamplingSpec, TeacherConfig
from service.db.models import EvaluationItem
from service.filters.builtin.verifier import ReferenceVerifier
from service.filters.records import sample_record
from service.filters.specs import VerifierParams

# Items per engine call: bounded memory on large evaluation sets, still one big batch for vLLM.
GENERATION_BATCH = 1024
EXAMPLES = 5
# Rows per INSERT when the per-item results are stored (up to max_items = 100,000 per run).
ITEM_INSERT_BATCH = 1000
# The names the run's table uses for the three models, in the order they are scored.
TEACHER, STUDENT_BEFORE, STUDENT_AFTER = "teacher", "student_before", "student_after"


class EvalSetError(ValueError):
    """The evaluation items cannot be read (missing file, field or split)."""


class ModelLoadError(ValueError):
    """A model the evaluation needs cannot be served (bad folder, unsupported shape): retrying cannot help."""


@dataclass(frozen=True)
class EvalItem:
    """One held-out question with its reference answer."""

    question: str
    reference: str
    system: str | None = None

    def messages(self) -> list[dict[str, str]]:
        """The chat prompt, exactly as the prompt–completion export renders a row's prompt."""
        system = [{"role": "system", "content": self.system}] if self.system else []
        return [*system, {"role": "user", "content": self.question}]


@dataclass
class ModelScore:
    """How one model did on the items (answers kept for the examples and the predictions file)."""

    name: str
    model: str
    items: int
    correct: int
    accuracy: float
    empty_answers: int
    items_digest: str
    answers: list[str] = field(default_factory=list, repr=False)
    verdicts: list[bool] = field(default_factory=list, repr=False)

    def summary(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "items": self.items,
            "correct": self.correct,
            "accuracy": self.accuracy,
            "empty_answers": self.empty_answers,
        }

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ModelScore:
        return cls(**{key: data[key] for key in cls.__dataclass_fields__ if key in data})


def items_digest(items: Sequence[EvalItem]) -> str:
    """Identifies an item list: scores are reused on resume only for the very same items."""
    digest = hashlib.sha256()
    for item in items:
        digest.update(json.dumps(asdict(item), sort_keys=True, ensure_ascii=False).encode() + b"\n")
    return digest.hexdigest()


def write_items(path: Path, items: Iterable[EvalItem]) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    with path.open("w", encoding="utf-8") as handle:
        for item in items:
            handle.write(json.dumps(asdict(item), ensure_ascii=False) + "\n")
            count += 1
    return count


def read_items(path: Path) -> list[EvalItem]:
    with path.open(encoding="utf-8") as handle:
        return [EvalItem(**json.loads(line)) for line in handle if line.strip()]


def load_eval_set(
    path: str,
    *,
    fmt: str = "auto",
    split: str | None = None,
    question_field: str = "question",
    answer_field: str = "answer",
    system_field: str | None = None,
    limit: int | None = None,
) -> list[EvalItem]:
    """Items from a JSONL/JSON, Parquet or HF `save_to_disk` file of question/answer rows.

    Raises:
        EvalSetError: the file, split or a field is missing (one line naming it).
    """
    items: list[EvalItem] = []
    for number, row in enumerate(_eval_rows(Path(path), fmt, split)):
        if limit is not None and len(items) >= limit:
            break
        missing = [f for f in (question_field, answer_field) if row.get(f) is None]
        if missing:
            raise EvalSetError(f"{path} row {number}: no {' or '.join(repr(f) for f in missing)} field")
        system = row.get(system_field) if system_field else None
        items.append(
            EvalItem(
                question=str(row[question_field]),
                reference=_text(row[answer_field]),
                system=str(system) if system else None,
            )
        )
    if not items:
        raise EvalSetError(f"{path}: no rows")
    return items


def _eval_rows(path: Path, fmt: str, split: str | None) -> Iterator[dict[str, Any]]:
    if not path.exists():
        raise EvalSetError(f"no such file or folder: {path}")
    if fmt == "auto":
        fmt = "hf" if path.is_dir() else "parquet" if path.suffix.lower() in {".parquet", ".pq"} else "jsonl"
    if fmt == "parquet":
        import pyarrow.parquet as pq

        for batch in pq.ParquetFile(path).iter_batches(batch_size=4096):
            yield from batch.to_pylist()
    elif fmt == "hf":
        from datasets import DatasetDict, load_from_disk

        loaded = load_from_disk(str(path))
        if isinstance(loaded, DatasetDict):
            name = split or ("test" if "test" in loaded else next(iter(loaded)))
            if name not in loaded:
                raise EvalSetError(f"{path} has no split {name!r} (splits: {', '.join(loaded)})")
            loaded = loaded[name]
        yield from loaded
    else:
        text = path.read_text(encoding="utf-8")
        if path.suffix.lower() == ".json" and text.lstrip().startswith("["):
            yield from json.loads(text)
            return
        for number, line in enumerate(text.splitlines(), start=1):
            if line.strip():
                try:
                    yield json.loads(line)
                except json.JSONDecodeError as exc:
                    raise EvalSetError(f"{path}:{number}: not JSON ({exc.msg})") from exc


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def score_answers(answers: Sequence[str], items: Sequence[EvalItem], params: VerifierParams) -> list[bool]:
    """Whether each answer matches its item's reference, by the verifier filter's comparison."""
    verifier = ReferenceVerifier(params.model_copy(update={"reference_field": "reference"}))
    return [
        verifier.judge(
            sample_record(index, item.question, answer, inputs={"reference": item.reference})
        ).passed
        for index, (answer, item) in enumerate(zip(answers, items, strict=True))
    ]


def generate_answers(engine: Any, items: Sequence[EvalItem], max_new_tokens: int) -> list[str]:
    """Greedy answers of `engine` (a generator Engine) to every item, in item order."""
    answers: list[str] = []
    sampling = SamplingSpec(temperature=0.0, top_p=1.0, max_tokens=max_new_tokens, n=1)
    for start in range(0, len(items), GENERATION_BATCH):
        batch = items[start : start + GENERATION_BATCH]
        results = engine.generate([GenerationRequest(item.messages(), sampling) for item in batch])
        answers.extend(result.completions[0].text.strip() if result.completions else "" for result in results)
    return answers


def score_model(
    name: str,
    config: TeacherConfig,
    items: Sequence[EvalItem],
    params: VerifierParams,
    max_new_tokens: int,
) -> ModelScore:
    """Load the model, answer every item greedily, close it, and score the answers."""
    from generator.engines import build_engine

    try:
        engine = build_engine(config)
    except (MemoryError, KeyboardInterrupt):
        raise
    except Exception as exc:
        if "out of memory" in str(exc).lower():
            raise  # may pass once the accelerator is free: a retry can help
        raise ModelLoadError(
            f"{name} model {config.model!r} failed to load: {type(exc).__name__}: {exc}"
        ) from exc
    try:
        answers = generate_answers(engine, items, max_new_tokens)
    finally:
        engine.close()
    verdicts = score_answers(answers, items, params)
    correct = sum(verdicts)
    return ModelScore(
        name=name,
        model=config.model,
        items=len(items),
        correct=correct,
        accuracy=round(correct / len(items), 6) if items else 0.0,
        empty_answers=sum(1 for answer in answers if not answer),
        items_digest=items_digest(items),
        answers=answers,
        verdicts=verdicts,
    )


def evaluate_models(
    models: Sequence[tuple[str, TeacherConfig]],
    items: Sequence[EvalItem],
    params: VerifierParams,
    max_new_tokens: int,
    *,
    done: Mapping[str, ModelScore] | None = None,
    on_scored: Callable[[ModelScore], None] | None = None,
) -> dict[str, ModelScore]:
    """Score each (name, engine config) in turn on the same items; `done` scores (same items) are reused."""
    digest = items_digest(items)
    scores: dict[str, ModelScore] = {}
    for name, config in models:
        earlier = (done or {}).get(name)
        if earlier is not None and earlier.items_digest == digest and earlier.model == config.model:
            scores[name] = earlier
            continue
        score = score_model(name, config, items, params, max_new_tokens)
        scores[name] = score
        if on_scored is not None:
            on_scored(score)
    return scores


def comparison_table(
    items: Sequence[EvalItem], params: VerifierParams, source: str, scores: Mapping[str, ModelScore]
) -> dict[str, Any]:
    """The run's `results`: every model's score on the same items, the after/teacher ratio, a few examples."""
    teacher, after = scores.get(TEACHER), scores.get(STUDENT_AFTER)
    ratio = None
    if teacher is not None and after is not None and teacher.accuracy > 0:
        ratio = round(after.accuracy / teacher.accuracy, 6)
    examples = []
    for index, item in enumerate(items[:EXAMPLES]):
        example: dict[str, Any] = {"question": item.question, "reference": item.reference}
        for name, score in scores.items():
            if index < len(score.answers):
                example[name] = score.answers[index]
                example[f"{name}_correct"] = score.verdicts[index]
        examples.append(example)
    scorer = params.mode + (f" /{params.pattern}/" if params.pattern else "")
    return {
        "items": len(items),
        "scorer": scorer,
        "source": source,
        TEACHER: teacher.summary() if teacher else None,
        STUDENT_BEFORE: scores[STUDENT_BEFORE].summary() if STUDENT_BEFORE in scores else None,
        STUDENT_AFTER: after.summary() if after else None,
        "ratio": ratio,
        "examples": examples,
    }


def evaluation_item_rows(
    run_id: int, items: Sequence[EvalItem], scores: Mapping[str, ModelScore]
) -> list[dict[str, Any]]:
    """One `evaluation_item` row per item: each scored model's answer and verdict (null if unscored)."""
    rows: list[dict[str, Any]] = []
    for index, item in enumerate(items):
        row: dict[str, Any] = {
            "training_run_id": run_id,
            "item_index": index,
            "question": item.question,
            "reference": item.reference,
            "system": item.system,
        }
        for name in (TEACHER, STUDENT_BEFORE, STUDENT_AFTER):
            score = scores.get(name)
            scored = score is not None and index < len(score.answers)
            row[f"{name}_answer"] = score.answers[index] if score is not None and scored else None
            row[f"{name}_correct"] = score.verdicts[index] if score is not None and scored else None
        rows.append(row)
    return rows


def replace_evaluation_items(session: Session, run_id: int, rows: Sequence[Mapping[str, Any]]) -> int:
    """Store the run's per-item results in place of any earlier ones (call it inside the fenced write)."""
    session.execute(delete(EvaluationItem).where(EvaluationItem.training_run_id == run_id))
    for start in range(0, len(rows), ITEM_INSERT_BATCH):
        session.execute(insert(EvaluationItem), list(rows[start : start + ITEM_INSERT_BATCH]))
    return len(rows)


def read_scores(path: Path) -> dict[str, ModelScore]:
    """Scores appended to `path` as JSON lines (the last line of a name wins; a cut line is skipped)."""
    scores: dict[str, ModelScore] = {}
    if not path.exists():
        return scores
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            score = ModelScore.from_json(json.loads(line))
        except (json.JSONDecodeError, TypeError, KeyError):
            continue
        scores[score.name] = score
    return scores


def append_score(path: Path, score: ModelScore) -> None:
    with path.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(score.to_json(), ensure_ascii=False) + "\n")
