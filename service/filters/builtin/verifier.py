"""verifier: the answer must agree with the reference the seed row carries (`inputs[...]`).

The comparison is `answers.match`'s, the same one the evaluation scores students with.
"""

from __future__ import annotations

import re
from typing import Any

from answers.match import match_answer
from service.filters.builtin.base import PerSampleFilter
from service.filters.records import SampleRecord, Verdict
from service.filters.specs import VerifierParams


def reference_value(inputs: dict[str, Any], field: str) -> Any:
    """`inputs[field]`, or a dotted path into nested dicts ("meta.answer"); None when absent."""
    if field in inputs:
        return inputs[field]
    value: Any = inputs
    for part in field.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


class ReferenceVerifier(PerSampleFilter):
    def __init__(self, params: VerifierParams) -> None:
        self.params = params
        self.pattern = re.compile(params.pattern) if params.pattern else None

    def judge(self, sample: SampleRecord) -> Verdict:
        p = self.params
        sid = sample["id"]
        reference = reference_value(sample["inputs"], p.reference_field)
        if reference is None:
            return Verdict(sid, False, f"no reference in inputs[{p.reference_field!r}]")
        if sample["answer"] is None:
            return Verdict(sid, False, "no answer (the output parser failed)")
        match = match_answer(
            sample["answer"],
            reference,
            p.mode,
            pattern=self.pattern,
            tolerance=p.tolerance,
            relative_tolerance=p.relative_tolerance,
        )
        return Verdict(sid, match.correct, match.reason)
