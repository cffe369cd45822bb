"""Curation at scale: sample listing with filter conditions, near-dup throughput, dataset export.

One run on N synthetic samples (default 1,000,000) in a scratch database on the Postgres server:

1. setup    N samples over 10 jobs inserted with COPY; verdicts of four filters (length, verifier,
            near_dup, judge_score), review statuses, tags and judge scores set-based (timed, reported).
2. listing  GET /v1/samples through the API (FastAPI TestClient, in process) with filter conditions,
            keyset paging (walks of consecutive pages from random cursors): p50/p95 ms per page.
            Goal: p95 < 50 ms.
3. near-dup the `near_dup` filter vs raw datasketch (MinHash + MinHashLSH with the same shingles,
            hash and threshold, MinHash objects kept for the Jaccard check) on the same texts, each in
            its own process: samples/s, ratio, peak RSS.
4. freeze   POST /v1/datasets over every sample, queued (202) and frozen by a `freeze` worker (in
            process) while the client polls: the POST's latency, and rows/s from POST to done.
5. export   `hardlabel export`'s code (prompt_completion → Parquet, COPY as CSV streamed into Arrow
            record batches) vs a raw `COPY … TO STDOUT` + pyarrow Parquet write of the same rows,
            each in its own process: rows/s (timed after each side's imports, which are shown
            apart: the service's own modules take ~0.8 s to import), ratio (goal ≥ 0.5), peak RSS.

    .venv/bin/python bench/curation.py --n 100000
    .venv/bin/python bench/curation.py                      # 1,000,000 samples (several minutes)

The database: HARDLABEL_BENCH_DATABASE_URL (a server URL; a scratch database is created on it and
dropped at the end unless --keep), default postgresql+psycopg://postgres@127.0.0.1:5432/postgres.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

JOBS = 10
WORDS = [
    "the",
    "a",
    "of",
    "to",
    "and",
    "in",
    "is",
    "that",
    "for",
    "it",
    "as",
    "with",
    "was",
    "on",
    "be",
    "by",
    "at",
    "this",
    "from",
    "or",
    "an",
    "are",
    "which",
    "have",
    "not",
    "they",
    "you",
    "were",
    "his",
    "her",
    "their",
    "has",
    "had",
    "one",
    "all",
    "we",
    "can",
    "there",
    "been",
    "if",
    "more",
    "when",
    "will",
    "would",
    "who",
    "so",
    "number",
    "water",
    "light",
    "energy",
    "plant",
    "cell",
    "force",
    "mass",
    "speed",
    "time",
    "space",
    "value",
    "system",
    "model",
    "answer",
    "question",
    "reason",
    "result",
    "method",
    "data",
    "table",
    "graph",
    "point",
    "line",
    "angle",
    "circle",
    "square",
    "triangle",
    "sum",
    "product",
    "ratio",
    "rate",
    "price",
    "cost",
    "profit",
    "train",
    "car",
    "river",
    "city",
    "country",
    "king",
    "war",
    "year",
    "day",
    "night",
]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=1_000_000, help="synthetic samples")
    parser.add_argument("--pages", type=int, default=100, help="timed pages per listing scenario")
    parser.add_argument("--page-size", type=int, default=50)
    parser.add_argument(
        "--near-dup-n", type=int, help="texts for the near-dup comparison (default min(n, 100000))"
    )
    parser.add_argument(
        "--rounds", type=int, default=2, help="alternating rounds of each side (near-dup, export)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the scratch database")
    parser.add_argument("--reuse", metavar="URL", help="a database kept by --keep: skip the setup")
    parser.add_argument(
        "--parts",
        default="listing,near_dup,export",
        help="comma-separated: listing, near_dup, freeze, export (export freezes first)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--arg", action="append", default=[], help=argparse.SUPPRESS)
    return parser.parse_args()


# ------------------------------------------------------------------------------------------- helpers


def server_url() -> str:
    return os.environ.get(
        "HARDLABEL_BENCH_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
    )


def psycopg_dsn(url: str) -> str:
    from sqlalchemy import make_url

    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def run_child(mode: str, *args: str) -> tuple[dict[str, Any], float]:
    """Run this script in `mode` in a fresh process; returns its JSON result and peak RSS (MiB)."""
    command = [sys.executable, __file__, "--child", mode, *(f"--arg={a}" for a in args)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    output = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise SystemExit(f"child {mode} failed ({process.returncode})")
    return json.loads(output.strip().splitlines()[-1]), usage.ru_maxrss / 1024


def synthetic_text(rng: random.Random, low: int, high: int) -> str:
    return " ".join(rng.choices(WORDS, k=rng.randint(low, high)))


# ------------------------------------------------------------------------------------------- setup


def insert_samples(url: str, n: int, seed: int) -> tuple[list[int], float]:
    """N samples over JOBS jobs via COPY; returns the job ids and the COPY seconds."""
    import psycopg

    from service.db.models import Job, Recipe
    from service.db.session import transaction

    recipe = {"name": "bench", "stages": [{"name": "answer", "messages": [{"role": "user", "content": "x"}]}]}
    with transaction(url) as session:
        row = Recipe(name="bench", version=1, spec=recipe, digest=uuid.uuid4().hex)
        session.add(row)
        session.flush()
        jobs = [
            Job(recipe_id=row.id, status="succeeded", teacher={"model": "/models/teacher"})
            for _ in range(JOBS)
        ]
        session.add_all(jobs)
        session.flush()
        job_ids = [job.id for job in jobs]
    rng = random.Random(seed)
    per_job = -(-n // JOBS)
    started = time.perf_counter()
    with psycopg.connect(psycopg_dsn(url)) as conn, conn.cursor() as cursor:
        columns = (
            "job_id, item_index, stage, sample_index, question, answer, raw_text, parse_status, inputs, "
            "score, review_status, tags"
        )
        with cursor.copy(f"COPY sample ({columns}) FROM STDIN") as copy:
            for i in range(n):
                job_id = job_ids[i // per_job]
                question = f"Q{i}: {synthetic_text(rng, 8, 16)}?"
                answer = synthetic_text(rng, 20, 60)
                reference = json.dumps({"reference": i % 100})
                # judge scores 0..9; a third accepted, 1 in 17 rejected; 1 in 100 tagged "hard"
                review = "accepted" if i % 3 == 0 else "rejected" if i % 17 == 0 else "pending"
                tags = ["hard"] if i % 100 == 0 else []
                values = (job_id, i % per_job, "answer", 0, question, answer, answer, "ok", reference)
                copy.write_row((*values, float(i % 10), review, tags))
        conn.commit()
    return job_ids, time.perf_counter() - started


def add_curation_state(url: str) -> float:
    """Verdicts of four filters over every sample, set-based; then VACUUM ANALYZE."""
    from sqlalchemy import text

    from service.db.session import transaction

    started = time.perf_counter()
    with transaction(url) as session:
        run_id = session.execute(
            text("INSERT INTO filter_run (status, spec) VALUES ('succeeded', '{}') RETURNING id")
        ).scalar_one()
        # pass rates: length 90%, verifier 70%, near_dup 95%, judge_score 80%
        for name, passed in (
            ("length", "id % 10 <> 0"),
            ("verifier", "id % 10 < 7"),
            ("near_dup", "id % 20 <> 7"),
            ("judge_score", "id % 5 <> 3"),
        ):
            session.execute(
                text(
                    f"INSERT INTO filter_verdict (sample_id, filter_name, filter_run_id, passed, reason) "
                    f"SELECT id, :name, :run, {passed}, 'synthetic' FROM sample"
                ),
                {"name": name, "run": run_id},
            )
    import psycopg

    with psycopg.connect(psycopg_dsn(url), autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE sample")
        conn.execute("VACUUM ANALYZE filter_verdict")
    return time.perf_counter() - started


# ------------------------------------------------------------------------------------------- listing


def bench_listing(
    url: str, job_ids: list[int], pages: int, page_size: int, seed: int
) -> list[dict[str, Any]]:
    from fastapi.testclient import TestClient
    from sqlalchemy import func, select

    from service.app import create_app
    from service.auth import issue_token
    from service.db.models import Sample
    from service.db.session import transaction
    from service.pagination import encode_cursor
    from service.settings import Settings

    with transaction(url) as session:
        _, secret = issue_token(session, role="viewer", name="bench")
        max_id = int(session.scalar(select(func.max(Sample.id))) or 0)
    headers = {"Authorization": f"Bearer {secret}"}
    last_job = job_ids[-1]
    scenarios: list[tuple[str, dict[str, Any]]] = [
        ("job (no curation filter)", {"job_id": last_job}),
        ("job + passed=length,verifier", {"job_id": last_job, "passed": "length,verifier"}),
        ("failed=near_dup", {"failed": "near_dup"}),
        (
            "job + accepted + score 7..9",
            {"job_id": last_job, "review_status": "accepted", "score_min": 7, "score_max": 9},
        ),
        ("tag=hard + passed=judge_score", {"tag": "hard", "passed": "judge_score"}),
    ]
    rng = random.Random(seed)
    results = []
    with TestClient(create_app(Settings(database_url=url, max_page_size=500))) as client:
        for label, params in scenarios:
            timings: list[float] = []
            rows = 0
            for _ in range(3):  # warm-up
                client.get("/v1/samples", params={**params, "limit": page_size}, headers=headers)
            while len(timings) < pages:
                # A walk of 5 consecutive pages from a random point (or from the start).
                start = rng.choice([0, rng.randrange(max_id)])
                cursor = encode_cursor(start) if start else None
                for _ in range(5):
                    query = {**params, "limit": page_size, **({"cursor": cursor} if cursor else {})}
                    began = time.perf_counter()
                    response = client.get("/v1/samples", params=query, headers=headers)
                    timings.append((time.perf_counter() - began) * 1000)
                    assert response.status_code == 200, response.text
                    body = response.json()
                    rows += len(body["items"])
                    cursor = body["next_cursor"]
                    if cursor is None:
                        break
            results.append(
                {
                    "scenario": label,
                    "pages": len(timings),
                    "rows_per_page": rows / len(timings),
                    "p50_ms": statistics.median(timings),
                    "p95_ms": percentile(timings, 0.95),
                }
            )
    return results


# ------------------------------------------------------------------------------------------- near-dup


def write_texts(url: str, count: int, path: Path) -> None:
    """`count` answers from the database, every 50th replaced by a light edit of an earlier one."""
    import psycopg

    rng = random.Random(1)
    texts: list[str] = []
    with psycopg.connect(psycopg_dsn(url)) as conn:
        for (answer,) in conn.execute("SELECT answer FROM sample ORDER BY id LIMIT %s", (count,)):
            texts.append(answer)
    for i in range(50, len(texts), 50):
        words = texts[rng.randrange(i)].split()
        words[rng.randrange(len(words))] = "changed"
        texts[i] = " ".join(words)
    path.write_text(json.dumps(texts))


def raw_shingles(text: str, size: int) -> set[bytes]:
    """The normalised text's character k-grams, as a datasketch user would feed them."""
    from service.filters.normalization import normalize_text

    norm = normalize_text(text)
    if len(norm) <= size:
        return {norm.encode()} if norm else set()
    return {norm[i : i + size].encode() for i in range(len(norm) - size + 1)}


def child_near_dup(side: str, path: str) -> dict[str, Any]:
    import zlib

    from datasketch import MinHash, MinHashLSH

    from service.filters.builtin.near_dup import NearDuplicates
    from service.filters.records import sample_record
    from service.filters.specs import NearDupParams

    texts = json.loads(Path(path).read_text())
    params = NearDupParams(field="answer")
    started = time.perf_counter()
    failed = 0
    if side == "hardlabel":
        nd = NearDuplicates(params)
        for start in range(0, len(texts), 2000):
            chunk = [sample_record(start + i + 1, "", t) for i, t in enumerate(texts[start : start + 2000])]
            failed += sum(not v.passed for v in nd.evaluate(chunk))
    else:
        lsh = MinHashLSH(threshold=params.threshold, num_perm=params.num_perm)
        template = MinHash(num_perm=params.num_perm, seed=1, hashfunc=zlib.crc32)
        kept: dict[int, MinHash] = {}
        for i, text_ in enumerate(texts):
            minhash = template.copy()
            minhash.update_batch(raw_shingles(text_, params.shingle_size))
            best = max((minhash.jaccard(kept[key]) for key in lsh.query(minhash)), default=0.0)
            if best >= params.threshold:
                failed += 1
            else:
                kept[i] = minhash
                lsh.insert(i, minhash, check_duplication=False)
    seconds = time.perf_counter() - started
    return {
        "samples": len(texts),
        "seconds": seconds,
        "per_second": len(texts) / seconds,
        "near_dups": failed,
    }


# ------------------------------------------------------------------------------------------- export


def child_export(side: str, url: str, dataset_id: str, out: str) -> dict[str, Any]:
    """One side's export in this (fresh) process; imports are timed apart from the export itself."""
    import io

    began = time.perf_counter()
    if side == "hardlabel":
        from service.datasets.export.folder import export_to_folder
        from service.datasets.service import manifest_of
        from service.db.models import DatasetVersion
        from service.db.session import get_engine, transaction
    else:
        import psycopg
        import pyarrow.csv as pacsv
        import pyarrow.parquet as pq
    started = time.perf_counter()
    if side == "hardlabel":
        with transaction(url) as session:
            version = session.get(DatasetVersion, int(dataset_id))
            assert version is not None
            manifest = manifest_of(version)
        splits = export_to_folder(get_engine(url), manifest, "prompt_completion", "parquet", Path(out))
        rows = sum(splits.values())
    else:
        buffer = io.BytesIO()
        query = (
            f"COPY (SELECT question, answer, system FROM dataset_row WHERE dataset_id = {int(dataset_id)} "
            "ORDER BY row_index) TO STDOUT WITH (FORMAT csv)"
        )
        with psycopg.connect(psycopg_dsn(url)) as conn, conn.cursor() as cursor, cursor.copy(query) as copy:
            for data in copy:
                buffer.write(data)
        buffer.seek(0)
        table = pacsv.read_csv(
            buffer,
            read_options=pacsv.ReadOptions(column_names=["question", "answer", "system"]),
            parse_options=pacsv.ParseOptions(newlines_in_values=True),
            convert_options=pacsv.ConvertOptions(
                column_types={"question": "string", "answer": "string", "system": "string"}
            ),
        )
        pq.write_table(table, Path(out) / "raw.parquet")
        rows = table.num_rows
    seconds = time.perf_counter() - started
    return {"rows": rows, "seconds": seconds, "per_second": rows / seconds, "import_seconds": started - began}


# ------------------------------------------------------------------------------------------- main


def freeze_dataset(url: str, job_ids: list[int]) -> tuple[dict[str, Any], float, float]:
    """The queued path end to end: POST (202) → a `freeze` worker copies the rows → the client's poll
    sees `succeeded`. Returns the version, the POST's seconds, and the seconds from POST to done."""
    import threading

    from fastapi.testclient import TestClient

    from service.app import create_app
    from service.auth import issue_token
    from service.db.session import transaction
    from service.settings import Settings
    from service.workers.runner import run_worker

    with transaction(url) as session:
        _, secret = issue_token(session, role="admin", name="bench-admin")
    headers = {"Authorization": f"Bearer {secret}"}
    body = {
        "name": "bench",
        "query": {"job_ids": job_ids, "review_status": ["pending", "accepted", "rejected"]},
        "split": {"test_fraction": 0.05, "seed": 1},
    }
    settings = Settings(database_url=url, poll_seconds=0.05)
    stop = threading.Event()
    worker = threading.Thread(target=run_worker, args=(settings, ["freeze"]), kwargs={"stop": stop})
    worker.start()
    try:
        with TestClient(create_app(settings)) as client:
            started = time.perf_counter()
            response = client.post("/v1/datasets", json=body, headers=headers)
            request_seconds = time.perf_counter() - started
            assert response.status_code == 202, response.text
            version = response.json()
            while version["status"] in ("queued", "running"):
                time.sleep(0.1)  # what `hardlabel dataset create` does, at a finer interval
                version = client.get(f"/v1/datasets/{version['id']}", headers=headers).json()
            seconds = time.perf_counter() - started
    finally:
        stop.set()
        worker.join()
    assert version["status"] == "succeeded", version["error"]
    return version, request_seconds, seconds


def reused_jobs(url: str) -> list[int]:
    from sqlalchemy import select

    from service.db.models import Job
    from service.db.session import transaction

    with transaction(url) as session:
        return list(session.scalars(select(Job.id).order_by(Job.id)))


def report_listing(url: str, job_ids: list[int], args: argparse.Namespace) -> None:
    print("\nlisting: GET /v1/samples through the API, keyset pages of", args.page_size, flush=True)
    print(f"  {'conditions':<36} {'pages':>5} {'rows/page':>9} {'p50 ms':>8} {'p95 ms':>8}")
    worst = 0.0
    for result in bench_listing(url, job_ids, args.pages, args.page_size, args.seed):
        worst = max(worst, result["p95_ms"])
        print(
            f"  {result['scenario']:<36} {result['pages']:>5} {result['rows_per_page']:>9.1f} "
            f"{result['p50_ms']:>8.1f} {result['p95_ms']:>8.1f}",
            flush=True,
        )
    print(f"  worst p95 {worst:.1f} ms (goal < 50 ms): {'met' if worst < 50 else 'NOT met'}")


def report_near_dup(url: str, args: argparse.Namespace) -> None:
    near_n = args.near_dup_n or min(args.n, 100_000)
    best: dict[str, tuple[dict[str, Any], float]] = {}
    with tempfile.TemporaryDirectory(prefix="hardlabel-bench-") as scratch:
        texts = Path(scratch) / "texts.json"
        write_texts(url, near_n, texts)
        # Alternating rounds, best of each: machine noise hits both sides alike.
        for _ in range(args.rounds):
            for side in ("hardlabel", "datasketch"):
                result, rss = run_child("near_dup", side, str(texts))
                if side not in best or result["per_second"] > best[side][0]["per_second"]:
                    best[side] = (result, max(rss, best.get(side, (result, 0.0))[1]))
    print(
        f"\nnear-dup on {near_n:,} texts (char 5-shingles, 128 perms, threshold 0.8), best of {args.rounds}:"
    )
    for label, side in (("hardlabel near_dup", "hardlabel"), ("raw datasketch", "datasketch")):
        result, rss = best[side]
        print(
            f"  {label:<19} {result['per_second']:>10,.0f} samples/s  peak RSS {rss:,.0f} MiB  "
            f"({result['near_dups']:,} near-duplicates)"
        )
    ratio = best["hardlabel"][0]["per_second"] / best["datasketch"][0]["per_second"]
    print(f"  ratio hardlabel/raw: {ratio:.2f}", flush=True)


def report_freeze(url: str, job_ids: list[int]) -> dict[str, Any]:
    version, request_seconds, freeze_seconds = freeze_dataset(url, job_ids)
    total = version["row_counts"]["total"]
    rate = total / freeze_seconds
    print(
        f"\nfreeze: dataset version of {total:,} rows queued in {request_seconds * 1000:.0f} ms "
        f"(POST → 202), frozen by a worker {freeze_seconds:.1f}s after the POST "
        f"({rate:,.0f} rows/s end to end)",
        flush=True,
    )
    return version


def report_export(url: str, version: dict[str, Any], rounds: int) -> None:
    total = version["row_counts"]["total"]
    best: dict[str, tuple[dict[str, Any], float]] = {}
    for round_ in range(rounds):
        for side in ("hardlabel", "raw"):
            with tempfile.TemporaryDirectory(prefix="hardlabel-bench-") as scratch:
                out = Path(scratch) / f"{side}-{round_}"
                out.mkdir()
                result, rss = run_child("export", side, url, str(version["id"]), str(out))
            if side not in best or result["per_second"] > best[side][0]["per_second"]:
                best[side] = (result, max(rss, best.get(side, (result, 0.0))[1]))
    ratio = best["hardlabel"][0]["per_second"] / best["raw"][0]["per_second"]
    print(f"\nexport of {total:,} rows to Parquet, best of {rounds}:")
    for label, side in (
        ("hardlabel (prompt_completion, streamed)", "hardlabel"),
        ("raw COPY TO + pyarrow (flat columns)", "raw"),
    ):
        result, rss = best[side]
        print(
            f"  {label:<40} {result['per_second']:>10,.0f} rows/s  peak RSS {rss:,.0f} MiB  "
            f"(+ {result['import_seconds']:.2f} s of imports before it, not counted)"
        )
    print(f"  ratio hardlabel/raw: {ratio:.2f} (goal >= 0.5): {'met' if ratio >= 0.5 else 'NOT met'}")


def main() -> int:
    args = parse_args()
    if args.child:
        if args.child == "near_dup":
            print(json.dumps(child_near_dup(*args.arg)))
        else:
            print(json.dumps(child_export(*args.arg)))
        return 0

    parts = set(args.parts.split(","))
    from service.db.scratch import create_database, drop_database

    url = args.reuse or create_database(server_url(), "hardlabel_bench")
    print(f"database: {url.rsplit('/', 1)[-1]}  (n={args.n:,})", flush=True)
    try:
        if args.reuse:
            job_ids = reused_jobs(url)
        else:
            job_ids, copy_seconds = insert_samples(url, args.n, args.seed)
            rate = args.n / copy_seconds
            print(f"setup: COPY {args.n:,} samples in {copy_seconds:.1f}s ({rate:,.0f} rows/s)", flush=True)
            state_seconds = add_curation_state(url)
            print(f"setup: 4 filters' verdicts and VACUUM ANALYZE in {state_seconds:.1f}s", flush=True)
        if "listing" in parts:
            report_listing(url, job_ids, args)
        if "near_dup" in parts:
            report_near_dup(url, args)
        if parts & {"freeze", "export"}:
            version = report_freeze(url, job_ids)
            if "export" in parts:
                report_export(url, version, args.rounds)
    finally:
        if args.keep or args.reuse:
            print(f"kept {url}")
        else:
            drop_database(url)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
