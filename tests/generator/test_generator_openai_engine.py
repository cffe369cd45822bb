"""The OpenAI-compatible engine: against a real vLLM server, and retry/backoff/concurrency logic
against a local httpx mock transport."""

from __future__ import annotations

import asyncio
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import httpx
import pytest

from generator.engines import build_engine
from generator.engines.base import GenerationRequest, SamplingSpec, TeacherConfig, TeacherSecretError
from generator.engines.openai_engine import OpenAIEngine, TeacherUnavailableError, api_base_url
from generator.pipeline import run_recipe
from generator.recipe import load_recipe

TOPICS = [{"topic": "rain"}, {"topic": "snow"}]


def server_engine(server: Any) -> Any:
    config = TeacherConfig(model=server.model, engine="openai", base_url=server.base_url, concurrency=4)
    return build_engine(config)


def recipe(seed: int = 0) -> Any:
    return load_recipe(
        {
            "name": "served",
            "seed": seed,
            "seeds": {"records": TOPICS},
            "stages": [
                {
                    "name": "questions",
                    "messages": [{"role": "user", "content": "Questions about {{ topic }}"}],
                    "sampling": {"temperature": 1.0, "max_tokens": 16},
                    "parser": {"type": "list", "max_items": 2},
                },
                {
                    "name": "answer",
                    "messages": [{"role": "user", "content": "{{ questions }}"}],
                    "sampling": {"temperature": 1.0, "max_tokens": 32, "n": 2},
                    "parser": {
                        "type": "json",
                        "schema": {
                            "type": "object",
                            "properties": {"answer": {"type": "integer"}},
                            "required": ["answer"],
                            "additionalProperties": False,
                        },
                    },
                },
                {
                    "name": "judge",
                    "judges": "answer",
                    "messages": [{"role": "user", "content": "{{ questions }} {{ answer }} score:"}],
                    "sampling": {"max_tokens": 4},
                    "parser": {"type": "score", "structured": True},
                },
            ],
        }
    )


def test_multi_stage_recipe_through_a_real_vllm_server(openai_server: Any) -> None:
    engine = server_engine(openai_server)
    samples = [s for chunk in run_recipe(recipe(), engine, TOPICS) for s in chunk.samples]
    answers = [s for s in samples if s.stage == "answer"]
    assert answers
    for answer in answers:
        assert answer.provenance["teacher_model"] == openai_server.model
        assert answer.provenance["prompt_tokens"] > 0
        assert answer.provenance["completion_tokens"] > 0  # per completion, even with n = 2
        if answer.provenance["finish_reason"] == "stop":  # structured outputs via response_format
            assert answer.parse_ok, answer.parse_error
            assert set(json.loads(answer.raw_text)) == {"answer"}
    judged = [s for s in answers if s.parse_ok]
    assert judged
    assert all(s.score is not None and 1 <= s.score <= 10 for s in judged)

    again = [s for chunk in run_recipe(recipe(), engine, TOPICS) for s in chunk.samples]
    assert [s.raw_text for s in again] == [s.raw_text for s in samples]  # seeds reach the server
    other = [s for chunk in run_recipe(recipe(seed=9), engine, TOPICS) for s in chunk.samples]
    assert [s.raw_text for s in other] != [s.raw_text for s in samples]


def test_a_too_long_prompt_is_refused_by_the_server_without_failing_the_batch(openai_server: Any) -> None:
    engine = server_engine(openai_server)
    requests = [
        GenerationRequest([{"role": "user", "content": "hello"}], SamplingSpec(max_tokens=4, seed=1)),
        GenerationRequest([{"role": "user", "content": "word " * 700}], SamplingSpec(max_tokens=4, seed=1)),
    ]
    ok, refused = engine.generate(requests)
    assert ok.error is None
    assert ok.completions
    assert refused.completions == []
    assert refused.error is not None
    assert refused.error.startswith("HTTP 400")


# --- retry, backoff and concurrency logic on a mock transport -----------------------------------


def reply(text: str = "ok", prompt_tokens: int = 5, completion_tokens: int = 2) -> httpx.Response:
    body = {
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens},
    }
    return httpx.Response(200, json=body)


def mock_engine(handler: Any, **config: Any) -> OpenAIEngine:
    settings = {
        "model": "m",
        "engine": "openai",
        "base_url": "http://teacher:8000",
        "max_retries": 3,
        **config,
    }
    transport = httpx.MockTransport(handler)
    return OpenAIEngine(TeacherConfig(**settings), transport=transport, backoff_seconds=0.001)


def one_request(**sampling: Any) -> list[GenerationRequest]:
    return [GenerationRequest([{"role": "user", "content": "hi"}], SamplingSpec(**sampling))]


def test_retries_429_and_5xx_then_succeeds() -> None:
    statuses = iter([429, 503, 200])
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        status = next(statuses)
        if status == 200:
            return reply("fine")
        return httpx.Response(status, headers={"retry-after": "0"}, json={"error": {"message": "busy"}})

    [result] = mock_engine(handler).generate(one_request(seed=3))
    assert [c.text for c in result.completions] == ["fine"]
    assert len(seen) == 3
    assert str(seen[0].url) == "http://teacher:8000/v1/chat/completions"


def test_retries_connection_errors() -> None:
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise httpx.ConnectError("refused", request=request)
        return reply()

    [result] = mock_engine(handler).generate(one_request())
    assert result.completions[0].text == "ok"
    assert calls == 2


def test_gives_up_after_max_retries() -> None:
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        return httpx.Response(500, text="boom")

    with pytest.raises(TeacherUnavailableError, match="failed 3 times; last: HTTP 500: boom"):
        mock_engine(handler, max_retries=2).generate(one_request())
    assert calls == 3


def test_client_errors_fail_only_that_request_without_retrying() -> None:
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        prompt = json.loads(request.content)["messages"][0]["content"]
        if prompt == "too long":
            return httpx.Response(400, json={"error": {"message": "maximum context length exceeded"}})
        return reply(prompt.upper())

    requests = [
        GenerationRequest([{"role": "user", "content": text}], SamplingSpec())
        for text in ("a", "too long", "b")
    ]
    results = mock_engine(handler).generate(requests)
    assert [r.error for r in results] == [None, "HTTP 400: maximum context length exceeded", None]
    assert [c.text for c in results[2].completions] == ["B"]
    assert calls == 3


def test_concurrency_is_bounded() -> None:
    in_flight = peak = 0

    async def handler(request: httpx.Request) -> httpx.Response:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0.02)
        in_flight -= 1
        return reply()

    requests = one_request(n=3, seed=1) * 4  # 12 HTTP requests
    results = mock_engine(handler, concurrency=2).generate(requests)
    assert len(results) == 4
    assert all(len(r.completions) == 3 for r in results)
    assert peak == 2


def test_n_is_sent_as_seeded_requests_and_the_schema_as_response_format() -> None:
    bodies: list[dict[str, Any]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        bodies.append(body)
        return reply(f"seed {body['seed']}", completion_tokens=body["seed"] % 7 + 1)

    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    request = GenerationRequest(
        [{"role": "user", "content": "hi"}],
        SamplingSpec(n=3, seed=100, temperature=0.5, max_tokens=9, stop=["\n"], min_tokens=2),
        json_schema=schema,
    )
    engine = mock_engine(handler, extra_body={"repetition_penalty": 1.1})
    [result] = engine.generate([request])
    assert sorted(b["seed"] for b in bodies) == [100, 101, 102]
    assert [c.text for c in result.completions] == ["seed 100", "seed 101", "seed 102"]
    assert [c.completion_tokens for c in result.completions] == [3, 4, 5]
    body = bodies[0]
    assert body["n"] == 1
    assert body["model"] == "m"
    assert (body["temperature"], body["max_tokens"], body["stop"], body["min_tokens"]) == (0.5, 9, ["\n"], 2)
    assert body["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "output", "schema": schema, "strict": True},
    }
    assert body["repetition_penalty"] == 1.1
    assert "ignore_eos" not in body  # vLLM-only fields are sent only when used
    assert asdict(result)["prompt_tokens"] == 5


def test_auth_header_and_base_url_forms(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    headers: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        headers.append(request.headers.get("authorization"))
        return reply()

    monkeypatch.setenv("TEACHER_KEY_FOR_TEST", "k")
    mock_engine(handler, api_key_env="TEACHER_KEY_FOR_TEST").generate(one_request())
    (tmp_path / "key").write_text(" f\n")
    mock_engine(handler, api_key_file=str(tmp_path / "key")).generate(one_request())
    assert headers == ["Bearer k", "Bearer f"]
    monkeypatch.delenv("TEACHER_KEY_FOR_TEST")
    with pytest.raises(TeacherSecretError, match="TEACHER_KEY_FOR_TEST is not set"):
        mock_engine(handler, api_key_env="TEACHER_KEY_FOR_TEST")
    with pytest.raises(ValueError, match="api_key_env"):
        TeacherConfig(model="m", engine="openai", api_key="sk-plain")
    assert "api_key" not in TeacherConfig(model="m", api_key_env="K").model_dump()
    assert api_base_url("http://h:1") == "http://h:1/v1/"
    assert api_base_url("http://h:1/v1") == "http://h:1/v1/"
    assert api_base_url("https://api.example.com/openai/v1/") == "https://api.example.com/openai/v1/"
    with pytest.raises(ValueError, match="base_url is required"):
        OpenAIEngine(TeacherConfig(model="m", engine="openai"))
