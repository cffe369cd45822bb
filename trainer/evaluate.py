"""Score a model's answers on held-out items: tiny pure scorers plus a plain-transformers generator.

The scorers compare one prediction to one reference. The service generates with vLLM (through the
generator library) and scores with these; `generate_answers_hf` is the fallback that needs nothing
but transformers (tests, the toy benchmark, machines without vLLM).
"""

from __future__ import annotations

import math
import re
import string
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ARTICLES = re.compile(r"\b(a|an|the)\b", re.IGNORECASE)
NUMBER = re.compile(r"[-+]?(?:\d[\d,]*\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")


def exact_match(prediction: str, reference: str) -> bool:
    """Equal after trimming surrounding whitespace."""
    return prediction.strip() == reference.strip()


def normalize_answer(text: str) -> str:
    """Lower case, no punctuation, no articles, single spaces (SQuAD-style)."""
    text = text.lower()
    text = "".join(char for char in text if char not in string.punctuation)
    text = ARTICLES.sub(" ", text)
    return " ".join(text.split())


def normalized_match(prediction: str, reference: str) -> bool:
    """Equal after `normalize_answer`; a reference with nothing left after it must match exactly.

    (Otherwise "," and "?!" would agree: both normalize to nothing.)
    """
    expected = normalize_answer(reference)
    if not expected:
        return exact_match(prediction, reference)
    return normalize_answer(prediction) == expected


def parse_number(text: str) -> float | None:
    """The last number in the text ("The answer is 1,234." -> 1234.0), or None."""
    matches = NUMBER.findall(text)
    if not matches:
        return None
    try:
        return float(matches[-1].replace(",", ""))
    except ValueError:
        return None


def numeric_match(prediction: str, reference: str, tol: float = 1e-6) -> bool:
    """The last number of the prediction equals the reference's within `tol` (absolute or relative)."""
    predicted, expected = parse_number(prediction), parse_number(reference)
    if predicted is None or expected is None:
        return False
    return math.isclose(predicted, expected, rel_tol=tol, abs_tol=tol)


def regex_extract_match(prediction: str, reference: str, pattern: str, normalize: bool = True) -> bool:
    """Extract the answer with `pattern` (group 1 if it has one, else the whole match; last match wins)."""
    matches = list(re.finditer(pattern, prediction))
    if not matches:
        return False
    last = matches[-1]
    extracted = last.group(1) if last.re.groups else last.group(0)
    if normalize:
        return normalized_match(extracted, reference)
    return (extracted or "").strip() == reference.strip()


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
    """Score predictions against references with a named scorer.

    Args:
        method: "exact", "normalized", "numeric" (opts: tol) or "regex" (opts: pattern, normalize).

    Raises:
        ValueError: unknown method, missing regex pattern, or lengths that differ.
    """
    if method not in SCORERS:
        raise ValueError(f"unknown scoring method {method!r} (known: {', '.join(SCORERS)})")
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} references")
    if method == "regex":
        if not opts.get("pattern"):
            raise ValueError("the regex scoring method needs a pattern")
        try:
            re.compile(opts["pattern"])
        except re.error as exc:
            raise ValueError(f"invalid regex pattern: {exc}") from exc
    scorer = SCORERS[method]
    per_item = [bool(scorer(p, r, **opts)) for p, r in zip(predictions, references, strict=True)]
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
