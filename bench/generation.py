"""Generation throughput: the generator pipeline vs raw `vllm.LLM.generate` on the same work.

The same N prompts (default 512) × T output tokens (default 64, forced with min_tokens/ignore_eos so
both sides produce exactly the same number of tokens, with the same per-request seeds) go through:

- raw:      prompts chat-templated and tokenized *before* timing, then one `LLM.generate` call;
- pipeline: `run_recipe` on a one-stage recipe over N seed rows: template rendering, chat template,
            tokenization, the same `LLM.generate` batch, parsing and sample building, all timed.

One process, one `vllm.LLM` instance shared by both. Rounds alternate raw/pipeline so machine noise
hits both; the best round of each is compared. Goal: pipeline ≥ 0.95 × raw.

    .venv/bin/python bench/generation.py                     # builds a tiny model under bench/out/
    .venv/bin/python bench/generation.py --model DIR --prompts 2048 --tokens 128
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


@dataclass
class Timing:
    wall: float
    cpu: float
    tokens: int
    outside_engine: float


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", type=Path, help="model folder (default: build a tiny model)")
    parser.add_argument("--prompts", type=int, default=512)
    parser.add_argument("--tokens", type=int, default=64, help="output tokens per prompt")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds of each side")
    parser.add_argument("--chunk-size", type=int, help="pipeline items per chunk (default: all prompts)")
    parser.add_argument("--max-model-len", type=int, default=512)
    parser.add_argument("--kv-cache-bytes", type=int, help="KV cache size (default on CPU: 1 GiB)")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--enforce-eager", action=argparse.BooleanOptionalAction, default=None)
    parser.add_argument("--min-ratio", type=float, help="exit 1 if pipeline/raw is below this")
    return parser.parse_args()


def tiny_model() -> Path:
    from trainer.tiny_model import TinyModelSpec, build_tiny_model

    out = ROOT / "bench" / "out" / "tiny-l4-h128-v512"
    if not (out / "config.json").exists():
        print(f"building a tiny model in {out} ...", flush=True)
        build_tiny_model(out, TinyModelSpec())
    return out


def main() -> int:
    args = parse_args()
    os.environ.setdefault("TMPDIR", str(ROOT / ".tmp"))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    (ROOT / ".tmp").mkdir(exist_ok=True)
    model = args.model or tiny_model()

    import torch

    if not torch.cuda.is_available():
        # In-process engine on CPU (as in the tests): no IPC hop, and CPU time becomes measurable.
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    in_process = os.environ.get("VLLM_ENABLE_V1_MULTIPROCESSING") == "0"

    from generator.engines.base import TeacherConfig
    from generator.engines.vllm_engine import VLLMEngine
    from generator.pipeline import request_seed, run_recipe
    from generator.recipe import load_recipe
    from generator.seeds import load_seed_rows

    enforce_eager = args.enforce_eager if args.enforce_eager is not None else not torch.cuda.is_available()
    config = TeacherConfig(
        model=str(model),
        dtype=args.dtype,
        max_model_len=args.max_model_len,
        kv_cache_memory_bytes=args.kv_cache_bytes,
        enforce_eager=enforce_eager,
    )
    engine = VLLMEngine(config)
    n, tokens = args.prompts, args.tokens
    recipe = load_recipe(
        {
            "name": "bench",
            "seeds": {"values": {"i": list(range(n))}},
            "stages": [
                {
                    "name": "answer",
                    "messages": [{"role": "user", "content": "Write a short story about item {{ i }}."}],
                    "sampling": {
                        "temperature": 1.0,
                        "max_tokens": tokens,
                        "min_tokens": tokens,
                        "ignore_eos": True,
                    },
                }
            ],
        }
    )
    rows = load_seed_rows(recipe)
    chunk_size = args.chunk_size or n

    from vllm import SamplingParams

    llm = engine.llm
    tokenizer = llm.get_tokenizer()
    raw_prompts = [
        {
            "prompt_token_ids": tokenizer(
                tokenizer.apply_chat_template(
                    [{"role": "user", "content": f"Write a short story about item {i}."}],
                    tokenize=False,
                    add_generation_prompt=True,
                ),
                add_special_tokens=False,
            )["input_ids"]
        }
        for i in range(n)
    ]
    raw_params = [
        SamplingParams(
            temperature=1.0,
            max_tokens=tokens,
            min_tokens=tokens,
            ignore_eos=True,
            seed=request_seed(recipe, i, 0, None),
        )
        for i in range(n)
    ]

    def run_raw() -> Timing:
        started, cpu_started = time.perf_counter(), time.process_time()
        outputs: list[Any] = llm.generate(raw_prompts, raw_params, use_tqdm=False)
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_started
        return Timing(elapsed, cpu, sum(len(c.token_ids) for o in outputs for c in o.outputs), 0.0)

    def run_pipeline() -> Timing:
        started, cpu_started = time.perf_counter(), time.process_time()
        produced = 0
        in_engine = 0.0
        for chunk in run_recipe(recipe, engine, rows, chunk_size=chunk_size):
            produced += chunk.completion_tokens
            # Every sample of a one-stage chunk carries the wall time of that chunk's generate call.
            in_engine += chunk.samples[0].provenance["latency_seconds"] if chunk.samples else 0.0
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_started
        return Timing(elapsed, cpu, produced, elapsed - in_engine)

    # Warm-up: first calls pay one-off costs (allocations, kernel selection) on both paths.
    llm.generate(raw_prompts[:8], raw_params[:8], use_tqdm=False)
    list(run_recipe(recipe, engine, rows, item_indices=range(min(8, n))))

    timings: dict[str, list[Timing]] = {"raw": [], "pipeline": []}
    for round_number in range(1, args.rounds + 1):
        for name, runner in (("raw", run_raw), ("pipeline", run_pipeline)):
            timing = runner()
            if timing.tokens != n * tokens:
                raise SystemExit(f"{name} produced {timing.tokens} tokens, expected {n * tokens}")
            timings[name].append(timing)
            outside = f"  ({timing.outside_engine:.3f} s outside LLM.generate)" if name == "pipeline" else ""
            print(
                f"round {round_number} {name:8} {timing.wall:7.2f} s"
                f"  {timing.tokens / timing.wall:10,.0f} tok/s"
                f"  cpu {timing.cpu:7.2f} s{outside}",
                flush=True,
            )
    engine.close()

    raw_best = max(t.tokens / t.wall for t in timings["raw"])
    pipeline_best = max(t.tokens / t.wall for t in timings["pipeline"])
    ratio = pipeline_best / raw_best
    overhead = min(t.outside_engine / t.wall for t in timings["pipeline"])
    print()
    print(f"model {model}  prompts {n} × {tokens} tokens  chunk {chunk_size}  rounds {args.rounds}")
    print(f"raw vllm.LLM.generate  {raw_best:10,.0f} output tok/s (best round)")
    print(f"generator pipeline     {pipeline_best:10,.0f} output tok/s (best round)")
    print(f"ratio pipeline/raw     {ratio:10.3f}  (goal >= 0.95)")
    # Each round times raw then pipeline back to back: on a shared machine whose load drifts, the
    # median of those paired ratios is steadier than best vs best.
    paired = statistics.median(
        raw.wall / pipeline.wall for raw, pipeline in zip(timings["raw"], timings["pipeline"], strict=True)
    )
    print(f"ratio, median of rounds {paired:9.3f}  (paired raw/pipeline times)")
    print(f"pipeline time outside LLM.generate: {overhead:.1%} of its wall time (best round)")
    if in_process:
        # With the engine in this process, CPU seconds are immune to other load on a shared machine.
        raw_cpu = max(t.tokens / t.cpu for t in timings["raw"])
        pipeline_cpu = max(t.tokens / t.cpu for t in timings["pipeline"])
        print(f"ratio by CPU time      {pipeline_cpu / raw_cpu:10.3f}  (tokens per CPU second)")
    if args.min_ratio is not None and ratio < args.min_ratio:
        print(f"below --min-ratio {args.min_ratio}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
