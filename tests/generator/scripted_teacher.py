"""A scripted fake teacher for fast tests of pipeline logic (the real engines have their own tests)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from generator.engines.base import Completion, GenerationRequest, GenerationResult


@dataclass
class ScriptedEngine:
    """A fake teacher for fast logic tests: `reply(request, k)` gives completion k's text."""

    reply: Callable[[GenerationRequest, int], str]
    calls: list[list[GenerationRequest]] = field(default_factory=list)
    model_id: str = "scripted"
    revision: str | None = "r1"

    def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        self.calls.append(list(requests))
        results = []
        for request in requests:
            texts = [self.reply(request, k) for k in range(request.sampling.n)]
            completions = [Completion(text, len(text.split()), "stop") for text in texts]
            results.append(GenerationResult(completions, prompt_tokens=7, latency_seconds=0.01))
        return results

    def close(self) -> None:
        pass


def last_user_message(request: GenerationRequest) -> str:
    return [m["content"] for m in request.messages if m["role"] == "user"][-1]
