"""What the demo runs: the recipe, the questions the teacher answers, and the held-out evaluation items.

Everything here is decided, and refused with one line, before any server starts.

The built-in task is 2-digit addition. The 10,000 pairs a+b (0 <= a, b < 100) are shuffled once:
the tiny teacher's ground truth and validation questions come from one end, the held-out evaluation
questions and the fresh questions the teacher labels from the other, so no evaluated question is
ever trained on, and the teacher's sets (hence its cache key) never depend on --items/--eval-items.
"""

from __future__ import annotations

import contextlib
import math
import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from service.cli import CliError
from service.cli.jobs import self_contained_spec

if TYPE_CHECKING:
    from generator.recipe import CompiledStage

DEFAULT_RECIPE = Path(__file__).resolve().parents[3] / "examples" / "demo" / "arithmetic.yaml"
REFERENCE_FIELD = "reference"

ADDITION_SEED = 0
OPERAND_RANGE = 100
TEACHER_ROWS = 4000
VALIDATION_ITEMS = 200
MAX_ADDITION_QUESTIONS = OPERAND_RANGE * OPERAND_RANGE - TEACHER_ROWS - VALIDATION_ITEMS
# A recipe's own seed rows: at most this share is held out for the evaluation.
MAX_HELD_OUT_SHARE = 0.2


@dataclass(frozen=True)
class AdditionQuestions:
    """Disjoint sets of (a, b) pairs (see the module docstring)."""

    held_out: list[tuple[int, int]]
    fresh: list[tuple[int, int]]
    truth: list[tuple[int, int]]
    validation: list[tuple[int, int]]


def addition_questions(items: int, eval_items: int) -> AdditionQuestions:
    """`eval_items` held-out and `items` fresh questions, disjoint from the teacher's."""
    if items + eval_items > MAX_ADDITION_QUESTIONS:
        raise CliError(
            f"--items + --eval-items must be at most {MAX_ADDITION_QUESTIONS:,} "
            f"(the 2-digit additions left after the teacher's {TEACHER_ROWS + VALIDATION_ITEMS:,}); "
            f"got {items:,} + {eval_items:,}"
        )
    pairs = [(a, b) for a in range(OPERAND_RANGE) for b in range(OPERAND_RANGE)]
    random.Random(ADDITION_SEED).shuffle(pairs)
    teacher_start = len(pairs) - TEACHER_ROWS - VALIDATION_ITEMS
    return AdditionQuestions(
        held_out=pairs[:eval_items],
        fresh=pairs[eval_items : eval_items + items],
        truth=pairs[teacher_start + VALIDATION_ITEMS :],
        validation=pairs[teacher_start : teacher_start + VALIDATION_ITEMS],
    )


def addition_row(a: int, b: int) -> dict[str, Any]:
    """A seed row of the arithmetic recipe: its operands and the reference the verifier checks."""
    return {"a": a, "b": b, REFERENCE_FIELD: str(a + b)}


@dataclass(frozen=True)
class EvalItem:
    """A question as the student sees it (system prompt and user turn), with its reference answer."""

    question: str
    answer: str
    system: str | None = None

    def messages(self) -> list[dict[str, str]]:
        system = [{"role": "system", "content": self.system}] if self.system else []
        return [*system, {"role": "user", "content": self.question}]

    def to_json(self) -> dict[str, str | None]:
        """A row of the evaluation set file (EvaluationSettings.eval_set: question, answer, system)."""
        return {"question": self.question, "answer": self.answer, "system": self.system}


@dataclass
class TeacherData:
    """Ground truth for the tiny addition teacher: prompt–completion rows and validation items."""

    rows: list[dict[str, Any]]
    validation: list[EvalItem]


@dataclass
class Plan:
    """The recipe, the job's questions and the evaluation items."""

    recipe_file: Path
    recipe_name: str
    job_recipe: dict[str, Any]  # the recipe document sent with the job, its seed rows inline
    limit: int | None  # the job's item limit, when the recipe keeps its own seeds
    items: int | None  # items the job generates, when known here
    addition: bool  # the built-in task
    verifier_mode: str | None  # None: the seed rows carry no reference, so there is no verifier
    system: str | None  # the recipe's system prompt: kept with every dataset row
    max_new_tokens: int
    eval_items: list[EvalItem]  # empty: evaluate on the dataset version's test split
    teacher_data: TeacherData | None  # set when the tiny teacher must be trained
    notes: list[str] = field(default_factory=list)
    # Extracts the final answer for the verifier and the evaluation alike (None: the whole answer).
    answer_pattern: str | None = None

    @property
    def scorer(self) -> str:
        """The evaluation compares answers as the verifier filter does."""
        return self.verifier_mode or "normalized"


def verifier_mode(references: Sequence[Any]) -> str:
    """numeric when every reference is a number (e.g. "46"), else the normalised text comparison."""

    def is_number(value: Any) -> bool:
        try:
            return math.isfinite(float(str(value).replace(",", "")))
        except ValueError:
            return False

    return "numeric" if references and all(is_number(ref) for ref in references) else "normalized"


def dataset_name(recipe_name: str) -> str:
    """A dataset name the API accepts ([A-Za-z0-9][A-Za-z0-9._-]*) made from a recipe's name."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "-", recipe_name).strip("-._") or "recipe"
    return f"demo-{cleaned}"[:200]


def render_item(stage: CompiledStage, row: Mapping[str, Any]) -> tuple[list[dict[str, str]], EvalItem]:
    """The stage's chat messages for a seed row, and what the student is asked about that row.

    Raises:
        TemplateError: the row does not fit the stage's templates.
    """
    messages, question = stage.render(row)
    system = next((m["content"] for m in messages if m["role"] == "system"), None)
    reference = row.get(REFERENCE_FIELD)
    return messages, EvalItem(
        question=question, answer="" if reference is None else str(reference), system=system
    )


def build_plan(
    recipe_file: Path | None,
    teacher: str | None,
    items: int,
    eval_items: int,
    validation_items: int,
    held_out_share: float = MAX_HELD_OUT_SHARE,
) -> Plan:
    """Read and check the recipe and choose the questions.

    The built-in addition task runs without --recipe, and without --teacher (the tiny teacher only
    knows addition, so a --recipe must then be templated over `a` and `b`). A recipe of the user's
    with --teacher keeps its own seed rows; when they carry a `reference` and the answer is the first
    stage, some rows are held out for the evaluation (at most `held_out_share` of them).

    Raises:
        CliError: a missing or invalid recipe, or more questions than there are (one line).
    """
    from generator.errors import RecipeError
    from generator.recipe import compile_stages, load_recipe
    from generator.templates import TemplateError

    path = recipe_file or DEFAULT_RECIPE
    if not path.is_file():
        raise CliError(f"recipe file not found: {path}")
    spec = self_contained_spec(path)  # validated, file seeds inlined as records
    recipe = load_recipe(spec)
    stage_index = next(i for i, stage in enumerate(recipe.stages) if stage.name == recipe.answer_stage)
    max_tokens = recipe.stages[stage_index].sampling.max_tokens
    if teacher is None or recipe_file is None:
        if stage_index != 0:
            raise CliError(
                f"{path}: without --teacher the demo trains a teacher for 2-digit addition, so the "
                "recipe's answer stage must be its first stage, templated over a and b "
                "(like examples/demo/arithmetic.yaml); give --teacher MODEL for other recipes"
            )
        try:
            stage = compile_stages(recipe, list(addition_row(0, 0)))[stage_index]
        except (RecipeError, TemplateError) as exc:
            raise CliError(
                f"{path}: without --teacher the recipe must be templated over a and b only "
                f"(the addition teacher's questions): {exc}"
            ) from exc
        return _addition_plan(
            path, recipe.name, spec, stage, teacher, items, eval_items, validation_items, max_tokens
        )
    return _recipe_plan(path, spec, recipe, stage_index, items, eval_items, max_tokens, held_out_share)


def _addition_plan(
    path: Path,
    name: str,
    spec: dict[str, Any],
    stage: CompiledStage,
    teacher: str | None,
    items: int,
    eval_items: int,
    validation_items: int,
    max_tokens: int,
) -> Plan:
    from generator.templates import TemplateError

    questions = addition_questions(items, eval_items)
    try:
        held_out = [render_item(stage, addition_row(a, b))[1] for a, b in questions.held_out]
        teacher_data = None
        if teacher is None:
            truth = [render_item(stage, addition_row(a, b)) for a, b in questions.truth]
            rows = [
                {"prompt": messages, "completion": [{"role": "assistant", "content": item.answer}]}
                for messages, item in truth
            ]
            validation = [
                render_item(stage, addition_row(a, b))[1] for a, b in questions.validation[:validation_items]
            ]
            teacher_data = TeacherData(rows=rows, validation=validation)
    except TemplateError as exc:
        raise CliError(f"{path}: the addition questions do not fit the recipe's templates: {exc}") from exc
    spec["seeds"] = {"records": [addition_row(a, b) for a, b in questions.fresh]}
    return Plan(
        recipe_file=path,
        recipe_name=name,
        job_recipe=spec,
        limit=None,
        items=len(questions.fresh),
        addition=True,
        verifier_mode="numeric",
        system=held_out[0].system if held_out else None,
        max_new_tokens=max_tokens,
        eval_items=held_out,
        teacher_data=teacher_data,
    )


def _recipe_plan(
    path: Path,
    spec: dict[str, Any],
    recipe: Any,
    stage_index: int,
    items: int,
    eval_items: int,
    max_tokens: int,
    held_out_share: float,
) -> Plan:
    from generator.recipe import compile_stages
    from generator.seeds import load_seed_rows, seed_columns
    from generator.templates import TemplateError

    base_dir = path.resolve().parent
    rows = load_seed_rows(recipe, base_dir)
    if not rows:
        raise CliError(f"{path}: the recipe's seeds give no rows")
    references = [row.get(REFERENCE_FIELD) for row in rows]
    has_references = all(ref is not None for ref in references)
    notes: list[str] = []
    if not has_references:
        notes.append(
            f"the seed rows carry no `{REFERENCE_FIELD}`: no verifier filter, and the evaluation scores "
            "agreement with the teacher's answers on the dataset's test split"
        )
    stage = compile_stages(recipe, seed_columns(recipe.seeds, base_dir))[stage_index]
    held = min(eval_items, int(len(rows) * held_out_share))
    plan = Plan(
        recipe_file=path,
        recipe_name=recipe.name,
        job_recipe=spec,
        limit=items,
        items=None,
        addition=False,
        verifier_mode=verifier_mode(references) if has_references else None,
        system=None,
        max_new_tokens=max_tokens,
        eval_items=[],
        teacher_data=None,
        notes=notes,
    )
    if stage_index == 0 and has_references and held >= 1:
        # Seed rows the teacher never answers: the evaluation asks them, scored against their reference.
        order = list(range(len(rows)))
        random.Random(ADDITION_SEED).shuffle(order)
        chosen = set(order[:held])
        try:
            plan.eval_items = [render_item(stage, rows[i])[1] for i in sorted(chosen)]
        except TemplateError as exc:
            raise CliError(f"{path}: {exc}") from exc
        generated = [row for i, row in enumerate(rows) if i not in chosen][:items]
        spec["seeds"] = {"records": generated}
        plan.limit, plan.items = None, len(generated)
        plan.system = plan.eval_items[0].system
        return plan
    if stage_index == 0:
        with contextlib.suppress(TemplateError):
            plan.system = render_item(stage, rows[0])[1].system
    elif has_references:
        notes.append(
            "the answer stage follows other stages, so no question can be held out before generation: "
            "the evaluation uses the dataset's test split"
        )
    return plan
