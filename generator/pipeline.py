"""Run a recipe: seed rows → rendered prompts → one batched engine call per stage per chunk → samples.

Items are processed `chunk_size` at a time through *all* stages, and each chunk is yielded as soon
as it is done, so a caller can persist as it goes (a resumed shard redoes at most one chunk).

Within a chunk, every stage sends the requests of all live branches in one `engine.generate`
call (the engine batches them). A branch is one path through the stages: the seed row plus the
parsed outputs of earlier stages. A list parser or n > 1 fans a branch out; a failed parse (or a
template/engine error for that branch) ends it, and the failure is kept as a sample.

Determinism: every request's seed is derived from (recipe seed, item_index, stage index, parent
sample_index, stage seed offset), and sample indices are a fixed enumeration (branches in order,
then completions, then list items), so the same recipe, rows and engine reproduce the same samples.
"""

from __future__ import annotations

import itertools
import time
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from generator.derived_seeds import derive_seed
from generator.engines.base import Engine, GenerationRequest, GenerationResult, SamplingSpec
from generator.parsers import ParseOutcome, answer_text, engine_json_schema, parse_completion
from generator.recipe import CompiledStage, Recipe, compile_stages
from generator.samples import ChunkResult, GeneratedSample
from generator.soft_labels import pack as pack_soft_labels
from generator.templates import TemplateError


@dataclass
class _Branch:
    item_index: int
    context: dict[str, Any]  # what templates see: seed row + earlier stages' parsed values
    parent_sample_index: int | None = None
    # The sample of each earlier stage on this branch (judges set the score on theirs).
    ancestors: dict[str, GeneratedSample] = field(default_factory=dict)


@dataclass
class _Prepared:
    branch: _Branch
    question: str = ""
    seed: int = 0
    request_index: int | None = None  # position in the stage's batch; None when rendering failed
    render_error: TemplateError | None = None


def request_seed(recipe: Recipe, item_index: int, stage_index: int, parent_sample_index: int | None) -> int:
    """The seed of one request; completion k of it is sampled with `seed + k` (vLLM's n convention)."""
    parent = -1 if parent_sample_index is None else parent_sample_index
    offset = recipe.stages[stage_index].sampling.seed
    return derive_seed("request", recipe.seed, item_index, stage_index, parent, offset)


def run_recipe(
    recipe: Recipe,
    engine: Engine,
    rows: Sequence[dict[str, Any]],
    *,
    item_indices: Iterable[int] | None = None,
    chunk_size: int = 64,
) -> Iterator[ChunkResult]:
    """Generate samples for `rows`, one ChunkResult per `chunk_size` items, in item order.

    Args:
        recipe: a loaded recipe.
        engine: the teacher.
        rows: seed rows; `rows[i]` is item i (see `load_seed_rows`).
        item_indices: which items to run (e.g. a shard's range); default: all, in order.
        chunk_size: items per chunk; each stage of a chunk is one batched engine call.

    Raises (before anything is generated):
        TemplateError / RecipeError: the templates do not fit the rows' columns.
        ValueError: bad chunk_size or item index.
    """
    if chunk_size < 1:
        raise ValueError("chunk_size must be >= 1")
    columns = list(dict.fromkeys(itertools.chain.from_iterable(rows)))
    stages = compile_stages(recipe, columns)
    indices = list(range(len(rows)) if item_indices is None else item_indices)
    for index in indices:
        if not 0 <= index < len(rows):
            raise ValueError(f"item index {index} is out of range (0..{len(rows) - 1})")
    return _run_chunks(recipe, stages, engine, rows, indices, chunk_size)


def _run_chunks(
    recipe: Recipe,
    stages: list[CompiledStage],
    engine: Engine,
    rows: Sequence[dict[str, Any]],
    indices: list[int],
    chunk_size: int,
) -> Iterator[ChunkResult]:
    for start in range(0, len(indices), chunk_size):
        chunk = indices[start : start + chunk_size]
        yield _run_chunk(recipe, stages, engine, rows, chunk)


def _run_chunk(
    recipe: Recipe,
    stages: list[CompiledStage],
    engine: Engine,
    rows: Sequence[dict[str, Any]],
    chunk: list[int],
) -> ChunkResult:
    started = time.perf_counter()
    branches = [_Branch(item_index=i, context=dict(rows[i])) for i in chunk]
    samples: list[GeneratedSample] = []
    prompt_tokens = completion_tokens = 0
    for stage in stages:
        if not branches:
            break
        prepared, requests = _prepare(recipe, stage, branches)
        results = engine.generate(requests) if requests else []
        if len(results) != len(requests):
            raise RuntimeError(f"engine returned {len(results)} results for {len(requests)} requests")
        prompt_tokens += sum(result.prompt_tokens for result in results)
        completion_tokens += sum(c.completion_tokens for result in results for c in result.completions)
        stage_samples, branches = _collect(recipe, stage, engine, prepared, results)
        samples.extend(stage_samples)
    return ChunkResult(
        item_indices=list(chunk),
        samples=samples,
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        elapsed_seconds=time.perf_counter() - started,
    )


def _prepare(
    recipe: Recipe, stage: CompiledStage, branches: list[_Branch]
) -> tuple[list[_Prepared], list[GenerationRequest]]:
    sampling = stage.stage.sampling
    schema = engine_json_schema(stage.stage.parser)
    prepared: list[_Prepared] = []
    requests: list[GenerationRequest] = []
    for branch in branches:
        seed = request_seed(recipe, branch.item_index, stage.index, branch.parent_sample_index)
        try:
            messages, question = stage.render(branch.context)
        except TemplateError as error:
            prepared.append(_Prepared(branch, seed=seed, render_error=error))
            continue
        spec = SamplingSpec(
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            max_tokens=sampling.max_tokens,
            n=sampling.n,
            seed=seed,
            stop=list(sampling.stop) if sampling.stop else None,
            top_k=sampling.top_k,
            min_tokens=sampling.min_tokens,
            ignore_eos=sampling.ignore_eos,
            logprobs=sampling.logprobs,
        )
        prepared.append(_Prepared(branch, question=question, seed=seed, request_index=len(requests)))
        requests.append(GenerationRequest(messages=messages, sampling=spec, json_schema=schema))
    return prepared, requests


def _collect(
    recipe: Recipe,
    stage: CompiledStage,
    engine: Engine,
    prepared: list[_Prepared],
    results: list[GenerationResult],
) -> tuple[list[GeneratedSample], list[_Branch]]:
    """Turn a stage's results into samples (in deterministic order) and the next stage's branches."""
    name = stage.stage.name
    parser = stage.stage.parser
    next_index: dict[int, int] = defaultdict(int)
    samples: list[GeneratedSample] = []
    branches: list[_Branch] = []
    judged: dict[int, tuple[GeneratedSample, list[float]]] = {}

    def make(
        work: _Prepared,
        *,
        raw: str,
        outcome: ParseOutcome,
        value: Any,
        extra: dict[str, Any],
        soft_labels: bytes | None = None,
    ) -> GeneratedSample:
        item = work.branch.item_index
        sample = GeneratedSample(
            item_index=item,
            stage=name,
            sample_index=next_index[item],
            parent_sample_index=work.branch.parent_sample_index,
            question=work.question,
            answer=answer_text(value) if outcome.ok else None,
            raw_text=raw,
            parsed=value if outcome.ok else None,
            parse_ok=outcome.ok,
            parse_error=outcome.error,
            inputs=dict(work.branch.context),
            provenance=_provenance(recipe, stage, engine, work.seed, extra),
            soft_labels=soft_labels,
        )
        next_index[item] += 1
        samples.append(sample)
        return sample

    for work in prepared:
        if work.render_error is not None:
            failure = ParseOutcome(error=f"template error: {work.render_error}")
            make(work, raw="", outcome=failure, value=None, extra={"error": "template"})
            continue
        assert work.request_index is not None
        result = results[work.request_index]
        base = {"prompt_tokens": result.prompt_tokens, "latency_seconds": result.latency_seconds}
        if result.error is not None or not result.completions:
            failure = ParseOutcome(error=f"engine error: {result.error or 'no completion returned'}")
            make(work, raw="", outcome=failure, value=None, extra={**base, "error": "engine"})
            continue
        for k, completion in enumerate(result.completions):
            outcome = parse_completion(parser, completion.text)
            extra: dict[str, Any] = {
                **base,
                "completion_index": k,
                "completion_tokens": completion.completion_tokens,
                "finish_reason": completion.finish_reason,
                "stop_reason": completion.stop_reason,
            }
            packed: bytes | None = None
            if completion.soft_labels is not None:
                packed = pack_soft_labels(completion.soft_labels)
                extra["soft_labels"] = {
                    "k": completion.soft_labels.k,
                    "tokens": len(completion.soft_labels),
                    "bytes": len(packed),
                }
            if not outcome.ok:
                make(work, raw=completion.text, outcome=outcome, value=None, extra=extra, soft_labels=packed)
                continue
            several = stage.stage.parser.type == "list"
            for j, value in enumerate(outcome.values):
                sample = make(
                    work,
                    raw=completion.text,
                    outcome=outcome,
                    value=value,
                    extra={**extra, "list_index": j} if several else extra,
                    soft_labels=packed,
                )
                if stage.stage.judges is not None:
                    target = work.branch.ancestors[stage.stage.judges]
                    judged.setdefault(id(target), (target, []))[1].append(float(value))
                branches.append(
                    _Branch(
                        item_index=work.branch.item_index,
                        context={**work.branch.context, name: value},
                        parent_sample_index=sample.sample_index,
                        ancestors={**work.branch.ancestors, name: sample},
                    )
                )
    # Judges score their target with the mean of their parsed scores (n > 1 judges average).
    for target, scores in judged.values():
        target.score = sum(scores) / len(scores)
    return samples, branches


def _provenance(
    recipe: Recipe, stage: CompiledStage, engine: Engine, seed: int, extra: dict[str, Any]
) -> dict[str, Any]:
    sampling = {**stage.sampling_params, "seed_offset": stage.stage.sampling.seed, "seed": seed}
    return {
        "teacher_model": engine.model_id,
        "teacher_revision": engine.revision,
        "recipe": recipe.name,
        "stage": stage.stage.name,
        "stage_index": stage.index,
        "template_sha256": stage.template_sha256,
        "parser": stage.stage.parser.type,
        "sampling": sampling,
        "seed": seed,
        "prompt_tokens": 0,
        "completion_tokens": 0,
        "finish_reason": None,
        "stop_reason": None,
        "latency_seconds": 0.0,
        **extra,
    }
