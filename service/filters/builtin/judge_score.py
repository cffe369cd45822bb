"""judge_score: the score a judge stage wrote must lie within [min, max]."""

from __future__ import annotations

from service.filters.builtin.base import PerSampleFilter
from service.filters.records import SampleRecord, Verdict
from service.filters.specs import JudgeScoreParams


def _number(value: float) -> str:
    return f"{value:g}"


class JudgeScoreThreshold(PerSampleFilter):
    def __init__(self, params: JudgeScoreParams) -> None:
        self.params = params

    def judge(self, sample: SampleRecord) -> Verdict:
        p = self.params
        score = sample["score"]
        if score is None:
            return Verdict(sample["id"], p.missing == "pass", "no judge score")
        shown = f"score {_number(score)}"
        if p.min is not None and score < p.min:
            return Verdict(sample["id"], False, f"{shown} < min {_number(p.min)}", score)
        if p.max is not None and score > p.max:
            return Verdict(sample["id"], False, f"{shown} > max {_number(p.max)}", score)
        low = "" if p.min is None else _number(p.min)
        high = "" if p.max is None else _number(p.max)
        return Verdict(sample["id"], True, f"{shown} within [{low}, {high}]", score)
