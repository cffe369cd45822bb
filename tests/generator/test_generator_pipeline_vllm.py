"""The pipeline against real vLLM (in process, tiny random model, loaded once per session).

A random-weight teacher writes gibberish, so these tests assert structure, determinism and the
guarantees of structured outputs, not the content of answers.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

import pytest

from generator.pipeline import run_recipe
from generator.recipe import Recipe, load_recipe
from generator.samples import ChunkResult, GeneratedSample

TOPICS = [{"topic": "rain"}, {"topic": "snow"}, {"topic": "fog"}]
ANSWER_SCHEMA = {
    "type": "object",
    "properties": {"answer": {"type": "integer"}, "confident": {"type": "boolean"}},
    "required": ["answer", "confident"],
    "additionalProperties": False,
}


def multi_stage(seed: int = 0) -> Recipe:
    return load_recipe(
        {
            "name": "self-instruct-tiny",
            "seed": seed,
            "seeds": {"records": TOPICS},
            "stages": [
                {
                    "name": "questions",
                    "messages": [
                        {"role": "system", "content": "You write questions."},
                        {"role": "user", "content": "Write 2 questions about {{ topic }}, one per line."},
                    ],
                    "sampling": {"temperature": 1.0, "max_tokens": 24},
                    "parser": {"type": "list", "max_items": 2},
                },
                {
                    "name": "answer",
                    "messages": [{"role": "user", "content": "{{ questions }}"}],
                    "sampling": {"temperature": 0.7, "max_tokens": 12},
                },
                {
                    "name": "judge",
                    "judges": "answer",
                    "messages": [
                        {"role": "user", "content": "Q: {{ questions }}\nA: {{ answer }}\nScore 1-10:"}
                    ],
                    "sampling": {"temperature": 1.0, "max_tokens": 4},
                    "parser": {"type": "score", "min": 1, "max": 10, "structured": True},
                },
            ],
        }
    )


def single_stage(stage: dict[str, Any], rows: list[dict[str, Any]] | None = None) -> Recipe:
    return load_recipe({"name": "one", "seeds": {"records": rows or TOPICS}, "stages": [stage]})


def samples_of(chunks: list[ChunkResult]) -> list[GeneratedSample]:
    return [sample for chunk in chunks for sample in chunk.samples]


def comparable(sample: GeneratedSample) -> dict[str, Any]:
    data = asdict(sample)
    data["provenance"].pop("latency_seconds")
    return data


@pytest.fixture(scope="module")
def multi_stage_run(vllm_engine: Any) -> list[ChunkResult]:
    return list(run_recipe(multi_stage(), vllm_engine, TOPICS, chunk_size=2))


def test_multi_stage_recipe_end_to_end(multi_stage_run: list[ChunkResult], tiny_model_dir: Any) -> None:
    assert [chunk.item_indices for chunk in multi_stage_run] == [[0, 1], [2]]
    samples = samples_of(multi_stage_run)
    by_key: dict[tuple[int, str, int | None], GeneratedSample] = {
        (s.item_index, s.stage, s.sample_index): s for s in samples
    }
    questions = [s for s in samples if s.stage == "questions"]
    answers = [s for s in samples if s.stage == "answer"]
    judges = [s for s in samples if s.stage == "judge"]
    assert {s.item_index for s in questions} == {0, 1, 2}
    assert answers
    assert judges

    for answer in answers:  # every answer continues an accepted question of its item
        parent = by_key[(answer.item_index, "questions", answer.parent_sample_index)]
        assert parent.parse_ok
        assert answer.question == parent.parsed
        assert answer.inputs == {**TOPICS[answer.item_index], "questions": parent.parsed}
    for item in range(3):  # sample indices enumerate 0..k-1 within (item, stage)
        for stage in ("questions", "answer", "judge"):
            indices = [s.sample_index for s in samples if s.item_index == item and s.stage == stage]
            assert indices == list(range(len(indices)))

    for sample in samples:
        provenance = sample.provenance
        assert provenance["teacher_model"] == str(tiny_model_dir)
        assert "teacher_revision" in provenance
        assert provenance["stage"] == sample.stage
        assert len(provenance["template_sha256"]) == 64
        assert isinstance(provenance["seed"], int)
        assert provenance["sampling"]["seed"] == provenance["seed"]
        assert provenance["prompt_tokens"] > 0
        assert provenance["completion_tokens"] > 0
        assert provenance["finish_reason"] in ("stop", "length")
        assert provenance["latency_seconds"] > 0
        assert (sample.answer is None) == (not sample.parse_ok)
    chunk_tokens = sum(chunk.completion_tokens for chunk in multi_stage_run)
    assert chunk_tokens > 0


def test_judge_scores_land_on_the_judged_samples(multi_stage_run: list[ChunkResult]) -> None:
    samples = samples_of(multi_stage_run)
    judges = {(s.item_index, s.parent_sample_index): s for s in samples if s.stage == "judge"}
    accepted = [s for s in samples if s.stage == "answer" and s.parse_ok]
    assert accepted
    for answer in accepted:
        judge = judges[(answer.item_index, answer.sample_index)]
        # Structured outputs: the judge can only emit an integer in [1, 10].
        assert judge.parse_ok, judge.raw_text
        assert judge.raw_text.strip() == str(judge.parsed)
        assert 1 <= judge.parsed <= 10
        assert answer.score == float(judge.parsed)
    assert all(s.score is None for s in samples if s.stage != "answer")


def test_same_seed_reproduces_the_samples_and_another_seed_does_not(
    vllm_engine: Any, multi_stage_run: list[ChunkResult]
) -> None:
    again = samples_of(list(run_recipe(multi_stage(), vllm_engine, TOPICS, chunk_size=2)))
    assert [comparable(s) for s in again] == [comparable(s) for s in samples_of(multi_stage_run)]
    other = samples_of(list(run_recipe(multi_stage(seed=1), vllm_engine, TOPICS, chunk_size=2)))
    first_stage = [s.raw_text for s in samples_of(multi_stage_run) if s.stage == "questions"]
    assert [s.raw_text for s in other if s.stage == "questions"] != first_stage


def test_n_greater_than_one_gives_n_samples_per_request(vllm_engine: Any) -> None:
    recipe = single_stage(
        {
            "name": "answer",
            "messages": [{"role": "user", "content": "Tell me about {{ topic }}"}],
            "sampling": {"temperature": 1.0, "max_tokens": 10, "min_tokens": 3, "n": 3},
        }
    )
    samples = samples_of(list(run_recipe(recipe, vllm_engine, TOPICS)))
    assert len(samples) == 9
    for item in range(3):
        mine = [s for s in samples if s.item_index == item]
        assert [s.sample_index for s in mine] == [0, 1, 2]
        assert [s.provenance["completion_index"] for s in mine] == [0, 1, 2]
        assert len({s.raw_text for s in mine}) > 1  # three different samples, not one copied
        assert all(s.provenance["completion_tokens"] >= 3 for s in mine)


def test_json_schema_stage_returns_parseable_json(vllm_engine: Any) -> None:
    recipe = single_stage(
        {
            "name": "answer",
            "messages": [{"role": "user", "content": "Answer about {{ topic }} as JSON."}],
            "sampling": {"temperature": 1.0, "max_tokens": 64, "n": 2},
            "parser": {"type": "json", "schema": ANSWER_SCHEMA},
        }
    )
    samples = samples_of(list(run_recipe(recipe, vllm_engine, TOPICS)))
    finished = [s for s in samples if s.provenance["finish_reason"] == "stop"]
    assert finished
    for sample in finished:
        assert sample.parse_ok, sample.parse_error
        value = json.loads(sample.raw_text)
        assert set(value) == {"answer", "confident"}
        assert isinstance(value["answer"], int)
        assert sample.parsed == value
        assert json.loads(sample.answer or "") == value


def test_parse_failures_are_kept_with_raw_text_and_reason(vllm_engine: Any) -> None:
    # No schema: nothing constrains the random model, so its text is not JSON.
    recipe = load_recipe(
        {
            "name": "unconstrained",
            "seeds": {"records": TOPICS},
            "stages": [
                {
                    "name": "data",
                    "messages": [{"role": "user", "content": "JSON about {{ topic }}"}],
                    "sampling": {"max_tokens": 12, "min_tokens": 4},
                    "parser": {"type": "json"},
                },
                {"name": "next", "messages": [{"role": "user", "content": "{{ data }}"}]},
            ],
        }
    )
    samples = samples_of(list(run_recipe(recipe, vllm_engine, TOPICS)))
    failures = [s for s in samples if not s.parse_ok]
    assert failures
    for failure in failures:
        assert failure.raw_text
        assert failure.parse_error
        assert failure.answer is None
        assert failure.parsed is None
        # A failed sample does not continue to the next stage.
        assert not any(
            s.stage == "next"
            and s.item_index == failure.item_index
            and s.parent_sample_index == failure.sample_index
            for s in samples
        )


def test_a_prompt_longer_than_the_context_fails_alone(vllm_engine: Any) -> None:
    rows = [{"topic": "rain"}, {"topic": "word " * 600}, {"topic": "fog"}]
    recipe = single_stage(
        {
            "name": "answer",
            "messages": [{"role": "user", "content": "{{ topic }}"}],
            "sampling": {"max_tokens": 4},
        },
        rows,
    )
    samples = samples_of(list(run_recipe(recipe, vllm_engine, rows)))
    assert [s.item_index for s in samples] == [0, 1, 2]
    assert samples[1].parse_ok is False
    assert "the teacher's context is 512" in (samples[1].parse_error or "")
    assert samples[0].provenance["completion_tokens"] > 0
