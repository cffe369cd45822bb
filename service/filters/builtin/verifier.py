"""verifier: the answer must agree with the reference the seed row carries (`inputs[...]`)."""

from __future__ import annotations

import math
import re
from typing import Any

from service.filters.builtin.base import PerSampleFilter
from service.filters.normalization import normalize_text, preview
from service.filters.records import SampleRecord, Verdict
from service.filters.specs import VerifierParams

# Integers with optional thousands separators, decimals, exponents; the sign is kept.
_NUMBER = re.compile(r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:[eE][-+]?\d+)?|[-+]?\.\d+")
_PLAIN_NUMBER = re.compile(rf"^\s*(?:{_NUMBER.pattern})\s*$")


def last_number(text: str) -> float | None:
    """The last number written in `text` ("so the total is $1,234.50." → 1234.5), or None."""
    matches = _NUMBER.findall(text)
    if not matches:
        return None
    return float(matches[-1].replace(",", ""))


def format_number(value: float) -> str:
    return str(int(value)) if value.is_integer() and abs(value) < 1e15 else f"{value:g}"


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

    def _extract(self, answer: str) -> str | None:
        if self.pattern is None:
            return answer
        matches = list(self.pattern.finditer(answer))
        if not matches:
            return None
        last = matches[-1]
        return last.group(1) if last.groups() else last.group(0)

    def judge(self, sample: SampleRecord) -> Verdict:
        p = self.params
        sid = sample["id"]
        reference = reference_value(sample["inputs"], p.reference_field)
        if reference is None:
            return Verdict(sid, False, f"no reference in inputs[{p.reference_field!r}]")
        if sample["answer"] is None:
            return Verdict(sid, False, "no answer (the output parser failed)")
        answer = self._extract(sample["answer"])
        if answer is None:
            assert p.pattern is not None
            return Verdict(sid, False, f"no final answer matching /{preview(p.pattern, 60)}/ in the answer")
        if p.mode == "numeric" or (
            p.mode == "regex" and _PLAIN_NUMBER.match(answer) and _PLAIN_NUMBER.match(str(reference))
        ):
            return self._numeric(sid, answer, reference)
        if p.mode == "exact":
            same = answer.strip() == str(reference).strip()
        else:  # a reference that normalizes to nothing ("?!") must match as written
            expected = normalize_text(str(reference))
            same = (
                normalize_text(answer) == expected if expected else answer.strip() == str(reference).strip()
            )
        shown_answer, shown_reference = preview(answer.strip(), 60), preview(str(reference).strip(), 60)
        relation = "=" if same else "≠"
        return Verdict(sid, same, f"answer {shown_answer!r} {relation} reference {shown_reference!r}")

    def _numeric(self, sid: int, answer: str, reference: Any) -> Verdict:
        p = self.params
        got = last_number(answer)
        if got is None:
            return Verdict(sid, False, f"no number in the answer {preview(answer, 40)!r}")
        want = float(reference) if isinstance(reference, int | float) else last_number(str(reference))
        if want is None:
            return Verdict(sid, False, f"reference {preview(str(reference), 40)!r} is not a number")
        same = math.isclose(got, want, abs_tol=p.tolerance, rel_tol=p.relative_tolerance)
        relation = "=" if same else "≠"
        return Verdict(sid, same, f"answer {format_number(got)} {relation} reference {format_number(want)}")
