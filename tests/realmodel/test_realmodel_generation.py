"""Generation on a real pretrained model (SmolLM2-135M-Instruct), through the service.

Jobs go in over REST, the generate worker runs them with real vLLM (in process, and through a real
vLLM OpenAI-compatible server), and the stored samples are checked: the multi-stage chain and its
provenance, structured outputs with a real 49k BPE vocabulary, where answers stop (EOS, stop
strings, max_tokens) and an over-long prompt kept as a failed sample.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from service.db.session import transaction
from tests.realmodel.conftest import CONTEXT, Generation
from tests.realmodel.recipes import (
    CAPITALS,
    ESSAY_MAX_TOKENS,
    FRUITS_STOP,
    RECORD_MAX_CHARS,
    RECORD_SCHEMA,
    SERVED_COUNTRIES,
    TOPICS,
)

pytestmark = pytest.mark.slow

# Structured outputs must give valid JSON nearly always; a completion cut by max_tokens may fail.
MIN_JSON_PARSE_RATE = 0.9


def stored_samples(url: str, job_id: int, stage: str | None = None) -> list[Any]:
    with transaction(url) as session:
        return list(
            session.execute(
                text(
                    "SELECT id, item_index, stage, sample_index, parent_sample_index, question, answer, "
                    "raw_text, parsed, parse_status, parse_error, score, inputs, provenance FROM sample "
                    "WHERE job_id = :j AND (CAST(:s AS text) IS NULL OR stage = :s) "
                    "ORDER BY item_index, stage, sample_index"
                ),
                {"j": job_id, "s": stage},
            ).all()
        )


def job(client: TestClient, admin: dict[str, str], job_id: int) -> dict[str, Any]:
    response = client.get(f"/v1/jobs/{job_id}", headers=admin)
    assert response.status_code == 200, response.text
    return dict(response.json())


def test_multi_stage_recipe_on_the_real_teacher(
    generation: Generation, client: TestClient, admin: dict[str, str], real_db_url: str, real_model_dir: Any
) -> None:
    done = job(client, admin, generation.multi_stage_job)
    assert done["status"] == "succeeded", done["last_error"]
    assert done["progress"]["items_done"] == len(TOPICS)
    samples = stored_samples(real_db_url, generation.multi_stage_job)
    assert done["progress"]["samples_written"] == len(samples)
    by_key = {(s.item_index, s.stage, s.sample_index): s for s in samples}
    questions = [s for s in samples if s.stage == "questions"]
    answers = [s for s in samples if s.stage == "answer"]
    judges = [s for s in samples if s.stage == "judge"]
    assert {s.item_index for s in questions if s.parse_status == "ok"} == {0, 1, 2}
    assert len(questions) <= 2 * len(TOPICS), "max_items 2 per completion"
    assert answers
    assert len(judges) == len(answers), "every answer is judged"

    for answer in answers:  # each answer continues a question of its item, asked as written
        parent = by_key[(answer.item_index, "questions", answer.parent_sample_index)]
        assert parent.parse_status == "ok"
        assert answer.question == parent.parsed
        assert answer.inputs == {**TOPICS[answer.item_index], "questions": parent.parsed}
        assert "\n" not in answer.raw_text, "the stop string ends the answer"
        assert answer.answer
        assert answer.answer == answer.raw_text.strip()
    # Judges use structured outputs over the real vocabulary: an integer in range, every time.
    assert all(judge.parse_status == "ok" for judge in judges), [j.raw_text for j in judges]
    for judge in judges:
        assert 1 <= judge.parsed <= 10
        target = by_key[(judge.item_index, "answer", judge.parent_sample_index)]
        assert target.score == judge.parsed, "the judge's score lands on the answer it judged"

    for sample in samples:
        provenance = sample.provenance
        assert provenance["teacher_model"] == str(real_model_dir)
        assert provenance["recipe"] == "real-self-instruct"
        assert provenance["stage"] == sample.stage
        assert len(provenance["template_sha256"]) == 64
        assert provenance["sampling"]["seed"] == provenance["seed"]
        # The default system prompt of SmolLM2's template is not added: our stages give their own.
        assert provenance["prompt_tokens"] > 10
        assert provenance["completion_tokens"] > 0
        assert provenance["finish_reason"] in ("stop", "length")
        assert provenance["latency_seconds"] > 0
        assert "<|im_end|>" not in sample.raw_text
        assert "<|im_start|>" not in sample.raw_text
    # Greedy answers of the real model are right on simple facts about France.
    print("\nmulti-stage answers:", [(a.question, a.answer, a.score) for a in answers])


def test_json_schema_stage_parses_with_the_real_vocabulary(generation: Generation, real_db_url: str) -> None:
    records = stored_samples(real_db_url, generation.capitals_job, "record")
    assert len(records) == len(CAPITALS), "one record per country (the over-long row stopped earlier)"
    parsed = [r for r in records if r.parse_status == "ok"]
    rate = len(parsed) / len(records)
    print(f"\nJSON-schema parse rate (in-process vLLM): {rate:.3f} ({len(parsed)}/{len(records)})")
    assert rate >= MIN_JSON_PARSE_RATE, [
        (r.raw_text, r.parse_error) for r in records if r.parse_status != "ok"
    ]
    for record in parsed:
        value = json.loads(record.raw_text, strict=False)
        assert value == record.parsed
        assert set(value) == set(RECORD_SCHEMA["required"])
        assert all(isinstance(v, str) and len(v) <= RECORD_MAX_CHARS for v in value.values())
    for failure in (r for r in records if r.parse_status != "ok"):
        assert failure.provenance["finish_reason"] == "length", "only a cut completion may fail to parse"
        assert failure.parse_error, "a failure keeps a reason"
        assert failure.raw_text, "a failure keeps the teacher's text"
    right = sum(1 for r in parsed if CAPITALS.get(r.parsed["country"]) == r.parsed["capital"])
    print(f"JSON records with the right capital: {right}/{len(parsed)}")


def test_answers_end_where_the_model_stops_and_the_finish_reason_is_stored(
    generation: Generation, real_db_url: str
) -> None:
    capitals = [
        s
        for s in stored_samples(real_db_url, generation.capitals_job, "capital")
        if s.item_index < len(CAPITALS)
    ]
    assert len(capitals) == len(CAPITALS)
    # A short answer ends at the end-of-turn token (EOS): finish_reason "stop", no special token in
    # the text, far fewer tokens than max_tokens.
    at_eos = [
        s for s in capitals if s.provenance["finish_reason"] == "stop" and s.provenance["stop_reason"] is None
    ]
    assert len(at_eos) >= len(capitals) // 2, [(s.raw_text, s.provenance["finish_reason"]) for s in capitals]
    assert min(s.provenance["completion_tokens"] for s in at_eos) < 16
    for sample in at_eos:
        assert sample.provenance["completion_tokens"] <= 16
        assert sample.raw_text.strip()
        assert "<|im_end|>" not in sample.raw_text
    right = sum(1 for s in capitals if s.answer and s.inputs["reference"].lower() in s.answer.lower())
    print(f"\ncapitals right (greedy): {right}/{len(capitals)}")
    assert right >= len(capitals) // 2, "the real model knows most of these capitals"

    # A stop string ends the list before it: excluded from the text, finish_reason "stop".
    fruits = stored_samples(real_db_url, generation.capitals_job, "fruits")
    assert fruits
    assert all(FRUITS_STOP not in sample.raw_text for sample in fruits)
    cut = [s for s in fruits if s.provenance["stop_reason"] == FRUITS_STOP]
    assert len(cut) >= len(fruits) // 2, [(s.raw_text, s.provenance["finish_reason"]) for s in fruits]
    assert all(s.provenance["finish_reason"] == "stop" for s in cut)
    assert any("3." in s.raw_text for s in cut), "the list ran up to the stop string"
    # max_tokens cuts the essay: finish_reason "length" and exactly max_tokens tokens.
    essays = stored_samples(real_db_url, generation.capitals_job, "essay")
    assert essays
    for sample in essays:
        assert sample.provenance["finish_reason"] == "length"
        assert sample.provenance["completion_tokens"] == ESSAY_MAX_TOKENS


def test_a_prompt_longer_than_the_context_is_a_failed_sample_and_the_job_completes(
    generation: Generation, client: TestClient, admin: dict[str, str], real_db_url: str
) -> None:
    for job_id, countries in (
        (generation.capitals_job, len(CAPITALS)),
        (generation.served_job, SERVED_COUNTRIES),
    ):
        done = job(client, admin, job_id)
        assert done["status"] == "succeeded", done["last_error"]
        assert done["progress"]["items_done"] == countries + 1
        assert all(shard["attempts"] == 1 for shard in done["shards"]), "no retry, no crash"
        too_long = [s for s in stored_samples(real_db_url, job_id) if s.item_index == countries]
        assert [s.stage for s in too_long] == ["capital"], "the branch ends at its first stage"
        failed = too_long[0]
        assert failed.parse_status == "failed"
        assert failed.answer is None
        assert failed.provenance["error"] == "engine"
        assert failed.parse_error.startswith("engine error: ")
        reason = failed.parse_error.lower()
        assert str(CONTEXT) in reason or "context" in reason or "maximum" in reason, failed.parse_error
        print(f"\nover-long prompt, job {job_id}: {failed.parse_error[:200]}")


def test_the_openai_engine_against_a_real_vllm_server(
    generation: Generation, client: TestClient, admin: dict[str, str], real_db_url: str
) -> None:
    done = job(client, admin, generation.served_job)
    assert done["status"] == "succeeded", done["last_error"]
    assert done["teacher"]["engine"] == "openai"
    served = stored_samples(real_db_url, generation.served_job)
    offline = stored_samples(real_db_url, generation.capitals_job)
    for sample in served:
        assert sample.provenance["teacher_model"] == "smollm2-135m-instruct"
    capitals = [s for s in served if s.stage == "capital" and s.item_index < SERVED_COUNTRIES]
    assert len(capitals) == SERVED_COUNTRIES
    for sample in capitals:
        assert sample.provenance["prompt_tokens"] > 10
        assert sample.provenance["completion_tokens"] > 0
        assert sample.provenance["finish_reason"] in ("stop", "length")
    # Greedy, same folder, same chat template: the server answers as the offline engine does.
    offline_capitals = {s.item_index: s.raw_text for s in offline if s.stage == "capital"}
    same = sum(1 for s in capitals if s.raw_text == offline_capitals.get(s.item_index))
    print(f"\nserved greedy answers equal to the offline engine's: {same}/{len(capitals)}")
    assert same >= len(capitals) * 3 // 4
    # response_format json_schema: structured outputs through the server, with the real vocabulary.
    records = [s for s in served if s.stage == "record"]
    rate = sum(1 for r in records if r.parse_status == "ok") / len(records)
    print(f"JSON-schema parse rate (OpenAI server): {rate:.3f}")
    assert rate >= MIN_JSON_PARSE_RATE
    fruits = [s for s in served if s.stage == "fruits"]
    assert fruits
    assert all(FRUITS_STOP not in s.raw_text for s in fruits)
    # The server reports what stopped each completion as the offline engine does (vLLM's stop_reason).
    assert sum(s.provenance["stop_reason"] == FRUITS_STOP for s in fruits) >= len(fruits) // 2
    assert any(
        s.provenance["finish_reason"] == "stop" and s.provenance["stop_reason"] is None for s in capitals
    ), "some answers end at EOS"
    essays = [s for s in served if s.stage == "essay"]
    assert essays
    assert all(s.provenance["finish_reason"] == "length" for s in essays)
    assert all(s.provenance["completion_tokens"] == ESSAY_MAX_TOKENS for s in essays)
