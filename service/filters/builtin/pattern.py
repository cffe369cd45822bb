"""regex: a field must match (include) or must not match (exclude) a regular expression."""

from __future__ import annotations

from service.filters.builtin.base import PerSampleFilter, field_label
from service.filters.normalization import preview
from service.filters.records import SampleRecord, Verdict, field_text
from service.filters.specs import RegexParams


class RegexCheck(PerSampleFilter):
    def __init__(self, params: RegexParams) -> None:
        self.params = params
        self.pattern = params.compiled()

    def judge(self, sample: SampleRecord) -> Verdict:
        p = self.params
        match = self.pattern.search(field_text(sample, p.field))
        shown = f"/{preview(p.pattern, 80)}/"
        what = field_label(p.field)
        if match is None:
            return Verdict(sample["id"], p.mode == "exclude", f"{what} does not match {shown}")
        found = f"{what} matches {shown} at {preview(match.group(0), 40)!r}"
        return Verdict(sample["id"], p.mode == "include", found)
