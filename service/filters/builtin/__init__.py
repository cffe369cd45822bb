"""The built-in filters, built from their specs (`service.filters.specs`)."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Sequence

from service.filters.builtin.agreement import SiblingAnswers, TeacherAgreement, answers_from
from service.filters.builtin.base import SampleFilter
from service.filters.builtin.decontamination import Decontamination
from service.filters.builtin.exact_dedup import ExactDuplicates
from service.filters.builtin.json_validity import JsonValidity
from service.filters.builtin.judge_score import JudgeScorer, JudgeScoreThreshold
from service.filters.builtin.length import LengthCheck
from service.filters.builtin.near_dup import NearDuplicates
from service.filters.builtin.pattern import RegexCheck
from service.filters.builtin.verifier import ReferenceVerifier
from service.filters.eval_sets import read_eval_set
from service.filters.records import SampleRecord, Verdict
from service.filters.specs import (
    AgreementFilter,
    DecontaminationFilter,
    ExactDedupFilter,
    FilterSpec,
    JsonSchemaFilter,
    JudgeScoreFilter,
    LengthFilter,
    NearDupFilter,
    RegexFilter,
    VerifierFilter,
    sample_order,
)

# (dataset version ids, field) → (label, text) of those versions' rows, for near_dup's `against_datasets`.
ReferenceTexts = Callable[[Sequence[int], str], Iterable[tuple[str, str]]]

__all__ = ["JudgeScorer", "ReferenceTexts", "SampleFilter", "SiblingAnswers", "apply_filter", "build_filter"]


def build_filter(
    spec: FilterSpec,
    reference_texts: ReferenceTexts | None = None,
    judge_scorer: JudgeScorer | None = None,
    sibling_answers: SiblingAnswers | None = None,
) -> SampleFilter:
    """The filter object for `spec` (eval sets and reference rows are read here, once).

    Args:
        spec: the filter's spec.
        reference_texts: rows of earlier dataset versions (near_dup with `against_datasets`).
        judge_scorer: the judge pass (judge_score with `judge`), built by the worker from a teacher.
        sibling_answers: every teacher's answer to a chunk's items (agreement), read from the database.
    """
    if isinstance(spec, LengthFilter):
        return LengthCheck(spec.params)
    if isinstance(spec, RegexFilter):
        return RegexCheck(spec.params)
    if isinstance(spec, ExactDedupFilter):
        return ExactDuplicates(spec.params)
    if isinstance(spec, NearDupFilter):
        references: Iterable[tuple[str, str]] = ()
        if spec.params.against_datasets:
            if reference_texts is None:
                raise ValueError("near_dup against_datasets needs a source of dataset rows")
            references = reference_texts(spec.params.against_datasets, spec.params.field)
        return NearDuplicates(spec.params, references)
    if isinstance(spec, VerifierFilter):
        return ReferenceVerifier(spec.params)
    if isinstance(spec, JsonSchemaFilter):
        return JsonValidity(spec.params)
    if isinstance(spec, JudgeScoreFilter):
        if spec.params.judge is not None and judge_scorer is None:
            raise ValueError("judge_score with a judge pass needs a teacher to score with")
        return JudgeScoreThreshold(spec.params, judge_scorer if spec.params.judge is not None else None)
    if isinstance(spec, DecontaminationFilter):
        items = itertools.chain.from_iterable(read_eval_set(s) for s in spec.params.eval_sets)
        return Decontamination(spec.params, items)
    if isinstance(spec, AgreementFilter):
        if sibling_answers is None:
            raise ValueError("agreement needs a source of the teachers' answers")
        return TeacherAgreement(spec.params, sibling_answers)
    raise TypeError(f"unknown filter spec {type(spec).__name__}")


def ordered(samples: Iterable[SampleRecord], order: str) -> list[SampleRecord]:
    """`samples` in a run's order: by id, or by judge score (highest first, unscored last) then id."""
    if order == "highest_score":
        return sorted(samples, key=lambda s: (s["score"] is None, -(s["score"] or 0.0), s["id"]))
    return sorted(samples, key=lambda s: s["id"])


def apply_filter(
    spec: FilterSpec, samples: Iterable[SampleRecord], reference_texts: ReferenceTexts | None = None
) -> dict[int, Verdict]:
    """Every sample's verdict (by sample id), as a filter run would store it: the pure entry point.

    agreement compares the given samples with each other (every teacher's answer must be among them).
    """
    in_order = ordered(samples, sample_order(spec))
    verdicts = build_filter(spec, reference_texts, sibling_answers=answers_from(in_order)).evaluate(in_order)
    return {v.sample_id: v for v in verdicts}
