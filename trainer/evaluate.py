"""Score a model's answers on held-out items: the named scorers plus a plain-transformers generator.

The scorers compare one prediction to one reference by `answers.match`, the rule the verifier filter
uses too, so a student is right here exactly when the filter would keep its answer. The service
generates with vLLM (through the generator library) and scores with the verifier; `generate_answers_hf`
is the fallback that needs nothing but transformers (tests, the toy benchmark, machines without vLLM).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from answers.match import DEFAULT_TOLERANCE, answers_match, last_number, match_answer, normalize_answer

__all__ = [
    "SCORERS",
    "EvalScore",
    "exact_match",
    "generate_answers",
    "generate_answers_hf",
    "normalize_answer",
    "normalized_match",
    "numeric_match",
    "parse_number",
    "regex_extract_match",
    "score_predictions",
]


def exact_match(prediction: str, reference: str) -> bool:
    """Equal after trimming surrounding whitespace."""
    return match_answer(prediction, reference, "exact").correct


def normalized_match(prediction: str, reference: str) -> bool:
    """Equal after `normalize_answer` (plain numbers as numbers; an empty-normalising reference exactly)."""
    return match_answer(prediction, reference, "normalized").correct


def parse_number(text: str) -> float | None:
    """The last number in the text ("The answer is 1,234." -> 1234.0), or None."""
    return last_number(text)


def numeric_match(
    prediction: str, reference: str, tol: float = DEFAULT_TOLERANCE, relative_tol: float = 0.0
) -> bool:
    """The last number of the prediction equals the reference's within `tol` (absolute) or `relative_tol`."""
    return match_answer(
        prediction, reference, "numeric", tolerance=tol, relative_tolerance=relative_tol
    ).correct


def regex_extract_match(prediction: str, reference: str, pattern: str, normalize: bool = True) -> bool:
    """Extract the answer with `pattern` (group 1 if it has one, else the whole match; last match wins),
    then compare it normalised (`normalize=False`: as written)."""
    return match_answer(prediction, reference, "regex" if normalize else "exact", pattern=pattern).correct


SCORERS: dict[str, Callable[..., bool]] = {
    "exact": exact_match,
    "normalized": normalized_match,
    "numeric": numeric_match,
    "regex": regex_extract_match,
}


@dataclass(frozen=True)
class EvalScore:
    """How many predictions matched their references."""

    n: int
    correct: int
    accuracy: float
    per_item: list[bool] = field(default_factory=list)


def score_predictions(
    predictions: Sequence[str], references: Sequence[str], method: str, **opts: Any
) -> EvalScore:
    """Score predictions against references with a named scorer (an `answers.match` mode).

    Args:
        method: "exact", "normalized", "numeric" or "regex".
        opts: pattern (any method; required by "regex"), tol or tolerance (absolute),
            relative_tolerance, and normalize=False for "regex" to compare the extracted text as written.

    Raises:
        ValueError: unknown method, missing regex pattern, or lengths that differ.
    """
    options = dict(opts)
    if "tol" in options:
        options["tolerance"] = options.pop("tol")
    mode = method
    if method == "regex" and options.pop("normalize", True) is False:
        if not options.get("pattern"):
            raise ValueError("the regex scoring method needs a pattern")
        mode = "exact"
    per_item = answers_match(predictions, references, mode, **options)
    correct = sum(per_item)
    return EvalScore(len(per_item), correct, correct / len(per_item) if per_item else 0.0, per_item)


def generate_answers_hf(
    model_path: str | Path,
    prompts: list[list[dict[str, Any]]],
    max_new_tokens: int = 32,
    batch_size: int = 64,
) -> list[str]:
    """Greedy answers to chat prompts with plain transformers (batched, left-padded).

    Args:
        model_path: a model folder (or hub id) with a chat template.
        prompts: one list of chat messages per item (the prompt side of a prompt–completion row).
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_path))
    model = AutoModelForCausalLM.from_pretrained(str(model_path), dtype=torch.float32)
    return generate_answers(model, tokenizer, prompts, max_new_tokens, batch_size)


def generate_answers(
    model: Any,
    tokenizer: Any,
    prompts: list[list[dict[str, Any]]],
    max_new_tokens: int = 32,
    batch_size: int = 64,
) -> list[str]:
    """Greedy answers from a loaded model (also one being trained: its train/eval mode is restored)."""
    import torch

    padding_side, was_training = tokenizer.padding_side, model.training
    tokenizer.padding_side = "left"
    pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    model.eval()
    answers: list[str] = []
    try:
        for start in range(0, len(prompts), batch_size):
            texts = [
                tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
                for messages in prompts[start : start + batch_size]
            ]
            # The chat template already renders BOS and the turn markers.
            batch = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(
                model.device
            )
            with torch.inference_mode():
                output = model.generate(
                    **batch,
                    max_new_tokens=max_new_tokens,
                    do_sample=False,
                    use_cache=True,
                    pad_token_id=pad_token_id,
                )
            new_tokens = output[:, batch["input_ids"].shape[1] :]
            answers.extend(
                text.strip() for text in tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
            )
    finally:
        tokenizer.padding_side = padding_side
        model.train(was_training)
    return answers
