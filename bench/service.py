"""Service throughput: a job through the queue and a worker vs raw vLLM, and sample ingest vs COPY.

(a) End to end: the same N prompts × T output tokens (forced with min_tokens/ignore_eos, same
    per-request seeds) go through
    - raw:      prompts chat-templated and tokenized *before* timing, then `LLM.generate` on the
                same batches the worker sends (one call per chunk of each shard), so the ratio is
                the service's own cost (pipeline + queue + storage); --raw-single-batch also
                times one call for all N prompts;
    - pipeline: the generator library alone (`run_recipe` over the same shards and chunks, no
                database), to split the service's cost into the library's and the queue's;
    - service:  a job row + its shard tasks are created, then an in-process worker (`run_worker`,
                exit when idle) claims the shards, runs the recipe chunk by chunk and stores every
                sample with its fenced checkpoint; timed from job creation until the worker
                returned with the job succeeded and all N × n samples stored.
    Both use one `vllm.LLM` loaded before timing (model load excluded from both), and one untimed
    warm-up pass of each side. Each round runs raw, pipeline, service back to back; reported:
    best round vs best round, and the median of the rounds' ratios. Goal: service ≥ 0.95 × raw.
(b) Ingest: the stored samples of (a), replicated to --ingest-rows rows, written
    - worker:   the worker's per-chunk transaction (fence, pipelined INSERT ... ON CONFLICT DO
                NOTHING, cursor, job counters, checkpoint event), chunk after chunk;
    - COPY:     one raw `COPY sample FROM STDIN` of the same rows in one transaction (and, for
                scale, one COPY per chunk-sized transaction).
    Reported as rows/s and their ratio.

The database: a scratch database created on --database-url / HARDLABEL_DATABASE_URL's server, or
on the embedded Postgres under .hardlabel/ when neither is set; dropped at the end.

    .venv/bin/python bench/service.py                      # tiny model under bench/out/
    .venv/bin/python bench/service.py --prompts 2048 --chunk-size 256 --model DIR
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", type=Path, help="model folder (default: build a tiny model)")
    parser.add_argument("--prompts", type=int, default=512)
    parser.add_argument("--tokens", type=int, default=64, help="output tokens per prompt")
    parser.add_argument("--chunk-size", type=int, default=64, help="items per fenced chunk (service default)")
    parser.add_argument("--shard-size", type=int, default=256, help="items per task (service default)")
    parser.add_argument("--concurrency", type=int, default=1, help="tasks the worker runs at once")
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds of each side")
    parser.add_argument(
        "--raw-single-batch", action="store_true", help="also time raw vLLM with all prompts in one call"
    )
    parser.add_argument("--ingest-rows", type=int, default=50_000)
    parser.add_argument("--max-model-len", type=int, default=512)
    parser.add_argument("--database-url", help="a Postgres server to create the scratch database on")
    parser.add_argument("--min-ratio", type=float, help="exit 1 if service/raw is below this")
    return parser.parse_args()


def tiny_model() -> Path:
    from trainer.tiny_model import TinyModelSpec, build_tiny_model

    out = ROOT / "bench" / "out" / "tiny-l4-h128-v512"
    if not (out / "config.json").exists():
        print(f"building a tiny model in {out} ...", flush=True)
        build_tiny_model(out, TinyModelSpec())
    return out


def server_url_or_embedded(server_url: str | None) -> str:
    """The given server, or the embedded one under .hardlabel/ (started if needed)."""
    if server_url is not None:
        return server_url
    from service.embedded_db import start_embedded_postgres
    from service.settings import Settings

    return start_embedded_postgres(Settings().home / "postgres")


def recipe_spec(n: int, tokens: int) -> dict[str, Any]:
    sampling = {"temperature": 1.0, "max_tokens": tokens, "min_tokens": tokens, "ignore_eos": True}
    return {
        "name": "bench",
        "seed": 0,
        "seeds": {"values": {"i": list(range(n))}},
        "stages": [
            {
                "name": "answer",
                "messages": [{"role": "user", "content": "Write a short story about item {{ i }}."}],
                "sampling": sampling,
            }
        ],
    }


def create_job(url: str, spec: dict[str, Any], teacher: dict[str, Any], args: argparse.Namespace) -> int:
    """A recipe row, a job row and its shard tasks, as the API creates them."""
    from service.db.models import Job, Recipe
    from service.db.session import transaction
    from service.queue.enqueue import enqueue_tasks, shard_ranges

    with transaction(url) as session:
        recipe = Recipe(name=f"bench-{uuid.uuid4().hex[:8]}", version=1, spec=spec, digest=uuid.uuid4().hex)
        session.add(recipe)
        session.flush()
        job = Job(
            recipe_id=recipe.id,
            teacher=teacher,
            items_total=args.prompts,
            params={"chunk_size": args.chunk_size},
            seed=0,
        )
        session.add(job)
        session.flush()
        ranges = shard_ranges(args.prompts, args.shard_size)
        enqueue_tasks(
            session, "generate", [{"item_start": s, "item_end": e} for s, e in ranges], job_id=job.id
        )
        return job.id


def job_summary(url: str, job_id: int) -> tuple[str, int, int]:
    from sqlalchemy import text

    from service.db.session import transaction

    with transaction(url) as session:
        status, tokens_out = session.execute(
            text("SELECT status, tokens_out FROM job WHERE id = :j"), {"j": job_id}
        ).one()
        stored = session.execute(
            text("SELECT count(*) FROM sample WHERE job_id = :j"), {"j": job_id}
        ).scalar_one()
    return str(status), int(tokens_out), int(stored)


def ingest_rows(url: str, job_id: int, total: int) -> list[Any]:
    """The stored samples of a job, replicated under fresh item indices to ``total`` rows."""
    from sqlalchemy import text

    from service.db.session import transaction
    from service.workers.sample_store import SampleRow

    with transaction(url) as session:
        stored = session.execute(
            text(
                "SELECT item_index, stage, sample_index, parent_sample_index, question, answer, raw_text, "
                "parsed, parse_status, parse_error, score, inputs, provenance FROM sample WHERE job_id = :j "
                "ORDER BY item_index, sample_index"
            ),
            {"j": job_id},
        ).all()
    rows = []
    for k in range(total):
        s = stored[k % len(stored)]
        rows.append(
            SampleRow(
                job_id=0,
                item_index=k,
                stage=s.stage,
                sample_index=0,
                parent_sample_index=s.parent_sample_index,
                question=s.question,
                answer=s.answer,
                raw_text=s.raw_text,
                parsed=s.parsed,
                parse_status=s.parse_status,
                parse_error=s.parse_error,
                score=s.score,
                inputs=s.inputs,
                provenance=s.provenance,
            )
        )
    return rows


def time_worker_ingest(url: str, rows: list[Any], chunk_rows: int, spec: dict[str, Any]) -> float:
    """Seconds to store ``rows`` through the worker's per-chunk fenced transaction."""
    from dataclasses import replace

    from service.db.session import transaction
    from service.queue.claims import claim_tasks
    from service.settings import Settings
    from service.workers.context import TaskContext
    from service.workers.generate import ChunkWrite, write_chunk

    args = argparse.Namespace(prompts=len(rows), chunk_size=chunk_rows, shard_size=len(rows))
    job_id = create_job(url, spec, {"model": "bench"}, args)
    with transaction(url) as session:
        (task,) = claim_tasks(session, "bench-ingest", ["generate"], 1, 600.0)
    ctx = TaskContext(
        Settings(database_url=url, lease_seconds=600), url, "bench-ingest", task, threading.Event()
    )
    own = [replace(r, job_id=job_id) for r in rows]
    # Rows are prepared up front (the pipeline hands them over); the timed part is the write path.
    chunks = [
        ChunkWrite([r.item_index for r in part], part, 0, 0, 0.0)
        for part in (own[start : start + chunk_rows] for start in range(0, len(own), chunk_rows))
    ]
    cursor = 0
    started = time.perf_counter()
    for chunk in chunks:
        cursor = write_chunk(ctx, job_id, chunk, 0, cursor)
    elapsed = time.perf_counter() - started
    assert cursor == len(rows)
    return elapsed


def time_copy(url: str, rows: list[Any], spec: dict[str, Any], per_transaction: int | None = None) -> float:
    """Seconds for a raw COPY of ``rows`` into the sample table: one, or one per ``per_transaction`` rows."""
    import psycopg
    from sqlalchemy import make_url

    from service.workers.sample_store import COLUMNS, row_parameters

    args = argparse.Namespace(prompts=len(rows), chunk_size=len(rows), shard_size=len(rows))
    job_id = create_job(url, spec, {"model": "bench"}, args)
    names = list(COLUMNS)
    # The same values the worker sends (JSON as jsonb), prepared before timing.
    values = [[{**row_parameters(r), "job_id": job_id}[name] for name in names] for r in rows]
    dsn = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    step = per_transaction or len(values)
    with psycopg.connect(dsn) as conn:
        started = time.perf_counter()
        for start in range(0, len(values), step):
            with conn.cursor() as cursor, cursor.copy(f"COPY sample ({', '.join(names)}) FROM STDIN") as copy:
                for value in values[start : start + step]:
                    copy.write_row(value)
            conn.commit()
        return time.perf_counter() - started


def main() -> int:
    args = parse_args()
    os.environ.setdefault("TMPDIR", str(ROOT / ".tmp"))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    (ROOT / ".tmp").mkdir(exist_ok=True)
    model = args.model or tiny_model()

    import torch

    if not torch.cuda.is_available():
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    on_cpu = not torch.cuda.is_available()

    from generator.engines.base import TeacherConfig
    from generator.pipeline import request_seed, run_recipe
    from generator.recipe import load_recipe
    from generator.seeds import load_seed_rows
    from service.db.scratch import create_database, drop_database
    from service.queue.enqueue import shard_ranges
    from service.settings import Settings
    from service.workers.runner import run_worker
    from service.workers.teachers import TEACHERS

    server_url = server_url_or_embedded(args.database_url or os.environ.get("HARDLABEL_DATABASE_URL"))
    url = create_database(server_url, "hardlabel_bench")
    print(f"scratch database {url}", flush=True)
    try:
        teacher = TeacherConfig(model=str(model), max_model_len=args.max_model_len, enforce_eager=on_cpu)
        if on_cpu:
            teacher = teacher.model_copy(update={"dtype": "float32"})
        teacher_json = teacher.model_dump(mode="json")
        n, tokens = args.prompts, args.tokens
        spec = recipe_spec(n, tokens)
        recipe = load_recipe(spec)
        settings = Settings(database_url=url, poll_seconds=0.02, heartbeat_seconds=5, reaper_seconds=5)

        with TEACHERS.use(teacher) as shared:  # loaded once, before any timing; the worker reuses it
            from vllm import SamplingParams

            llm = shared.engine.llm  # type: ignore[attr-defined]
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

            # The worker's batches: each shard [s, e) in chunks of chunk_size items.
            batches = [
                (start, min(start + args.chunk_size, end))
                for shard_start, end in shard_ranges(n, args.shard_size)
                for start in range(shard_start, end, args.chunk_size)
            ]

            def generate_raw(single_batch: bool) -> float:
                started = time.perf_counter()
                produced = 0
                for start, end in [(0, n)] if single_batch else batches:
                    outputs = llm.generate(raw_prompts[start:end], raw_params[start:end], use_tqdm=False)
                    produced += sum(len(c.token_ids) for o in outputs for c in o.outputs)
                elapsed = time.perf_counter() - started
                if produced != n * tokens:
                    raise SystemExit(f"raw produced {produced} tokens, expected {n * tokens}")
                return elapsed

            # Raw calls run on a thread of their own, as the worker's handler calls do here: vLLM
            # cuts torch to one intra-op thread in the thread that built the engine (the main
            # one: "Reducing Torch threads ... for serving"), which on CPU slows calls from it.
            raw_thread = ThreadPoolExecutor(1, thread_name_prefix="raw")

            def run_raw(single_batch: bool = False) -> float:
                return raw_thread.submit(generate_raw, single_batch).result()

            seed_rows = load_seed_rows(recipe)

            def generate_pipeline() -> float:
                started = time.perf_counter()
                produced = 0
                for shard_start, end in shard_ranges(n, args.shard_size):
                    items = range(shard_start, end)
                    for chunk in run_recipe(
                        recipe, shared, seed_rows, item_indices=items, chunk_size=args.chunk_size
                    ):
                        produced += chunk.completion_tokens
                elapsed = time.perf_counter() - started
                if produced != n * tokens:
                    raise SystemExit(f"pipeline produced {produced} tokens, expected {n * tokens}")
                return elapsed

            def run_pipeline() -> float:
                return raw_thread.submit(generate_pipeline).result()

            last_job = 0

            def run_service() -> float:
                nonlocal last_job
                started = time.perf_counter()
                last_job = create_job(url, spec, teacher_json, args)
                run_worker(settings, ["generate"], concurrency=args.concurrency, exit_when_idle=True)
                elapsed = time.perf_counter() - started
                status, produced, stored = job_summary(url, last_job)
                if (status, produced, stored) != ("succeeded", n * tokens, n):
                    raise SystemExit(f"service job ended {status} with {produced} tokens, {stored} samples")
                return elapsed

            timings: dict[str, list[float]] = {"raw": [], "pipeline": [], "service": [], "raw-1-call": []}
            sides: list[tuple[str, Callable[[], float]]] = [
                ("raw", run_raw),
                ("pipeline", run_pipeline),
                ("service", run_service),
            ]
            if args.raw_single_batch:
                sides.append(("raw-1-call", lambda: run_raw(single_batch=True)))
            # Warm-up, untimed: the first passes over new batch shapes pay one-off kernel setup on
            # CPU (seconds per shape here), which would otherwise land on whichever side runs first.
            for _, warm_up in sides:
                warm_up()
            for round_number in range(1, args.rounds + 1):
                for name, runner in sides:
                    elapsed = runner()
                    timings[name].append(elapsed)
                    rate = n * tokens / elapsed
                    print(f"round {round_number} {name:8} {elapsed:7.2f} s  {rate:10,.0f} tok/s", flush=True)

        raw_best = n * tokens / min(timings["raw"])
        pipeline_best = n * tokens / min(timings["pipeline"])
        service_best = n * tokens / min(timings["service"])

        rows = ingest_rows(url, last_job, args.ingest_rows)
        chunk_rows = args.chunk_size  # one stored sample per item in this recipe
        ingest: dict[str, list[float]] = {"worker": [], "copy": [], "copy-chunks": []}
        for _ in range(3):  # best of three
            ingest["worker"].append(len(rows) / time_worker_ingest(url, rows, chunk_rows, spec))
            ingest["copy"].append(len(rows) / time_copy(url, rows, spec))
            ingest["copy-chunks"].append(len(rows) / time_copy(url, rows, spec, per_transaction=chunk_rows))
        worker_best, copy_best = max(ingest["worker"]), max(ingest["copy"])
        copy_chunks_best = max(ingest["copy-chunks"])
    finally:
        TEACHERS.close()
        drop_database(url)

    # Each round times raw then service back to back: the median of those paired ratios shrugs
    # off load that comes and goes on a shared machine better than best-vs-best does.
    def median_ratio(side: str, baseline: str) -> float:
        """Median over rounds of side's throughput / baseline's (= baseline's time / side's)."""
        return statistics.median(b / s for b, s in zip(timings[baseline], timings[side], strict=True))

    paired = median_ratio("service", "raw")
    ratio = service_best / raw_best
    print()
    print(
        f"model {model}  prompts {n} × {tokens} tokens  shard {args.shard_size}  chunk {args.chunk_size}  "
        f"concurrency {args.concurrency}  rounds {args.rounds}  (model load excluded from both)"
    )
    print(f"(a) raw vllm.LLM.generate        {raw_best:10,.0f} output tok/s (same batches; best round)")
    print(f"    generator pipeline, no DB    {pipeline_best:10,.0f} output tok/s (same chunks; best round)")
    print(f"    service job, submit→stored   {service_best:10,.0f} output tok/s (best round)")
    print(f"    ratio service/raw            {ratio:10.3f}  (best vs best)")
    print(f"    ratio, median of rounds      {paired:10.3f}  (goal >= 0.95)")
    print(
        f"      of which pipeline/raw      {median_ratio('pipeline', 'raw'):10.3f}  (the generator library)"
    )
    print(f"      and service/pipeline       {median_ratio('service', 'pipeline'):10.3f}  (queue + storage)")
    if timings["raw-1-call"]:
        single_best = n * tokens / min(timings["raw-1-call"])
        print(f"    raw, all {n} prompts in 1 call {single_best:10,.0f} output tok/s")
        print(f"    ratio service/raw-1-call     {service_best / single_best:10.3f}")
    sizes = f"({len(rows):,} rows, {chunk_rows}-row chunks)"
    print(f"(b) worker insert path           {worker_best:10,.0f} rows/s {sizes}")
    print(f"    raw COPY                     {copy_best:10,.0f} rows/s (one COPY)")
    print(f"    ratio worker/COPY            {worker_best / copy_best:10.3f}")
    print(f"    raw COPY per {chunk_rows}-row commit   {copy_chunks_best:10,.0f} rows/s (for scale)")
    if args.min_ratio is not None and paired < args.min_ratio:
        print(f"below --min-ratio {args.min_ratio}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
