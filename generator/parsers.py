"""Output parsers: how a stage turns one teacher completion into values.

- `text`: the completion itself (stripped); empty text is a failure.
- `json`: a JSON value; with `schema`, the engine enforces it (vLLM structured outputs) and the
  parsed value is validated against it again (a completion cut by `max_tokens` is still caught).
- `list`: the completion split into items (by default one per line, "1." / "-" numbering removed);
  each item becomes its own sample and its own branch for the next stage.
- `score`: a judge's number in [min, max]: the number after "score", else the first number in the
  text. With `structured: true` the engine may only emit an integer in range.

A failure is never dropped: the pipeline keeps the raw text and the reason on the sample.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

_NUMBERING = re.compile(r"^\s*(?:(?:\d+|[a-zA-Z])[.)]|[-*•+]|\(\d+\)|Q\d+[.:)]?)\s+")
_SCORE_AFTER_LABEL = re.compile(r"(?i)\b(?:score|rating|grade)\b\W{0,5}?(-?\d+(?:\.\d+)?)")
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


class TextParser(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["text"] = "text"
    strip: bool = True


class JsonParser(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, serialize_by_alias=True)

    type: Literal["json"]
    json_schema: dict[str, Any] | None = Field(
        default=None, alias="schema", description="JSON schema the engine enforces (structured outputs)."
    )

    @field_validator("json_schema")
    @classmethod
    def _schema_is_valid(cls, schema: dict[str, Any] | None) -> dict[str, Any] | None:
        if schema is not None:
            import jsonschema

            try:
                jsonschema.validators.validator_for(schema).check_schema(schema)
            except jsonschema.SchemaError as error:
                raise ValueError(f"not a valid JSON schema: {error.message}") from None
        return schema


class ListParser(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["list"]
    separator: str = Field(default="\n", min_length=1)
    strip_numbering: bool = True
    max_items: int | None = Field(default=None, ge=1, description="Keep at most this many items.")


class ScoreParser(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["score"]
    min: float = 1
    max: float = 10
    structured: bool = Field(
        default=False, description="Ask the engine for an integer in [min, max] only (structured outputs)."
    )

    @model_validator(mode="after")
    def _range(self) -> ScoreParser:
        if self.min >= self.max:
            raise ValueError("max: must be greater than min")
        return self


Parser = Annotated[TextParser | JsonParser | ListParser | ScoreParser, Field(discriminator="type")]
PARSER_TYPES = ("text", "json", "list", "score")


@dataclass
class ParseOutcome:
    """Values parsed from one completion (several for a list), or the reason parsing failed."""

    values: list[Any] = field(default_factory=list)
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def engine_json_schema(parser: TextParser | JsonParser | ListParser | ScoreParser) -> dict[str, Any] | None:
    """The JSON schema the engine should enforce for this parser, if any."""
    if isinstance(parser, JsonParser):
        return parser.json_schema
    if isinstance(parser, ScoreParser) and parser.structured:
        integral = float(parser.min).is_integer() and float(parser.max).is_integer()
        if integral:
            return {"type": "integer", "minimum": int(parser.min), "maximum": int(parser.max)}
        return {"type": "number", "minimum": parser.min, "maximum": parser.max}
    return None


def parse_completion(parser: TextParser | JsonParser | ListParser | ScoreParser, text: str) -> ParseOutcome:
    if isinstance(parser, TextParser):
        value = text.strip() if parser.strip else text
        return ParseOutcome([value]) if value.strip() else ParseOutcome(error="empty completion")
    if isinstance(parser, JsonParser):
        return _parse_json(parser, text)
    if isinstance(parser, ListParser):
        return _parse_list(parser, text)
    return _parse_score(parser, text)


def _parse_json(parser: JsonParser, text: str) -> ParseOutcome:
    try:
        # strict=False: control characters inside strings are common in model output and harmless.
        value = json.loads(text, strict=False)
    except json.JSONDecodeError as error:
        return ParseOutcome(error=f"invalid JSON at char {error.pos}: {error.msg}")
    if parser.json_schema is not None:
        import jsonschema

        problem = jsonschema.exceptions.best_match(
            jsonschema.validators.validator_for(parser.json_schema)(parser.json_schema).iter_errors(value)
        )
        if problem is not None:
            where = "/".join(str(part) for part in problem.absolute_path) or "(root)"
            return ParseOutcome(error=f"JSON does not match the schema at {where}: {problem.message}")
    return ParseOutcome([value])


def _parse_list(parser: ListParser, text: str) -> ParseOutcome:
    items = []
    for piece in text.split(parser.separator):
        item = _NUMBERING.sub("", piece, count=1) if parser.strip_numbering else piece
        item = item.strip()
        if item:
            items.append(item)
    if not items:
        return ParseOutcome(error="no items in the completion")
    return ParseOutcome(items[: parser.max_items] if parser.max_items else items)


def _parse_score(parser: ScoreParser, text: str) -> ParseOutcome:
    labelled = _SCORE_AFTER_LABEL.search(text)
    match = labelled or _NUMBER.search(text)
    if match is None:
        return ParseOutcome(error="no number in the judge's completion")
    number_text = match.group(1) if labelled else match.group(0)
    number = float(number_text)
    if not math.isfinite(number) or not parser.min <= number <= parser.max:
        return ParseOutcome(error=f"score {number_text} outside [{parser.min:g}, {parser.max:g}]")
    return ParseOutcome([int(number) if number.is_integer() else number])


def answer_text(value: Any) -> str:
    """How a parsed value is stored as an answer: text as is, numbers plainly, the rest as JSON."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, int | float):
        return f"{value:g}" if isinstance(value, float) else str(value)
    return json.dumps(value, ensure_ascii=False)
