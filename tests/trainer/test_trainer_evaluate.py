"""Scorers (pure) and greedy answers with plain transformers."""

from __future__ import annotations

from pathlib import Path

import pytest

from trainer.evaluate import (
    exact_match,
    generate_answers_hf,
    normalized_match,
    numeric_match,
    parse_number,
    regex_extract_match,
    score_predictions,
)


def test_scorers_compare_a_prediction_to_a_reference() -> None:
    assert exact_match(" 42\n", "42")
    assert not exact_match("42.", "42")
    assert normalized_match("The  Eiffel Tower!", "eiffel tower")
    assert not normalized_match("Paris", "Rome")
    # Punctuation-only answers normalize to nothing: they must match as written, not all agree.
    assert not normalized_match(",", "?!")
    assert normalized_match(" ?! ", "?!")
    assert numeric_match("The answer is 1,234.", "1234")
    assert numeric_match("x = 0.30000001", "0.3", tol=1e-6)
    assert not numeric_match("about 12", "13")
    assert not numeric_match("no number", "1")
    assert numeric_match("3.14159", "3.14", tol=0.01)
    assert parse_number("from 3 to -7") == -7.0
    assert parse_number("none") is None
    assert regex_extract_match("reasoning... #### 17", "17", pattern=r"####\s*(\S+)")
    assert not regex_extract_match("reasoning... 17", "17", pattern=r"####\s*(\S+)")
    assert regex_extract_match("Answer: Yes", "yes", pattern=r"Answer: (\w+)")
    assert not regex_extract_match("Answer: Yes", "yes", pattern=r"Answer: (\w+)", normalize=False)


def test_score_predictions_counts_and_refuses_bad_calls() -> None:
    score = score_predictions(["4", "5", "x"], ["4", "6", "x"], "exact")
    assert (score.n, score.correct, score.per_item) == (3, 2, [True, False, True])
    assert score.accuracy == pytest.approx(2 / 3)
    assert score_predictions(["it is 4"], ["4.0"], "numeric").accuracy == 1.0
    assert score_predictions([], [], "exact").accuracy == 0.0
    with pytest.raises(ValueError, match="unknown scoring method"):
        score_predictions(["a"], ["a"], "fuzzy")
    with pytest.raises(ValueError, match="2 predictions for 1 references"):
        score_predictions(["a", "b"], ["a"], "exact")
    with pytest.raises(ValueError, match="needs a pattern"):
        score_predictions(["a"], ["a"], "regex")
    with pytest.raises(ValueError, match="invalid regex"):
        score_predictions(["a"], ["a"], "regex", pattern="(")


def test_generate_answers_hf_is_greedy_and_batched(tiny_model_dir: Path) -> None:
    prompts = [[{"role": "user", "content": f"What is {n}+1?"}] for n in range(5)]
    first = generate_answers_hf(tiny_model_dir, prompts, max_new_tokens=4, batch_size=2)
    assert len(first) == 5
    assert all(isinstance(answer, str) for answer in first)
    # Greedy: the same call gives the same answers (a random-init model's near-equal logits make
    # comparisons across batch shapes unsafe, so only the same batching is compared).
    assert generate_answers_hf(tiny_model_dir, prompts, max_new_tokens=4, batch_size=2) == first
