"""A job's token accounting: the estimate made at submission, and usage and cost from its counters.

Pure arithmetic and template rendering, no I/O. Costs come from the teacher's optional
`price_per_million_tokens` and are computed when read, so a price is never baked into a row.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from generator.engines.base import TokenPrice
from generator.recipe import Recipe, compile_stages, estimated_soft_label_bytes

# A rough English average; the estimate says it is rough.
CHARS_PER_TOKEN = 4


@dataclass(frozen=True)
class StageEstimate:
    requests: int  # per item
    completion_tokens: int  # per item, at most (n x max_tokens per request)
    prompt_tokens: int  # per item, rough


def estimate_tokens(recipe: Recipe, first_row: Mapping[str, Any], items: int) -> dict[str, Any]:
    """The job's expected tokens, as stored in `params.estimate` at submission.

    Completion tokens are an upper bound (every completion at `max_tokens`) of every stage, judges
    included, times its requests per item: a stage runs once per branch, and a non-judge stage with
    `n` > 1 or a list parser fans out into more branches for the stages after it. A list parser
    without `max_items` has no bound: the stages after it are counted for one list entry, and
    `completion_tokens_bounded` is false. Prompt tokens are rough: each stage's messages rendered
    for the first item (earlier stages' outputs left empty; characters / 4) plus the earlier
    outputs it may quote at their `max_tokens`, times its requests.
    """
    columns = list(first_row)
    compiled = compile_stages(recipe, columns)
    branches = 1
    bounded = True
    earlier_outputs = 0
    stages: list[StageEstimate] = []
    for stage in compiled:
        sampling = stage.stage.sampling
        prompt_chars = _rendered_chars(stage, first_row, [s.stage.name for s in compiled[: stage.index]])
        per_request_prompt = prompt_chars // CHARS_PER_TOKEN + earlier_outputs
        stages.append(
            StageEstimate(
                requests=branches,
                completion_tokens=branches * sampling.n * sampling.max_tokens,
                prompt_tokens=branches * per_request_prompt,
            )
        )
        if stage.stage.is_judge:
            continue  # a judge's score lands on its target: no new branch
        earlier_outputs += sampling.max_tokens
        fan_out = sampling.n
        parser = stage.stage.parser
        if getattr(parser, "type", None) == "list":
            max_items = getattr(parser, "max_items", None)
            if max_items is None:
                bounded = False
            else:
                fan_out *= max_items
        branches *= fan_out
    return {
        "items": items,
        "requests": items * sum(s.requests for s in stages),
        "prompt_tokens": items * sum(s.prompt_tokens for s in stages),
        "completion_tokens": items * sum(s.completion_tokens for s in stages),
        "completion_tokens_bounded": bounded,
        "soft_label_bytes": estimated_soft_label_bytes(recipe, items),
    }


def _rendered_chars(stage: Any, row: Mapping[str, Any], earlier: list[str]) -> int:
    context = {**row, **dict.fromkeys(earlier, "")}
    try:
        messages, _ = stage.render(context)
        return sum(len(m["content"]) for m in messages)
    except Exception:  # an estimate never fails a submission
        # E.g. a template that reads into an earlier stage's parsed value (JSON fields): its source.
        return sum(len(m.content) for m in stage.stage.messages)


def teacher_price(teacher: Mapping[str, Any]) -> TokenPrice | None:
    price = teacher.get("price_per_million_tokens")
    return TokenPrice.model_validate(price) if price else None


@dataclass(frozen=True)
class TeacherSpend:
    """One teacher's tokens so far, at its price (None: unpriced)."""

    price: TokenPrice | None
    prompt_tokens: int
    completion_tokens: int


def teacher_counters(
    teachers: Sequence[Mapping[str, Any]], usage: Mapping[str, Any], totals: Mapping[str, int]
) -> list[Mapping[str, Any]]:
    """Each teacher's counters (items_done, samples, tokens_in, tokens_out) from a job's row.

    A one-teacher job's teacher used the job's totals; several teachers have their shares in
    `teacher_usage` by index (a missing entry: nothing done yet).
    """
    if len(teachers) == 1:
        return [totals]
    return [usage.get(str(index)) or {} for index in range(len(teachers))]


def teacher_spends(
    teachers: Sequence[Mapping[str, Any]], counters: Sequence[Mapping[str, Any]]
) -> list[TeacherSpend]:
    """Each teacher's spend, from its counters (`teacher_counters`) at its price."""
    return [
        TeacherSpend(teacher_price(teacher), int(one.get("tokens_in", 0)), int(one.get("tokens_out", 0)))
        for teacher, one in zip(teachers, counters, strict=True)
    ]


def cost(price: TokenPrice | None, prompt_tokens: int | None, completion_tokens: int) -> float | None:
    """The price of those tokens, or None without a price (or without a prompt-token count)."""
    if price is None or prompt_tokens is None:
        return None
    return price.cost(prompt_tokens, completion_tokens)


def total_cost(spends: Sequence[TeacherSpend]) -> float | None:
    """The teachers' costs summed; None when any teacher has no price (the total would be too low)."""
    costs = [cost(s.price, s.prompt_tokens, s.completion_tokens) for s in spends]
    return None if any(c is None for c in costs) else sum(c for c in costs if c is not None)


def budget_reached(budget: Mapping[str, Any] | None, spends: Sequence[TeacherSpend]) -> str | None:
    """Why the budget is spent (e.g. "cost 1.02 >= max_cost 1"), or None while it is not.

    Both limits are over the whole job, every teacher together.
    """
    if not budget:
        return None
    completion_tokens = sum(s.completion_tokens for s in spends)
    max_tokens = budget.get("max_completion_tokens")
    if max_tokens is not None and completion_tokens >= max_tokens:
        return f"completion tokens {completion_tokens} >= max_completion_tokens {max_tokens}"
    max_cost = budget.get("max_cost")
    spent = total_cost(spends)
    if max_cost is not None and spent is not None and spent >= max_cost:
        return f"cost {spent:.6g} >= max_cost {max_cost:g}"
    return None
