"""What a user asks a filter to do: one validated params model per built-in filter.

These models are the filters' documentation (their field descriptions become the OpenAPI text) and
their validation: a bad regex, an empty length range or an invalid JSON Schema is a 422 naming the
field when the run is submitted, never a failed run later. The API imports only this module; the
filter implementations in `builtin/` are built from these models inside workers.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

FILTER_TYPES = (
    "length",
    "regex",
    "exact_dedup",
    "near_dup",
    "verifier",
    "json_schema",
    "judge_score",
    "decontamination",
    "agreement",
)
FILTER_NAME_PATTERN = r"^[a-z0-9][a-z0-9_.-]{0,99}$"

TextField = Literal["question", "answer", "question_and_answer"]
KeepOrder = Literal["first_id", "highest_score"]


def _compiled_or_none(pattern: str | None) -> str | None:
    if pattern is not None:
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ValueError(f"invalid regular expression: {exc}") from exc
    return pattern


# A regular expression that extracts a final answer, checked when the spec is submitted.
AnswerPattern = Annotated[str | None, AfterValidator(_compiled_or_none)]


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LengthParams(_Params):
    """Keep samples whose text length lies within [min, max] (inclusive)."""

    field: TextField = Field(
        default="answer", description="Whose length: the question, the answer, or both together."
    )
    unit: Literal["chars", "tokens"] = Field(
        default="chars",
        description="Characters, or tokens: words and punctuation marks (regex `\\w+|[^\\w\\s]`) unless "
        "`tokenizer` names a tokenizer, whose token count is used instead.",
    )
    min: int | None = Field(default=None, ge=0, description="Smallest length kept.")
    max: int | None = Field(default=None, ge=0, description="Largest length kept.")
    tokenizer: str | None = Field(
        default=None,
        description="Path of a `tokenizer.json` (or a model folder holding one) to count tokens with; "
        "only with unit=tokens.",
    )

    @model_validator(mode="after")
    def _range(self) -> LengthParams:
        if self.min is None and self.max is None:
            raise ValueError("set min, max or both")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min}) is larger than max ({self.max})")
        if self.tokenizer is not None and self.unit != "tokens":
            raise ValueError("tokenizer only applies with unit=tokens")
        return self


class RegexParams(_Params):
    """Keep samples whose field matches (`include`) or does not match (`exclude`) a pattern."""

    pattern: str = Field(min_length=1, description="A Python regular expression, searched anywhere.")
    mode: Literal["include", "exclude"] = Field(
        default="exclude", description="include: must match to pass; exclude: must not match to pass."
    )
    field: Literal["question", "answer", "question_and_answer", "raw_text"] = "answer"
    ignore_case: bool = False
    multiline: bool = Field(default=False, description="`^`/`$` match at line breaks.")
    dotall: bool = Field(default=False, description="`.` matches line breaks too.")

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, pattern: str) -> str:
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ValueError(f"invalid regular expression: {exc}") from exc
        return pattern

    def compiled(self) -> re.Pattern[str]:
        flags = (
            (re.IGNORECASE if self.ignore_case else 0)
            | (re.MULTILINE if self.multiline else 0)
            | (re.DOTALL if self.dotall else 0)
        )
        return re.compile(self.pattern, flags)


class NormalizationParams(_Params):
    case: bool = Field(default=True, description="Ignore letter case.")
    whitespace: bool = Field(default=True, description="Collapse runs of whitespace.")
    punctuation: bool = Field(default=True, description="Ignore punctuation.")


class ExactDedupParams(_Params):
    """Fail every sample whose normalised text equals an earlier one's; the first of each is kept."""

    field: TextField = "question_and_answer"
    keep: KeepOrder = Field(
        default="first_id",
        description="Which copy passes: the lowest sample id, or the highest judge score (ties: lowest id).",
    )
    normalize: NormalizationParams = Field(default_factory=NormalizationParams)


class NearDupParams(_Params):
    """MinHash LSH near-duplicate detection (datasketch) within the selection and, optionally,
    against the rows of earlier dataset versions. The first sample of a cluster passes."""

    field: TextField = "question_and_answer"
    threshold: float = Field(
        default=0.8, gt=0, lt=1, description="Estimated Jaccard similarity at which two texts are duplicates."
    )
    shingle: Literal["char", "word"] = Field(
        default="char", description="Shingles are character k-grams or word k-grams of the normalised text."
    )
    shingle_size: int = Field(default=5, ge=1, le=64, description="k of the k-gram shingles.")
    num_perm: int = Field(
        default=128, ge=16, le=1024, description="MinHash permutations (precision vs cost)."
    )
    keep: KeepOrder = "first_id"
    against_datasets: list[Annotated[int, Field(ge=1, le=2**63 - 1)]] = Field(
        default_factory=list,
        max_length=100,
        description="Dataset version ids whose rows count as earlier copies (a sample similar to one fails).",
    )


class VerifierParams(_Params):
    """Compare the answer with a reference carried by the seed row (`inputs[reference_field]`).

    Modes: `exact` (identical after trimming), `normalized` (after normalisation), `numeric` (the last
    number of each, within tolerance), `regex` (the final answer is extracted with `pattern`, then
    compared normalised). With `pattern` set, the other modes compare the extracted text as well.
    """

    reference_field: str = Field(default="reference", min_length=1, description="Key in the sample's inputs.")
    mode: Literal["exact", "normalized", "numeric", "regex"] = "normalized"
    pattern: AnswerPattern = Field(
        default=None,
        description="Regex that extracts the final answer: group 1 (or the whole match) of the last match.",
    )
    tolerance: float = Field(default=1e-6, ge=0, description="numeric: allowed absolute difference.")
    relative_tolerance: float = Field(
        default=0.0, ge=0, description="numeric: allowed difference relative to the reference."
    )

    @model_validator(mode="after")
    def _pattern_for_regex(self) -> VerifierParams:
        if self.mode == "regex" and not self.pattern:
            raise ValueError("mode=regex needs a pattern")
        return self


class JsonSchemaParams(_Params):
    """The answer must be valid JSON and, when `schema` is given, valid against that JSON Schema."""

    json_schema: dict[str, Any] | None = Field(
        default=None, alias="schema", description="A JSON Schema (draft 2020-12 unless `$schema` says)."
    )

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    @field_validator("json_schema")
    @classmethod
    def _valid_schema(cls, schema: dict[str, Any] | None) -> dict[str, Any] | None:
        if schema is not None:
            import jsonschema

            try:
                jsonschema.validators.validator_for(schema).check_schema(schema)
            except jsonschema.SchemaError as exc:
                raise ValueError(f"not a valid JSON Schema: {exc.message}") from exc
        return schema


JUDGE_VARIABLES = ("question", "answer", "inputs")


class JudgeMessage(_Params):
    role: Literal["system", "user", "assistant"]
    content: str = Field(min_length=1, description="Jinja2 template over question, answer, inputs.")


class JudgePass(_Params):
    """Score every selected sample now with a teacher (a judge prompt), instead of reading the
    score a judge stage wrote. Runs in the filter worker; the score lands in the verdict."""

    teacher: dict[str, Any] = Field(description="A teacher config, as for jobs (model, engine, options).")
    messages: list[JudgeMessage] = Field(min_length=1, max_length=20)
    score_min: float = Field(default=1, description="Lowest score the judge may give.")
    score_max: float = Field(default=10, description="Highest score the judge may give.")
    structured: bool = Field(
        default=True,
        description="Constrain the reply to a number in [score_min, score_max] (structured outputs).",
    )
    temperature: float = Field(default=0.0, ge=0)
    max_tokens: int = Field(default=16, ge=1, le=4096)
    seed: int = Field(default=0, ge=0, description="Per-request seeds are seed + sample id.")

    @field_validator("teacher")
    @classmethod
    def _teacher(cls, teacher: dict[str, Any]) -> dict[str, Any]:
        from generator.engines.base import TeacherConfig

        return TeacherConfig.model_validate(teacher).model_dump(mode="json", exclude_defaults=True)

    @field_validator("messages")
    @classmethod
    def _templates(cls, messages: list[JudgeMessage]) -> list[JudgeMessage]:
        from generator.templates import TemplateError, compile_template

        if messages[-1].role != "user":
            raise ValueError("the last message must have role 'user'")
        for i, message in enumerate(messages):
            try:
                compile_template(message.content, name=f"messages[{i}]", variables=JUDGE_VARIABLES)
            except TemplateError as exc:
                raise ValueError(str(exc)) from exc
        return messages

    @model_validator(mode="after")
    def _range(self) -> JudgePass:
        if self.score_min >= self.score_max:
            raise ValueError("score_max must be greater than score_min")
        return self


class JudgeScoreParams(_Params):
    """Keep samples whose judge score lies within [min, max]: the score a judge stage wrote, or
    (with `judge`) the score a judge pass run by the filter gives now."""

    min: float | None = None
    max: float | None = None
    missing: Literal["fail", "pass"] = Field(
        default="fail", description="Verdict for samples without a score (or whose judge reply has none)."
    )
    judge: JudgePass | None = None

    @model_validator(mode="after")
    def _range(self) -> JudgeScoreParams:
        if self.min is None and self.max is None:
            raise ValueError("set min, max or both")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min}) is larger than max ({self.max})")
        return self


class EvalSetSpec(_Params):
    """An evaluation set on disk whose items must not leak into training data."""

    path: str = Field(
        min_length=1, description="A JSONL file, a Parquet file, or an HF `save_to_disk` folder."
    )
    format: Literal["auto", "jsonl", "parquet", "hf"] = Field(
        default="auto", description="auto: by suffix (.jsonl/.json, .parquet) or folder (hf)."
    )
    fields: list[str] = Field(
        default_factory=lambda: ["question"],
        min_length=1,
        description="Text columns of each item whose words make its n-grams.",
    )
    id_field: str | None = Field(default=None, description="Column naming an item; default: its row number.")
    split: str | None = Field(
        default=None, description="HF DatasetDict folders: the split to read (default all)."
    )
    name: str | None = Field(default=None, description="How reasons name the set; default the file name.")


class DecontaminationParams(_Params):
    """Fail samples that share a word n-gram (after normalisation) with an evaluation item.

    An item shorter than `n` words is matched as a whole (its full word sequence must appear).
    """

    eval_sets: list[EvalSetSpec] = Field(min_length=1, max_length=50)
    n: int = Field(default=13, ge=1, le=100, description="n of the word n-grams.")
    field: TextField = "question_and_answer"
    min_overlap: int = Field(
        default=1, ge=1, description="Shared n-grams with one item that make a sample fail."
    )


class AgreementParams(_Params):
    """Keep what a job's teachers agree on (jobs with `teachers`).

    Per item (with its stage and sample index), each teacher's answer as it wrote it is grouped
    with the others it matches by `mode`; the largest group is the majority answer (a tie goes to
    the group of the lowest teacher index). When at least `quorum` teachers are in it, the item
    agrees: `keep: agreeing` passes every sample of that group, `keep: majority` only its first
    (one sample per item). Samples outside the group, and every sample of an item below the
    quorum, fail with the count in the reason; the verdict's score is the share of teachers in the
    majority group.
    """

    mode: Literal["exact", "normalized", "numeric"] = Field(
        default="normalized",
        description="How two answers are the same (answers.match): exact text, normalised text (case, "
        "punctuation, articles, whitespace), or the last number within `tolerance`.",
    )
    pattern: AnswerPattern = Field(
        default=None,
        description="Regex that extracts the final answer before comparing: group 1 (or the whole match) "
        "of the last match.",
    )
    tolerance: float = Field(default=1e-6, ge=0, description="numeric: allowed absolute difference.")
    quorum: int | None = Field(
        default=None,
        ge=2,
        le=8,
        description="Teachers that must give the same answer; default every teacher of the job.",
    )
    keep: Literal["agreeing", "majority"] = Field(
        default="agreeing",
        description="agreeing: every sample in the majority group passes; majority: only the first "
        "(lowest teacher index), so an item yields one sample.",
    )


class _FilterSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(
        default=None,
        pattern=FILTER_NAME_PATTERN,
        description="Name its verdicts are stored under (default: the type). Re-running a filter of the same "
        "name replaces its verdicts.",
    )

    @property
    def verdict_name(self) -> str:
        name = self.name or getattr(self, "type")  # noqa: B009 - `type` is declared by each subclass
        assert isinstance(name, str)
        return name


class LengthFilter(_FilterSpec):
    type: Literal["length"]
    params: LengthParams


class RegexFilter(_FilterSpec):
    type: Literal["regex"]
    params: RegexParams


class ExactDedupFilter(_FilterSpec):
    type: Literal["exact_dedup"]
    params: ExactDedupParams = Field(default_factory=ExactDedupParams)


class NearDupFilter(_FilterSpec):
    type: Literal["near_dup"]
    params: NearDupParams = Field(default_factory=NearDupParams)


class VerifierFilter(_FilterSpec):
    type: Literal["verifier"]
    params: VerifierParams = Field(default_factory=VerifierParams)


class JsonSchemaFilter(_FilterSpec):
    type: Literal["json_schema"]
    params: JsonSchemaParams = Field(default_factory=JsonSchemaParams)


class JudgeScoreFilter(_FilterSpec):
    type: Literal["judge_score"]
    params: JudgeScoreParams


class DecontaminationFilter(_FilterSpec):
    type: Literal["decontamination"]
    params: DecontaminationParams


class AgreementFilter(_FilterSpec):
    type: Literal["agreement"]
    params: AgreementParams = Field(default_factory=AgreementParams)


FilterSpec = Annotated[
    LengthFilter
    | RegexFilter
    | ExactDedupFilter
    | NearDupFilter
    | VerifierFilter
    | JsonSchemaFilter
    | JudgeScoreFilter
    | DecontaminationFilter
    | AgreementFilter,
    Field(discriminator="type"),
]


def sample_order(spec: FilterSpec) -> KeepOrder:
    """The order a filter must see the selection in: stateful filters keep the first by their `keep`."""
    if isinstance(spec, ExactDedupFilter | NearDupFilter):
        return spec.params.keep
    return "first_id"
