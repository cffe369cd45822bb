"""A teacher behind any OpenAI-compatible server (`vllm serve`, the vLLM module entry point, ...).

Requests go to `POST {base_url}/chat/completions` with async httpx: at most `concurrency` in flight,
a timeout per request, and retries with exponential backoff (honouring `Retry-After`) on 429, 5xx
and connection errors. A 4xx other than 429 (e.g. a prompt longer than the context) fails only
that request: it becomes a GenerationResult with `error` set, and the pipeline keeps it as a
failed sample. A server that stays unavailable after the retries raises `TeacherUnavailableError`.

`n > 1` is sent as n requests with seeds `seed + k`, which is how vLLM itself seeds the k-th
completion of an n-request: the samples match the offline engine's convention, and every
completion gets its own exact token count (the API only reports totals per request).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import random
import time
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

import httpx

from generator.engines.base import Completion, GenerationRequest, GenerationResult, TeacherConfig
from generator.soft_labels import SoftLabels, from_position_logprobs

_RETRY_STATUSES = frozenset({408, 409, 425, 429}) | frozenset(range(500, 600))
_MAX_BACKOFF_SECONDS = 30.0


class TeacherUnavailableError(RuntimeError):
    """The server kept failing (429/5xx/connection errors) after every retry."""


class _RequestRefused(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def api_base_url(base_url: str) -> str:
    """`http://host:8000` → `http://host:8000/v1/`; a URL with a path is kept as given (plus '/')."""
    parts = urlsplit(base_url)
    if parts.path in ("", "/"):
        base_url = base_url.rstrip("/") + "/v1"
    return base_url.rstrip("/") + "/"


class OpenAIEngine:
    """Chat completions from an OpenAI-compatible server. `generate` is synchronous (runs its own loop)."""

    def __init__(
        self,
        config: TeacherConfig,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        backoff_seconds: float = 0.5,
    ) -> None:
        """Args:
        config: `base_url` is required; `model` is the served model name.
        transport: an httpx transport to use instead of the network (tests).
        backoff_seconds: first retry delay; doubles per attempt (with jitter), capped at 30 s.
        """
        if not config.base_url:
            raise ValueError("teacher.base_url is required for the 'openai' engine")
        self._api_key = config.resolve_api_key()  # kept in memory only, never in the config
        self._config = config
        self._base_url = api_base_url(config.base_url)
        self._transport = transport
        self._backoff_seconds = backoff_seconds

    @property
    def model_id(self) -> str:
        return self._config.model

    @property
    def revision(self) -> str | None:
        return self._config.revision

    def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        """Send the batch (bounded concurrency); results are in request order."""
        if not requests:
            return []
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(self._generate(requests))
        # Called from inside an event loop (e.g. an async caller): run ours on a helper thread.
        with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
            return pool.submit(asyncio.run, self._generate(requests)).result()

    def close(self) -> None:
        """Nothing to release: each `generate` call opens and closes its own connection pool."""

    def request_bodies(self, request: GenerationRequest) -> list[dict[str, Any]]:
        """The JSON bodies for one request: one per completion when seeded (seed + k)."""
        spec = request.sampling
        body: dict[str, Any] = {
            "model": self._config.model,
            "messages": request.messages,
            "temperature": spec.temperature,
            "top_p": spec.top_p,
            "max_tokens": spec.max_tokens,
        }
        if spec.stop:
            body["stop"] = spec.stop
        # vLLM extensions: sent only when used, so strict servers accept the common case.
        if spec.top_k:
            body["top_k"] = spec.top_k
        if spec.min_tokens:
            body["min_tokens"] = spec.min_tokens
        if spec.ignore_eos:
            body["ignore_eos"] = True
        if spec.logprobs is not None:
            body["logprobs"] = True
            body["top_logprobs"] = spec.logprobs
            # vLLM extension: tokens come back as "token_id:<id>", the ids soft labels are stored by.
            body["return_tokens_as_token_ids"] = True
        if request.json_schema is not None:
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "output", "schema": request.json_schema, "strict": True},
            }
        body.update(self._config.extra_body)
        if spec.seed is None:
            return [{**body, "n": spec.n}]
        return [{**body, "n": 1, "seed": spec.seed + k} for k in range(spec.n)]

    async def _generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        headers = {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}
        limits = httpx.Limits(max_connections=self._config.concurrency)
        semaphore = asyncio.Semaphore(self._config.concurrency)
        async with httpx.AsyncClient(
            base_url=self._base_url,
            headers=headers,
            timeout=self._config.timeout_seconds,
            limits=limits,
            transport=self._transport,
        ) as client:
            return list(await asyncio.gather(*(self._one(client, semaphore, r) for r in requests)))

    async def _one(
        self, client: httpx.AsyncClient, semaphore: asyncio.Semaphore, request: GenerationRequest
    ) -> GenerationResult:
        bodies = self.request_bodies(request)
        outcomes = await asyncio.gather(
            *(self._post(client, semaphore, body) for body in bodies), return_exceptions=True
        )
        replies: list[tuple[dict[str, Any], float]] = []
        refusal: _RequestRefused | None = None
        for outcome in outcomes:
            if isinstance(outcome, _RequestRefused):
                refusal = refusal or outcome
            elif isinstance(outcome, BaseException):
                raise outcome
            else:
                replies.append(outcome)
        if refusal is not None:
            return GenerationResult(
                completions=[], prompt_tokens=0, latency_seconds=0.0, error=refusal.message
            )
        completions: list[Completion] = []
        for data, _latency in replies:
            choices = data.get("choices") or []
            usage = data.get("usage") or {}
            for choice in choices:
                message = choice.get("message") or {}
                tokens = usage.get("completion_tokens", 0) if len(choices) == 1 else 0
                completions.append(
                    Completion(
                        message.get("content") or "",
                        tokens,
                        choice.get("finish_reason"),
                        stop_reason=choice.get("stop_reason"),  # a vLLM extension; absent elsewhere
                        soft_labels=choice_soft_labels(choice, request.sampling.logprobs),
                    )
                )
        prompt_tokens = int((replies[0][0].get("usage") or {}).get("prompt_tokens", 0))
        return GenerationResult(completions, prompt_tokens, max(latency for _data, latency in replies))

    async def _post(
        self, client: httpx.AsyncClient, semaphore: asyncio.Semaphore, body: dict[str, Any]
    ) -> tuple[dict[str, Any], float]:
        attempts = self._config.max_retries + 1
        problem = ""
        for attempt in range(attempts):
            retry_after: float | None = None
            async with semaphore:
                started = time.perf_counter()
                try:
                    response = await client.post("chat/completions", json=body)
                except httpx.TransportError as error:  # connection refused/reset, timeouts
                    problem = f"{type(error).__name__}: {error}"
                else:
                    latency = time.perf_counter() - started
                    if response.status_code == 200:
                        data = response.json()
                        if not isinstance(data, dict):
                            raise TeacherUnavailableError(
                                f"unexpected reply from {self._base_url}: {data!r:.200}"
                            )
                        return data, latency
                    problem = f"HTTP {response.status_code}: {_error_text(response)}"
                    if response.status_code not in _RETRY_STATUSES:
                        raise _RequestRefused(problem)
                    retry_after = _retry_after_seconds(response)
            if attempt + 1 < attempts:
                delay = min(self._backoff_seconds * 2**attempt, _MAX_BACKOFF_SECONDS)
                delay = delay * (0.5 + random.random() / 2)  # jitter: retries from many workers spread out
                if retry_after is not None:
                    delay = min(max(delay, retry_after), _MAX_BACKOFF_SECONDS)
                await asyncio.sleep(delay)
        raise TeacherUnavailableError(
            f"{self._base_url}chat/completions failed {attempts} times; last: {problem}"
        )


def choice_soft_labels(choice: dict[str, Any], k: int | None) -> SoftLabels | None:
    """The top-k of one chat choice's tokens, where the server returned them with token ids.

    None when not asked, when the server sent no logprobs, or when its tokens are not
    ``token_id:<id>`` strings (vLLM's `return_tokens_as_token_ids`): soft labels are stored by
    token id, and a token's text does not name its id reliably.
    """
    if k is None:
        return None
    content = (choice.get("logprobs") or {}).get("content")
    if not isinstance(content, list):
        return None
    token_ids: list[int] = []
    positions: list[dict[int, float]] = []
    for entry in content:
        token = _token_id(entry.get("token"))
        if token is None:
            return None
        position: dict[int, float] = {}
        for alternative in entry.get("top_logprobs") or []:
            alternative_id = _token_id(alternative.get("token"))
            if alternative_id is None:
                return None
            position[alternative_id] = _finite_or_floor(alternative.get("logprob"))
        position.setdefault(token, _finite_or_floor(entry.get("logprob")))
        token_ids.append(token)
        positions.append(position)
    return from_position_logprobs(token_ids, positions, k)


def _token_id(token: Any) -> int | None:
    if isinstance(token, str) and token.startswith("token_id:"):
        digits = token.removeprefix("token_id:")
        if digits.isdigit():
            return int(digits)
    return None


def _finite_or_floor(value: Any) -> float:
    # Servers send -9999.0 (or null) for an impossible token; keep it as "impossible".
    return float(value) if isinstance(value, int | float) else float("-inf")


def _error_text(response: httpx.Response) -> str:
    try:
        data = response.json()
    except ValueError:
        return response.text[:300]
    if isinstance(data, dict):
        error = data.get("error", data)
        if isinstance(error, dict):
            return str(error.get("message", error))[:300]
        return str(error)[:300]
    return str(data)[:300]


def _retry_after_seconds(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None
