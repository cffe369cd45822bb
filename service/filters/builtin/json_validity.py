"""json_schema: the answer must be valid JSON, and valid against a JSON Schema when one is given."""

from __future__ import annotations

import json
from typing import Any

import jsonschema

from service.filters.builtin.base import PerSampleFilter
from service.filters.normalization import preview
from service.filters.records import SampleRecord, Verdict
from service.filters.specs import JsonSchemaParams


class JsonValidity(PerSampleFilter):
    def __init__(self, params: JsonSchemaParams) -> None:
        self.schema = params.json_schema
        self.validator: Any = None
        if self.schema is not None:
            self.validator = jsonschema.validators.validator_for(self.schema)(self.schema)

    def judge(self, sample: SampleRecord) -> Verdict:
        text = sample["answer"]
        if text is None:
            return Verdict(sample["id"], False, "no answer (the output parser failed)")
        try:
            value = json.loads(text, strict=False)
        except json.JSONDecodeError as exc:
            where = f"line {exc.lineno} column {exc.colno}"
            return Verdict(sample["id"], False, f"answer is not valid JSON: {exc.msg} at {where}")
        if self.validator is None:
            return Verdict(sample["id"], True, "valid JSON")
        errors = sorted(self.validator.iter_errors(value), key=lambda e: list(e.absolute_path))
        if not errors:
            return Verdict(sample["id"], True, "valid JSON matching the schema")
        first = errors[0]
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        reason = f"schema violation at {first.json_path}: {preview(first.message, 120)}{more}"
        return Verdict(sample["id"], False, reason)
