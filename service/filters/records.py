"""What a filter reads (a sample as a plain dict) and what it returns (a verdict with a reason)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypedDict


class SampleRecord(TypedDict):
    """A sample as filters see it: the current text (review edits applied) and the judge's score.

    Attributes:
        id: the sample's id (verdict reasons name other samples by it).
        job_id: the job that produced it.
        question: current question text, coalesce(edited_question, question).
        answer: current answer text, coalesce(edited_answer, answer); None when parsing failed.
        raw_text: the teacher's completion as generated.
        parsed: the output parser's value (a dict for JSON stages).
        score: the score a judge stage wrote, if any.
        inputs: the seed row's variables (e.g. a reference answer).
        item_index, stage, sample_index: where in its job the sample sits (its teachers' answers to
            the same item share these).
        teacher_index: which of the job's teachers wrote it; job_teachers: how many the job has.
        teacher_answer: the answer as the teacher wrote it (before any review edit).
    """

    id: int
    job_id: int
    item_index: int
    stage: str
    sample_index: int
    teacher_index: int
    job_teachers: int
    teacher_answer: str | None
    question: str
    answer: str | None
    raw_text: str
    parsed: Any
    score: float | None
    inputs: dict[str, Any]


@dataclass(frozen=True)
class Verdict:
    """One filter's judgement of one sample: pass/fail, a human-readable reason, a score if any."""

    sample_id: int
    passed: bool
    reason: str
    score: float | None = None


def sample_record(
    sample_id: int,
    question: str,
    answer: str | None,
    *,
    job_id: int = 0,
    item_index: int | None = None,
    stage: str = "answer",
    sample_index: int = 0,
    teacher_index: int = 0,
    job_teachers: int = 1,
    raw_text: str | None = None,
    parsed: Any = None,
    score: float | None = None,
    inputs: dict[str, Any] | None = None,
) -> SampleRecord:
    """A SampleRecord with defaults for the fields a caller does not care about (tests, benches).

    Without an `item_index`, each sample is an item of its own (its id).
    """
    return SampleRecord(
        id=sample_id,
        job_id=job_id,
        item_index=sample_id if item_index is None else item_index,
        stage=stage,
        sample_index=sample_index,
        teacher_index=teacher_index,
        job_teachers=job_teachers,
        teacher_answer=answer,
        question=question,
        answer=answer,
        raw_text=raw_text if raw_text is not None else (answer or ""),
        parsed=parsed,
        score=score,
        inputs=inputs or {},
    )


# (job id, item index, stage, sample index): what a job's teachers each answer once.
ItemKey = tuple[int, int, str, int]


def item_key(sample: SampleRecord) -> ItemKey:
    return (sample["job_id"], sample["item_index"], sample["stage"], sample["sample_index"])


@dataclass(frozen=True)
class TeacherAnswer:
    """One teacher's answer to an item, as the teacher wrote it."""

    item: ItemKey
    teacher_index: int
    sample_id: int
    answer: str | None


def field_text(sample: SampleRecord, field: str) -> str:
    """The text of `field` ("question", "answer", "raw_text" or "question_and_answer")."""
    if field == "question":
        return sample["question"]
    if field == "answer":
        return sample["answer"] or ""
    if field == "raw_text":
        return sample["raw_text"]
    if field == "question_and_answer":
        return f"{sample['question']}\n{sample['answer'] or ''}"
    raise ValueError(f"unknown sample field {field!r}")
