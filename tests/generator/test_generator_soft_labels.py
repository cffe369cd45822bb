"""Sparse soft labels: the packed format round-trips, and real vLLM fills it for every token."""

from __future__ import annotations

import math
from typing import Any

import pytest

from generator.engines.base import GenerationRequest, SamplingSpec
from generator.engines.openai_engine import choice_soft_labels
from generator.pipeline import run_recipe
from generator.recipe import load_recipe
from generator.soft_labels import (
    HEADER_BYTES,
    PAD_TOKEN_ID,
    SoftLabelFormatError,
    SoftLabels,
    bytes_per_token,
    from_position_logprobs,
    pack,
    packed_size,
    unpack,
)


def test_pack_round_trips_ids_exactly_and_logprobs_to_float16() -> None:
    labels = SoftLabels(
        k=3,
        token_ids=[7, 2**32 - 2, 0],
        topk_ids=[[7, 1, 2], [2**32 - 2, 5, 6], [0, 9, 8]],
        topk_logprobs=[[-0.01, -4.5, -7.25], [-0.5, -1.0, -1e9], [-2.0, -3.0, -20.0]],
    )
    blob = pack(labels)
    assert len(blob) == packed_size(3, 3) == HEADER_BYTES + 3 * (4 + 6 * 3)
    back = unpack(blob)
    assert back.k == 3
    assert back.token_ids == labels.token_ids
    assert back.topk_ids == labels.topk_ids
    for got, want in zip(back.topk_logprobs, labels.topk_logprobs, strict=True):
        for g, w in zip(got, want, strict=True):
            assert g == -math.inf if w < -65504 else g == pytest.approx(w, abs=0.01)


def test_an_empty_completion_packs_to_the_header_alone() -> None:
    blob = pack(SoftLabels(k=20, token_ids=[], topk_ids=[], topk_logprobs=[]))
    assert len(blob) == HEADER_BYTES
    assert unpack(blob).token_ids == []


@pytest.mark.parametrize(
    "blob", [b"", b"XX\x01\x05\x00\x00\x00\x00", pack(SoftLabels(2, [1], [[1, 2]], [[0.0, -1.0]]))[:-1]]
)
def test_unpack_refuses_what_is_not_this_format(blob: bytes) -> None:
    with pytest.raises(SoftLabelFormatError):
        unpack(blob)


def test_positions_keep_the_k_most_likely_and_pad_short_ones() -> None:
    # vLLM adds the sampled token to the map when it is not in the top k: k+1 entries.
    labels = from_position_logprobs([9, 4], [{1: -0.1, 2: -2.0, 9: -5.0}, {4: -0.2}], k=2)
    assert labels.topk_ids == [[1, 2], [4, PAD_TOKEN_ID]]
    assert labels.topk_logprobs[1] == [-0.2, -math.inf]
    with pytest.raises(ValueError, match="positions"):
        from_position_logprobs([1, 2], [{1: 0.0}], k=1)


def test_openai_choices_give_soft_labels_only_with_token_ids() -> None:
    choice: dict[str, Any] = {
        "logprobs": {
            "content": [
                {
                    "token": "token_id:5",
                    "logprob": -0.3,
                    "top_logprobs": [
                        {"token": "token_id:5", "logprob": -0.3},
                        {"token": "token_id:8", "logprob": -1.5},
                    ],
                }
            ]
        }
    }
    labels = choice_soft_labels(choice, 2)
    assert labels is not None
    assert labels.token_ids == [5]
    assert labels.topk_ids == [[5, 8]]
    assert choice_soft_labels(choice, None) is None
    assert choice_soft_labels({"logprobs": None}, 2) is None
    choice["logprobs"]["content"][0]["token"] = "hello"
    assert choice_soft_labels(choice, 2) is None


@pytest.mark.parametrize("k", [1, 5, 20])
def test_vllm_returns_the_top_k_of_every_generated_token(vllm_engine: Any, k: int) -> None:
    request = GenerationRequest(
        messages=[{"role": "user", "content": "Say something about rain."}],
        sampling=SamplingSpec(temperature=0.0, max_tokens=16, seed=3, logprobs=k),
    )
    (result,) = vllm_engine.generate([request])
    (completion,) = result.completions
    labels = completion.soft_labels
    assert labels is not None
    assert labels.k == k
    assert len(labels.token_ids) == completion.completion_tokens > 0
    for token, ids, logprobs in zip(labels.token_ids, labels.topk_ids, labels.topk_logprobs, strict=True):
        assert len(ids) == len(logprobs) == k
        assert len(set(ids)) == k
        assert all(value <= 0 for value in logprobs)
        assert logprobs == sorted(logprobs, reverse=True)
        # Greedy decoding picks the most likely token: it is in the top k, first.
        assert token in ids
        assert token == ids[0]
    blob = pack(labels)
    assert len(blob) == HEADER_BYTES + completion.completion_tokens * bytes_per_token(k)
    assert unpack(blob).topk_ids == labels.topk_ids


def test_vllm_leaves_soft_labels_out_unless_asked(vllm_engine: Any) -> None:
    request = GenerationRequest(
        messages=[{"role": "user", "content": "Say something about rain."}],
        sampling=SamplingSpec(temperature=0.0, max_tokens=8, seed=3),
    )
    (result,) = vllm_engine.generate([request])
    assert result.completions[0].soft_labels is None


def test_a_stage_with_logprobs_packs_them_on_every_sample(vllm_engine: Any) -> None:
    recipe = load_recipe(
        {
            "name": "soft",
            "seeds": {"records": [{"topic": "rain"}, {"topic": "fog"}]},
            "stages": [
                {
                    "name": "answer",
                    "messages": [{"role": "user", "content": "Tell me about {{ topic }}."}],
                    "sampling": {"temperature": 0.8, "max_tokens": 12, "n": 2, "logprobs": 4},
                }
            ],
        }
    )
    (chunk,) = run_recipe(recipe, vllm_engine, [{"topic": "rain"}, {"topic": "fog"}])
    assert len(chunk.samples) == 4
    for sample in chunk.samples:
        assert sample.soft_labels is not None
        tokens = sample.provenance["completion_tokens"]
        assert len(sample.soft_labels) == HEADER_BYTES + tokens * (4 + 6 * 4)
        assert sample.provenance["soft_labels"] == {
            "k": 4,
            "tokens": tokens,
            "bytes": len(sample.soft_labels),
        }
        assert sample.provenance["sampling"]["logprobs"] == 4
        assert len(unpack(sample.soft_labels)) == tokens


@pytest.mark.parametrize("k", [0, 21])
def test_a_stage_refuses_logprobs_outside_1_to_20(k: int) -> None:
    with pytest.raises(Exception, match="logprobs"):
        load_recipe(
            {
                "name": "soft",
                "seeds": {"records": [{"topic": "rain"}]},
                "stages": [
                    {
                        "name": "answer",
                        "messages": [{"role": "user", "content": "{{ topic }}"}],
                        "sampling": {"logprobs": k},
                    }
                ],
            }
        )


def test_a_real_vllm_server_returns_soft_labels_by_token_id(openai_server: Any) -> None:
    from generator.engines.base import TeacherConfig
    from generator.engines.openai_engine import OpenAIEngine

    engine = OpenAIEngine(
        TeacherConfig(model=openai_server.model, engine="openai", base_url=openai_server.base_url)
    )
    request = GenerationRequest(
        messages=[{"role": "user", "content": "Say something about rain."}],
        sampling=SamplingSpec(temperature=0.0, max_tokens=10, seed=1, logprobs=3),
    )
    try:
        (result,) = engine.generate([request])
    finally:
        engine.close()
    (completion,) = result.completions
    labels = completion.soft_labels
    assert labels is not None
    assert len(labels) == completion.completion_tokens > 0
    for token, ids, logprobs in zip(labels.token_ids, labels.topk_ids, labels.topk_logprobs, strict=True):
        assert len(ids) == 3
        assert token == ids[0]
        assert all(value <= 0 for value in logprobs)


def test_the_submission_estimate_counts_every_stage_that_keeps_logprobs() -> None:
    from generator.recipe import estimated_soft_label_bytes

    def recipe(first: dict[str, Any], second: dict[str, Any]) -> Any:
        return load_recipe(
            {
                "name": "soft",
                "seeds": {"records": [{"topic": "rain"}]},
                "stages": [
                    {
                        "name": "questions",
                        "messages": [{"role": "user", "content": "{{ topic }}"}],
                        "sampling": first,
                        "parser": {"type": "list", "max_items": 3},
                    },
                    {
                        "name": "answer",
                        "messages": [{"role": "user", "content": "{{ questions }}"}],
                        "sampling": second,
                    },
                ],
            }
        )

    assert estimated_soft_label_bytes(recipe({}, {}), 10) == 0
    # 10 items x 3 questions x n=2 answers x (8 + 50 tokens x (4 + 6x5)) bytes.
    assert estimated_soft_label_bytes(
        recipe({}, {"n": 2, "max_tokens": 50, "logprobs": 5}), 10
    ) == 10 * 3 * 2 * (8 + 50 * 34)
    both = recipe({"max_tokens": 20, "logprobs": 1}, {"max_tokens": 50, "logprobs": 5})
    assert estimated_soft_label_bytes(both, 1) == 3 * (8 + 20 * 10) + 3 * (8 + 50 * 34)


def test_the_openai_engine_asks_for_logprobs_by_token_id_only_when_a_stage_does() -> None:
    from generator.engines.base import TeacherConfig
    from generator.engines.openai_engine import OpenAIEngine

    engine = OpenAIEngine(TeacherConfig(model="m", engine="openai", base_url="http://teacher:8000"))
    try:
        plain = GenerationRequest(messages=[{"role": "user", "content": "hi"}], sampling=SamplingSpec(seed=1))
        soft = GenerationRequest(
            messages=[{"role": "user", "content": "hi"}], sampling=SamplingSpec(seed=1, logprobs=7)
        )
        (plain_body,) = engine.request_bodies(plain)
        (soft_body,) = engine.request_bodies(soft)
    finally:
        engine.close()
    assert not {"logprobs", "top_logprobs", "return_tokens_as_token_ids"} & plain_body.keys()
    assert soft_body["logprobs"] is True
    assert soft_body["top_logprobs"] == 7
    assert soft_body["return_tokens_as_token_ids"] is True
