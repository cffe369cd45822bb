"""A job's token accounting: the estimate made at submission, and usage and cost from its counters.

Pure arithmetic and template rendering, no I/O. Costs come from the teacher's optional
`price_per_million_tokens` and are computed when read, so a price is never baked into a row.
"""

from __future__ import annotations

from collections.abc import Mapping
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


def cost(price: TokenPrice | None, prompt_tokens: int | None, completion_tokens: int) -> float | None:
    """The price of those tokens, or None without a price (or without a prompt-token count)."""
    if price is None or prompt_tokens is None:
        return None
    return price.cost(prompt_tokens, completion_tokens)


def budget_reached(
    budget: Mapping[str, Any] | None, price: TokenPrice | None, prompt_tokens: int, completion_tokens: int
) -> str | None:
    """Why the budget is spent (e.g. "cost 1.02 >= max_cost 1"), or None while it is not."""
    if not budget:
        return None
    max_tokens = budget.get("max_completion_tokens")
    if max_tokens is not None and completion_tokens >= max_tokens:
        return f"completion tokens {completion_tokens} >= max_completion_tokens {max_tokens}"
    max_cost = budget.get("max_cost")
    if max_cost is not None and price is not None:
        spent = price.cost(prompt_tokens, completion_tokens)
        if spent >= max_cost:
            return f"cost {spent:.6g} >= max_cost {max_cost:g}"
    return None
