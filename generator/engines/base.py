"""The engine Protocol: the one thing the pipeline needs from a teacher backend."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, field_validator

from generator.soft_labels import SoftLabels

PLAIN_API_KEY_REFUSED = (
    "a plain api_key is never stored: give api_key_env (the name of an environment variable the "
    "worker reads the key from) or api_key_file (the path of a file the worker reads it from)"
)


class TeacherSecretError(ValueError):
    """The teacher's API key could not be read from the environment variable or file it names."""


MAX_PRICE = 1e9


class TokenPrice(BaseModel):
    """What a teacher's tokens cost, per million (any currency; the API reports costs in it)."""

    model_config = ConfigDict(extra="forbid")

    # Bounded so that a cost (tokens x price) stays a finite JSON number.
    input: float = Field(
        ge=0, le=MAX_PRICE, allow_inf_nan=False, description="Price of a million prompt tokens."
    )
    output: float = Field(
        ge=0, le=MAX_PRICE, allow_inf_nan=False, description="Price of a million completion tokens."
    )

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        """The price of that many prompt and completion tokens."""
        return (prompt_tokens * self.input + completion_tokens * self.output) / 1_000_000


class TeacherConfig(BaseModel):
    """Which teacher to run and how. Stored on a job as JSON; the worker builds the engine from it."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(
        description="Model folder (or GGUF file) path: absolute, starting with '.' or '~', or existing; "
        "any other name is a hub id (where a hub is reachable). The openai engine: the served model name."
    )
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
    # Secrets by reference only: a config is stored (job rows, run evaluations), a key must not be.
    api_key: str | None = Field(
        default=None, exclude=True, description="Refused: use api_key_env or api_key_file."
    )
    api_key_env: str | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="OpenAI engine: the environment variable the worker reads the API key from.",
    )
    api_key_file: str | None = Field(
        default=None,
        min_length=1,
        max_length=4096,
        description="OpenAI engine: a file the worker reads the API key from (whitespace around it dropped).",
    )
    concurrency: int = Field(default=16, ge=1, le=1024)
    timeout_seconds: float = Field(default=120.0, gt=0)
    max_retries: int = Field(default=5, ge=0, le=20)
    extra_body: dict[str, Any] = Field(
        default_factory=dict,
        description="OpenAI engine: extra fields merged into every request body (server-specific options).",
    )
    # Accounting only (never sent to the teacher): costs and budgets of the jobs that use it.
    price_per_million_tokens: TokenPrice | None = Field(
        default=None,
        description="What the teacher charges per million prompt (`input`) and completion (`output`) "
        "tokens, e.g. a hosted OpenAI-compatible endpoint's list price: jobs then report an estimate at "
        "submission and their cost, and may set `budget.max_cost`.",
    )

    @field_validator("api_key")
    @classmethod
    def _no_plain_api_key(cls, api_key: str | None) -> None:
        if api_key is not None:
            raise ValueError(PLAIN_API_KEY_REFUSED)

    def resolve_api_key(self) -> str | None:
        """The API key, read now from `api_key_env` or `api_key_file` (None when neither is given).

        Raises:
            TeacherSecretError: the variable is unset or empty, or the file is unreadable or empty.
        """
        if self.api_key_env is not None:
            value = os.environ.get(self.api_key_env, "").strip()
            if not value:
                raise TeacherSecretError(
                    f"teacher api_key_env: the environment variable {self.api_key_env} is not set "
                    "(or empty) in the worker"
                )
            return value
        if self.api_key_file is not None:
            path = Path(self.api_key_file).expanduser()
            try:
                value = path.read_text(encoding="utf-8").strip()
            except (OSError, UnicodeDecodeError) as exc:
                raise TeacherSecretError(f"teacher api_key_file: cannot read {path}: {exc}") from exc
            if not value:
                raise TeacherSecretError(f"teacher api_key_file: {path} is empty")
            return value
        return None


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
    # Top-k log-probabilities to return for every generated token (1..20); None: none.
    logprobs: int | None = None


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
    # What ended a "stop" completion: the stop string (excluded from `text`) or a stop token id;
    # None for the model's own end of sequence (EOS) and for "length".
    stop_reason: str | int | None = None
    # With SamplingSpec.logprobs: the teacher's top-k at every generated token (its token ids too).
    soft_labels: SoftLabels | None = None


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
