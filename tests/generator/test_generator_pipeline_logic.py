"""Pipeline logic with a scripted teacher (fast): branching, enumeration, batching, seeds, failures.

The same paths run against real vLLM in test_generator_pipeline_vllm.py.
"""

from __future__ import annotations

from typing import Any

import pytest

from generator.derived_seeds import derive_seed
from generator.engines.base import GenerationRequest
from generator.pipeline import request_seed, run_recipe
from generator.recipe import Recipe, load_recipe
from generator.samples import GeneratedSample
from generator.templates import TemplateError
from tests.generator.scripted_teacher import ScriptedEngine, last_user_message


def three_stage_recipe(**sampling: Any) -> Recipe:
    return load_recipe(
        {
            "name": "qa",
            "seed": 5,
            "seeds": {"values": {"topic": ["rain", "snow", "fog"]}},
            "stages": [
                {
                    "name": "questions",
                    "messages": [{"role": "user", "content": "Questions about {{ topic }}"}],
                    "parser": {"type": "list"},
                },
                {
                    "name": "answer",
                    "messages": [{"role": "user", "content": "Answer: {{ questions }}"}],
                    "question": "{{ questions }}",
                    "sampling": sampling,
                },
                {
                    "name": "judge",
                    "judges": "answer",
                    "messages": [{"role": "user", "content": "Rate {{ answer }} for {{ questions }}"}],
                    "parser": {"type": "score"},
                },
            ],
        }
    )


def teacher(request: GenerationRequest, k: int) -> str:
    prompt = last_user_message(request)
    if prompt.startswith("Questions about "):
        topic = prompt.removeprefix("Questions about ")
        return {"rain": "1. Why rain?\n2. When rain?", "snow": "Why snow?", "fog": ""}[topic]
    if prompt.startswith("Answer: "):
        return f"because {prompt.removeprefix('Answer: ')} #{k}"
    return "Score: 8" if "#0" in prompt else "Score: 4"


ROWS = [{"topic": t} for t in ("rain", "snow", "fog")]


def run(recipe: Recipe, engine: ScriptedEngine, **kwargs: Any) -> list[GeneratedSample]:
    return [s for chunk in run_recipe(recipe, engine, ROWS, **kwargs) for s in chunk.samples]


def test_list_items_fan_out_and_link_to_their_parents() -> None:
    samples = run(three_stage_recipe(), ScriptedEngine(teacher))
    by_key: dict[tuple[int, str, int | None], GeneratedSample] = {
        (s.item_index, s.stage, s.sample_index): s for s in samples
    }
    questions = [s for s in samples if s.stage == "questions"]
    assert [(s.item_index, s.sample_index, s.parsed) for s in questions] == [
        (0, 0, "Why rain?"),
        (0, 1, "When rain?"),
        (1, 0, "Why snow?"),
        (2, 0, None),  # fog: empty list, kept as a failure
    ]
    assert questions[-1].parse_ok is False
    assert questions[-1].parse_error == "no items in the completion"
    assert questions[0].raw_text == "1. Why rain?\n2. When rain?"
    assert questions[1].provenance["list_index"] == 1

    answers = [s for s in samples if s.stage == "answer"]
    assert [(s.item_index, s.sample_index, s.parent_sample_index) for s in answers] == [
        (0, 0, 0),
        (0, 1, 1),
        (1, 0, 0),
    ]
    for answer in answers:
        parent = by_key[(answer.item_index, "questions", answer.parent_sample_index)]
        assert answer.question == parent.parsed
        assert answer.inputs == {"topic": ROWS[answer.item_index]["topic"], "questions": parent.parsed}
        assert answer.answer == f"because {parent.parsed} #0"
    assert not any(s.item_index == 2 and s.stage != "questions" for s in samples)  # failures do not fan out


def test_judge_scores_land_on_the_judged_samples_and_average_over_n() -> None:
    samples = run(three_stage_recipe(n=2), ScriptedEngine(teacher))
    answers = [s for s in samples if s.stage == "answer"]
    judges = [s for s in samples if s.stage == "judge"]
    assert len(answers) == 6
    assert len(judges) == 6
    for answer in answers:
        expected = 8.0 if answer.answer and answer.answer.endswith("#0") else 4.0
        assert answer.score == expected
        assert answer.provenance["completion_index"] in (0, 1)
    for judge in judges:
        assert judge.parsed in (4, 8)
        assert judge.raw_text.startswith("Score:")
        assert judge.inputs["answer"].startswith("because")
    assert all(s.score is None for s in samples if s.stage != "answer")


def test_each_stage_of_a_chunk_is_one_engine_call() -> None:
    engine = ScriptedEngine(teacher)
    chunks = list(run_recipe(three_stage_recipe(), engine, ROWS, chunk_size=2))
    assert [chunk.item_indices for chunk in chunks] == [[0, 1], [2]]
    # chunk 1: questions (2 items) → answers (3 branches) → judges (3); chunk 2: questions only.
    assert [len(call) for call in engine.calls] == [2, 3, 3, 1]
    assert chunks[0].prompt_tokens == 7 * 8
    assert chunks[0].completion_tokens > 0
    assert {s.item_index for s in chunks[0].samples} == {0, 1}


def test_item_indices_select_a_shard() -> None:
    samples = run(three_stage_recipe(), ScriptedEngine(teacher), item_indices=[1])
    assert {s.item_index for s in samples} == {1}
    with pytest.raises(ValueError, match="out of range"):
        run_recipe(three_stage_recipe(), ScriptedEngine(teacher), ROWS, item_indices=[3])
    with pytest.raises(ValueError, match="chunk_size"):
        run_recipe(three_stage_recipe(), ScriptedEngine(teacher), ROWS, chunk_size=0)


def test_request_seeds_are_derived_deterministically() -> None:
    engine = ScriptedEngine(teacher)
    run(three_stage_recipe(), engine)
    seeds = [request.sampling.seed for call in engine.calls for request in call]
    assert len(set(seeds)) == len(seeds)  # every request its own seed
    recipe = three_stage_recipe()
    assert seeds[0] == request_seed(recipe, 0, 0, None)
    assert request_seed(recipe, 0, 0, None) == derive_seed("request", 5, 0, 0, -1, 0)
    # A stable hash (not Python's salted hash()): this value must never change between runs.
    assert derive_seed("request", 5, 0, 0, -1, 0) == 162012724
    other = three_stage_recipe().model_copy(update={"seed": 6})
    assert request_seed(other, 0, 0, None) != seeds[0]
    offset = three_stage_recipe(seed=1)
    assert request_seed(offset, 0, 1, 0) != request_seed(recipe, 0, 1, 0)


def test_samples_carry_provenance() -> None:
    sample = run(three_stage_recipe(temperature=0.3), ScriptedEngine(teacher))[4]
    assert sample.stage == "answer"
    provenance = sample.provenance
    assert provenance["teacher_model"] == "scripted"
    assert provenance["teacher_revision"] == "r1"
    assert provenance["stage"] == "answer"
    assert len(provenance["template_sha256"]) == 64
    assert provenance["sampling"]["temperature"] == 0.3
    assert provenance["sampling"]["seed"] == provenance["seed"] == request_seed(three_stage_recipe(), 0, 1, 0)
    assert provenance["prompt_tokens"] == 7
    assert provenance["completion_tokens"] == len(sample.raw_text.split())
    assert provenance["finish_reason"] == "stop"
    assert provenance["latency_seconds"] == 0.01


def test_a_row_missing_a_variable_is_a_failed_sample_not_a_crash() -> None:
    recipe = three_stage_recipe()
    rows = [{"topic": "rain"}, {"other": "x"}]  # the second row lacks `topic`
    samples = [s for c in run_recipe(recipe, ScriptedEngine(teacher), rows) for s in c.samples]
    broken = [s for s in samples if s.item_index == 1]
    assert len(broken) == 1
    assert broken[0].parse_ok is False
    assert "undefined variable 'topic'" in (broken[0].parse_error or "")
    assert any(s.item_index == 0 and s.stage == "judge" for s in samples)


def test_templates_are_checked_before_the_engine_is_called() -> None:
    recipe = three_stage_recipe()
    recipe.stages[1].messages[0].content = "{{ nope }}"
    engine = ScriptedEngine(teacher)
    with pytest.raises(TemplateError, match="undefined variable 'nope'"):
        run_recipe(recipe, engine, ROWS)
    assert engine.calls == []


def test_engine_errors_for_one_request_are_kept_as_failed_samples() -> None:
    class RefusingEngine(ScriptedEngine):
        def generate(self, requests: Any) -> Any:
            results = super().generate(requests)
            if len(self.calls) == 1:  # the first stage's first request only
                results[0].completions = []
                results[0].error = "prompt too long"
            return results

    samples = run(three_stage_recipe(), RefusingEngine(teacher))
    first = samples[0]
    assert (first.item_index, first.stage, first.parse_ok) == (0, "questions", False)
    assert first.parse_error == "engine error: prompt too long"
    assert any(s.item_index == 1 and s.stage == "judge" for s in samples)
