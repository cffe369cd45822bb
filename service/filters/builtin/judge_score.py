"""judge_score: a judge's score must lie within [min, max].

The score is the one a judge stage wrote on the sample, or — when the filter runs a judge pass —
the one the `scorer` returns for it now (the worker builds that from a teacher; this module only
applies the threshold).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from service.filters.builtin.base import PerSampleFilter
from service.filters.records import SampleRecord, Verdict
from service.filters.specs import JudgeScoreParams

# Samples → per sample (score, why there is none): the judge pass of a filter run.
JudgeScorer = Callable[[Sequence[SampleRecord]], list[tuple[float | None, str | None]]]


def _number(value: float) -> str:
    return f"{value:g}"


class JudgeScoreThreshold(PerSampleFilter):
    def __init__(self, params: JudgeScoreParams, scorer: JudgeScorer | None = None) -> None:
        self.params = params
        self.scorer = scorer

    def evaluate(self, samples: Sequence[SampleRecord]) -> list[Verdict]:
        if self.scorer is None:
            return [self.judge(sample) for sample in samples]
        scored = self.scorer(samples)
        return [
            self._verdict(sample["id"], score, problem or "the judge gave no score", "judge score")
            for sample, (score, problem) in zip(samples, scored, strict=True)
        ]

    def judge(self, sample: SampleRecord) -> Verdict:
        return self._verdict(sample["id"], sample["score"], "no judge score", "score")

    def _verdict(self, sample_id: int, score: float | None, missing: str, label: str) -> Verdict:
        p = self.params
        if score is None:
            return Verdict(sample_id, p.missing == "pass", missing)
        shown = f"{label} {_number(score)}"
        if p.min is not None and score < p.min:
            return Verdict(sample_id, False, f"{shown} < min {_number(p.min)}", score)
        if p.max is not None and score > p.max:
            return Verdict(sample_id, False, f"{shown} > max {_number(p.max)}", score)
        low = "" if p.min is None else _number(p.min)
        high = "" if p.max is None else _number(p.max)
        return Verdict(sample_id, True, f"{shown} within [{low}, {high}]", score)
