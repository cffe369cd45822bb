"""The engine Protocol: the one thing the pipeline needs from a teacher backend."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field


class TeacherConfig(BaseModel):
    """Which teacher to run and how. Stored on a job as JSON; the worker builds the engine from it."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(description="Model folder path, or hub id where a hub is reachable.")
    engine: Literal["vllm", "openai"] = "vllm"
    revision: str | None = None
    # vLLM offline engine options
    dtype: str = "auto"
    max_model_len: int | None = Field(default=None, ge=16)
    tensor_parallel_size: int = Field(default=1, ge=1)
    data_parallel_size: int = Field(default=1, ge=1)
    gpu_memory_utilization: float = Field(default=0.9, gt=0, le=1)
    kv_cache_memory_bytes: int | None = Field(default=None, ge=1 << 20)
    enforce_eager: bool = False
    max_num_seqs: int | None = Field(default=None, ge=1)
    engine_kwargs: dict[str, Any] = Field(default_factory=dict)
    # OpenAI-compatible server options
    base_url: str | None = None
    api_key: str | None = None
    concurrency: int = Field(default=16, ge=1, le=1024)
    timeout_seconds: float = Field(default=120.0, gt=0)
    max_retries: int = Field(default=5, ge=0, le=20)
    extra_body: dict[str, Any] = Field(
        default_factory=dict,
        description="OpenAI engine: extra fields merged into every request body (server-specific options).",
    )


@dataclass
class SamplingSpec:
    """Sampling parameters of one request (a stage's params plus the derived per-request seed)."""

    temperature: float = 1.0
    top_p: float = 1.0
    max_tokens: int = 256
    n: int = 1
    seed: int | None = None
    stop: list[str] | None = None
    top_k: int | None = None
    min_tokens: int = 0
    ignore_eos: bool = False


@dataclass
class GenerationRequest:
    """One prompt to the teacher: chat messages, sampling, and an optional JSON schema to enforce."""

    messages: list[dict[str, str]]
    sampling: SamplingSpec
    json_schema: dict[str, Any] | None = None


@dataclass
class Completion:
    text: str
    completion_tokens: int
    finish_reason: str | None


@dataclass
class GenerationResult:
    """The teacher's answer to one request: `n` completions plus counts and latency."""

    completions: list[Completion]
    prompt_tokens: int
    latency_seconds: float
    # Set (with no completions) when the teacher refused this one request, e.g. a prompt longer than
    # the context: the pipeline keeps it as a failed sample instead of failing the whole batch.
    error: str | None = None


class Engine(Protocol):
    """A teacher backend. Implementations: vllm_engine.VLLMEngine, openai_engine.OpenAIEngine."""

    @property
    def model_id(self) -> str: ...

    @property
    def revision(self) -> str | None: ...

    def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        """Run a batch; results are in request order."""
        ...

    def close(self) -> None: ...
