"""Recipes: the documented YAML/JSON format that says what to ask the teacher, over which seed rows.

```yaml
name: self-instruct               # required
description: ...                  # optional
seed: 0                           # drives seed-row shuffling/sampling and every per-request seed
seeds: {values: {topic: [physics, cooking]}}          # see generator.seeds
stages:
  - name: questions               # identifier; later templates see this stage's output under it
    messages:                     # chat messages; `content` is a Jinja2 template
      - {role: system, content: "You write exam questions."}
      - {role: user, content: "Write 3 questions about {{ topic }}, one per line."}
    sampling: {temperature: 0.8, top_p: 0.95, max_tokens: 256, n: 1, seed: 0, stop: ["\\n\\n"]}
    parser: {type: list, max_items: 3}        # text | json (schema) | list | score
  - name: answer
    messages: [{role: user, content: "{{ questions }}"}]
    question: "{{ questions }}"   # what the student is asked (default: the last user message)
  - name: judge
    judges: answer                # its score lands on the `answer` sample
    messages: [{role: user, content: "Question: {{ questions }}\\nAnswer: {{ answer }}\\nScore 1-10:"}]
    parser: {type: score, min: 1, max: 10}
answer_stage: answer              # optional: default, the last stage that is not a judge
max_prompt_chars: 100000          # optional: a longer rendered message fails its item (kept, with the reason)
```

Stages chain per branch: a template sees the seed row's columns plus each earlier stage's parsed
value on the same branch. A list parser, and n > 1, fan out: every item/completion is a branch.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import keyword
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from generator.errors import RecipeError
from generator.parsers import PARSER_TYPES, Parser, ScoreParser, TextParser
from generator.seeds import SeedSpec, seed_columns
from generator.soft_labels import MAX_TOP_LOGPROBS, packed_size
from generator.templates import (
    DEFAULT_MAX_RENDERED_CHARS,
    TEMPLATE_GLOBALS,
    PromptTemplate,
    RenderLimits,
    compile_template,
)

__all__ = [
    "CompiledStage",
    "Message",
    "Recipe",
    "RecipeError",
    "Sampling",
    "Stage",
    "compile_stages",
    "estimated_soft_label_bytes",
    "load_recipe",
    "validate_recipe",
]

_STAGE_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
# Names a stage may not take: Jinja literals/operators and template-scope names.
_RESERVED_NAMES = frozenset(
    {"true", "false", "none", "True", "False", "None", "loop", "self", "super", "caller", "varargs", "kwargs"}
    | set(keyword.kwlist)
    | TEMPLATE_GLOBALS
)
MAX_N = 128
# A prompt longer than this is not a prompt any teacher's context holds.
MAX_PROMPT_CHARS = 10_000_000


class Message(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Literal["system", "user", "assistant"]
    content: str = Field(description="Jinja2 template.")


class Sampling(BaseModel):
    """Sampling parameters of a stage. `seed` is an offset mixed into every derived per-request seed."""

    model_config = ConfigDict(extra="forbid")

    temperature: float = Field(default=1.0, ge=0)
    top_p: float = Field(default=1.0, gt=0, le=1)
    top_k: int | None = Field(default=None, ge=1)
    max_tokens: int = Field(default=256, ge=1)
    min_tokens: int = Field(default=0, ge=0)
    n: int = Field(default=1, ge=1, le=MAX_N)
    seed: int = 0
    stop: list[str] | None = None
    ignore_eos: bool = False
    logprobs: int | None = Field(
        default=None,
        ge=1,
        le=MAX_TOP_LOGPROBS,
        description="Keep the teacher's top-k log-probabilities of every generated token (soft labels).",
    )

    @field_validator("stop", mode="before")
    @classmethod
    def _stop_as_list(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @model_validator(mode="after")
    def _min_le_max(self) -> Sampling:
        if self.min_tokens > self.max_tokens:
            raise ValueError("min_tokens: must be <= max_tokens")
        return self


class Stage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    messages: list[Message] = Field(min_length=1)
    sampling: Sampling = Field(default_factory=Sampling)
    parser: Parser = Field(default_factory=TextParser)
    question: str | None = Field(
        default=None, description="Template of what the student is asked; default: the last user message."
    )
    judges: str | None = Field(default=None, description="Name of an earlier stage this judge scores.")

    @field_validator("name")
    @classmethod
    def _name_is_identifier(cls, name: str) -> str:
        if not _STAGE_NAME.match(name):
            raise ValueError("must start with a letter and contain only letters, digits and _")
        if name in _RESERVED_NAMES:
            raise ValueError(f"'{name}' is reserved in templates; choose another name")
        return name

    @field_validator("messages")
    @classmethod
    def _ends_with_user(cls, messages: list[Message]) -> list[Message]:
        if messages[-1].role != "user":
            raise ValueError("the last message must have role 'user'")
        return messages

    @property
    def is_judge(self) -> bool:
        return self.judges is not None


class Recipe(BaseModel):
    """A validated recipe (see the module docstring for the format)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, serialize_by_alias=True)

    name: str = Field(min_length=1)
    description: str = ""
    seed: int = 0
    seeds: SeedSpec
    stages: list[Stage] = Field(min_length=1)
    answer_stage_name: str | None = Field(
        default=None,
        alias="answer_stage",
        description="Stage whose samples are the training pairs; default: the last non-judge stage.",
    )
    max_prompt_chars: int = Field(
        default=DEFAULT_MAX_RENDERED_CHARS,
        ge=1,
        le=MAX_PROMPT_CHARS,
        description="The longest a rendered message (or question) may be; longer fails that item.",
    )

    @model_validator(mode="after")
    def _stages_fit_together(self) -> Recipe:
        seen: dict[str, Stage] = {}
        for index, stage in enumerate(self.stages):
            if stage.name in seen:
                raise ValueError(f"stages[{index}].name: duplicate stage name '{stage.name}'")
            if stage.judges is not None:
                target = seen.get(stage.judges)
                if target is None:
                    raise ValueError(
                        f"stages[{index}].judges: '{stage.judges}' is not an earlier stage"
                        + _suggestion(stage.judges, list(seen))
                    )
                if target.is_judge:
                    raise ValueError(f"stages[{index}].judges: '{stage.judges}' is itself a judge")
                if not isinstance(stage.parser, ScoreParser):
                    raise ValueError(f"stages[{index}].parser.type: a judge stage needs the 'score' parser")
            seen[stage.name] = stage
        if all(stage.is_judge for stage in self.stages):
            raise ValueError("stages: at least one stage must not be a judge")
        if self.answer_stage_name is not None:
            chosen = seen.get(self.answer_stage_name)
            if chosen is None:
                raise ValueError(
                    f"answer_stage: no stage named '{self.answer_stage_name}'"
                    + _suggestion(self.answer_stage_name, list(seen))
                )
            if chosen.is_judge:
                raise ValueError(f"answer_stage: '{self.answer_stage_name}' is a judge stage")
        return self

    @property
    def answer_stage(self) -> str:
        """Name of the stage whose samples are the training pairs."""
        if self.answer_stage_name is not None:
            return self.answer_stage_name
        return [stage.name for stage in self.stages if not stage.is_judge][-1]

    def stage(self, name: str) -> Stage:
        for stage in self.stages:
            if stage.name == name:
                return stage
        raise KeyError(name)


@dataclass
class CompiledStage:
    """A stage with its templates compiled and checked against the variables it will see."""

    index: int
    stage: Stage
    messages: Sequence[tuple[str, PromptTemplate]]
    question: PromptTemplate | None
    template_sha256: str

    @cached_property
    def sampling_params(self) -> dict[str, Any]:
        """The stage's sampling parameters as plain data (without the seed offset), for provenance."""
        # `logprobs` only where asked, so samples without soft labels keep their provenance as before.
        exclude = {"seed"} if self.stage.sampling.logprobs is not None else {"seed", "logprobs"}
        return self.stage.sampling.model_dump(exclude=exclude)

    def render(self, context: Mapping[str, Any]) -> tuple[list[dict[str, str]], str]:
        """Chat messages and the student's question for one branch. Raises TemplateError."""
        messages = [{"role": role, "content": template.render(context)} for role, template in self.messages]
        if self.question is not None:
            question = self.question.render(context)
        else:
            question = next(m["content"] for m in reversed(messages) if m["role"] == "user")
        return messages, question


def load_recipe(source: str | Path | Mapping[str, Any]) -> Recipe:
    """Read and validate a recipe from a YAML/JSON file path or an already-parsed mapping.

    Raises:
        RecipeError: unreadable file, bad YAML/JSON, unknown keys, bad values (one line, with path).
    """
    if isinstance(source, Mapping):
        data: Any = source
    else:
        path = Path(source)
        if not path.is_file():
            raise RecipeError(f"recipe file not found: {path}")
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            raise RecipeError(f"cannot read recipe {path}: {error}") from None
        data = _parse_text(text, path.name)
    if not isinstance(data, Mapping):
        raise RecipeError("recipe: expected a mapping (name, seeds, stages, ...) at the top level")
    try:
        return Recipe.model_validate(dict(data))
    except ValidationError as error:
        raise RecipeError(describe_validation_error(error)) from None


def validate_recipe(recipe: Recipe, base_dir: Path | None = None) -> None:
    """Check everything that can be checked before running: seed columns and every template.

    Args:
        recipe: a loaded recipe.
        base_dir: folder that relative seed paths resolve against (the recipe file's folder).

    Raises:
        RecipeError: seed data unreadable, or a stage name that collides with a seed column.
        TemplateError: a template has a syntax error, an undefined variable, or a refused construct.
    """
    columns = seed_columns(recipe.seeds, base_dir)
    compile_stages(recipe, columns)


def compile_stages(recipe: Recipe, columns: Sequence[str]) -> list[CompiledStage]:
    """Compile every stage's templates; stage i sees `columns` plus the names of stages before it."""
    column_set = set(columns)
    limits = RenderLimits(max_chars=recipe.max_prompt_chars)
    compiled: list[CompiledStage] = []
    earlier: list[str] = []
    for index, stage in enumerate(recipe.stages):
        if stage.name in column_set:
            raise RecipeError(f"stages[{index}].name: '{stage.name}' is also a seed column; rename the stage")
        variables = column_set | set(earlier)
        messages = [
            (
                message.role,
                compile_template(
                    message.content, name=f"stages[{index}].messages[{j}]", variables=variables, limits=limits
                ),
            )
            for j, message in enumerate(stage.messages)
        ]
        question = None
        if stage.question is not None:
            question = compile_template(
                stage.question, name=f"stages[{index}].question", variables=variables, limits=limits
            )
        sources = {"messages": [[m.role, m.content] for m in stage.messages], "question": stage.question}
        digest = hashlib.sha256(json.dumps(sources, sort_keys=True).encode()).hexdigest()
        compiled.append(CompiledStage(index, stage, messages, question, digest))
        earlier.append(stage.name)
    return compiled


def _parse_text(text: str, filename: str) -> Any:
    try:
        return yaml.safe_load(text)  # YAML is a superset of JSON: one parser for both
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise RecipeError(f"{filename}{where}: invalid YAML: {error.problem or error}") from None
    except yaml.YAMLError as error:
        raise RecipeError(f"{filename}: invalid YAML: {error}") from None


def _suggestion(word: str, options: Sequence[str]) -> str:
    close = difflib.get_close_matches(word, options, n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _location(loc: Sequence[int | str]) -> str:
    text = ""
    for position, part in enumerate(loc):
        if isinstance(part, int):
            text += f"[{part}]"
            continue
        # Discriminated unions insert the tag ("list", "json", ...) after "parser": not a real key.
        if position > 0 and loc[position - 1] == "parser" and part in PARSER_TYPES:
            continue
        text += f".{part}" if text else part
    return text


_RELATIVE_PATH = re.compile(r"^([A-Za-z_][\w.\[\]]*): (.+)$", re.DOTALL)


# A line stays readable: this many problems are spelled out, the rest counted.
_PROBLEMS_SHOWN = 5


def describe_validation_error(error: ValidationError) -> str:
    """One line naming every problem in a pydantic error, unknown keys first (a typo'd key is
    usually why a required one is "missing"): "stages[0].mesages: unknown key (did you mean
    'messages'?); stages[0].messages: required"."""
    problems = sorted(error.errors(), key=lambda problem: problem["type"] != "extra_forbidden")
    shown = [_describe_problem(error, problem) for problem in problems[:_PROBLEMS_SHOWN]]
    more = len(problems) - len(shown)
    suffix = f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
    return "; ".join(shown) + suffix


def _describe_problem(error: ValidationError, problem: Any) -> str:
    """`path: reason` for one problem of `error`."""
    path = _location(problem["loc"])
    kind = problem["type"]
    ctx = problem.get("ctx") or {}
    reason: str
    if kind == "extra_forbidden":
        key = str(problem["loc"][-1])
        known = _known_keys(error, problem["loc"][:-1])
        reason = "unknown key" + _suggestion(key, known)
    elif kind == "missing":
        reason = "required"
    elif kind in ("greater_than_equal", "greater_than", "less_than_equal", "less_than"):
        operator = {
            "greater_than_equal": ">=",
            "greater_than": ">",
            "less_than_equal": "<=",
            "less_than": "<",
        }
        limit = next(iter(ctx.values()))
        shown = f"{limit:g}" if isinstance(limit, float) else str(limit)
        reason = f"must be {operator[kind]} {shown}"
    elif kind in ("union_tag_not_found", "union_tag_invalid"):
        path = f"{path}.type" if path else "type"
        given = ctx.get("tag")
        reason = f"'{given}' is not one of " if given else "required, one of "
        reason += ", ".join(PARSER_TYPES)
    elif kind == "value_error":
        message = str(ctx.get("error", problem["msg"]))
        relative = _RELATIVE_PATH.match(message)
        if relative:
            inner, reason = relative.groups()
            path = f"{path}{'' if inner.startswith('[') or not path else '.'}{inner}"
        else:
            reason = message
    else:
        message = problem["msg"]
        reason = message[0].lower() + message[1:]
    return f"{path or 'recipe'}: {reason}"


def _known_keys(error: ValidationError, parent: Sequence[int | str]) -> list[str]:
    """Field names valid at `parent`, for "did you mean" hints on unknown keys."""
    model: Any = Recipe
    for part in parent:
        if isinstance(part, int):
            continue
        if part in PARSER_TYPES:
            from generator import parsers

            model = {
                "text": parsers.TextParser,
                "json": parsers.JsonParser,
                "list": parsers.ListParser,
                "score": parsers.ScoreParser,
            }[part]
            continue
        field = getattr(model, "model_fields", {}).get(part)
        if field is None:
            field = next((f for f in getattr(model, "model_fields", {}).values() if f.alias == part), None)
        if field is None:
            return []
        model = _model_in(field.annotation)
        if model is None:
            return []
    fields = getattr(model, "model_fields", {})
    return [f.alias or name for name, f in fields.items()]


def _model_in(annotation: Any) -> Any:
    """The pydantic model inside an annotation such as `list[Stage]` or `Sampling | None`."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for argument in getattr(annotation, "__args__", ()):
        found = _model_in(argument)
        if found is not None:
            return found
    return None


def estimated_soft_label_bytes(recipe: Recipe, items: int) -> int:
    """Upper bound of the soft-label bytes a job of `items` seed items stores (0 when none is asked).

    Every stage with `sampling.logprobs: k` adds, per request, `n` packed samples of `max_tokens`
    tokens (`generator.soft_labels.packed_size`: 8 + max_tokens x (4 + 6k) bytes each), times its
    requests per item: earlier non-judge stages fan out by their `n` and a list parser's
    `max_items` (a list without `max_items` is counted as one entry, so the bound is then low).
    A list parser's entries all keep their completion's labels, so they are counted per entry.
    """
    branches = 1
    total = 0
    for stage in recipe.stages:
        sampling = stage.sampling
        max_items = getattr(stage.parser, "max_items", None) if stage.parser.type == "list" else None
        samples_per_completion = max_items or 1
        if sampling.logprobs is not None:
            total += (
                branches
                * sampling.n
                * samples_per_completion
                * packed_size(sampling.max_tokens, sampling.logprobs)
            )
        if not stage.is_judge:
            branches *= sampling.n * samples_per_completion
    return items * total
