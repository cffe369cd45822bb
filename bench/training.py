"""Training throughput: raw `trl.SFTTrainer` vs hardlabel, as a library call and as a service run.

Three contenders train the same student on the same rows with the same SFTConfig (the one
`build_sft_config` makes from one TrainingSpec), with the same torch thread count:

- raw:      plain TRL: the rows as a `datasets.Dataset`, `SFTTrainer(model=<path>, args=...)`,
            train, `save_model` (TRL's stdout log printer removed, as hardlabel does);
- train():  hardlabel's library entry point `trainer.sft.train` on the rows' JSONL file;
- worker:   a hardlabel training run through the service: a dataset version holding the same rows
            (inserted into Postgres the way the service stores a version: `dataset_version` and
            `dataset_row` rows, row counts and content digest computed by the service's own
            repository functions; the public API can only build versions from generation jobs),
            `POST /v1/training-runs` (the FastAPI app in-process via TestClient, evaluation
            disabled), then a `train` worker in this process (`run_worker(..., exit_when_idle=True)`,
            default settings) claims it, exports the version and trains in its child process
            (`service.workers.train_child`); the numbers are read back from what the run stored
            (`GET /v1/training-runs/{id}` and `/metrics`). The first repeat checks that the
            worker's exported data holds exactly the bench's rows, in the same order.

One measurement for all three. Each contender's metric series is written by the trainer's own
callback (`trainer.metrics.JsonlMetricsCallback`: raw gets it attached, `train()` and the worker's
child attach it themselves; the worker stores its rows in Postgres, read back through the API).
Every row holds the unix time of the log and the tokens/s since the previous log (TRL's token
count: prompt and answer, no padding). Loop throughput = tokens trained from the first to the last
logged step (sum of tokens/s x seconds of each interval after the first) / seconds between those
two logs. The interval before the first log (step 1 warm-up) and the save after the last log are
left out; the checkpoint saved mid-run falls inside the loop, for everyone. CPU: a thread of this
bench samples the training process's CPU time (/proc/PID/stat: this process for raw and train(),
the worker's child for the service run) the moment each metrics line appears; tokens per CPU
second uses the same first and last log. On a busy machine wall seconds move, CPU seconds barely
do: compare the CPU figures there. The whole-call wall (raw: build trainer + train + save;
train(): the call; worker: run created -> succeeded by the database's clock, i.e. queue claim,
export, child start and imports, mask pre-flight, checkpoints, final save) is printed separately.
Contenders alternate (the order rotates each repeat); the best of --repeats is kept.
Goal: ratio >= 0.97 against raw.

The database: a scratch database (hardlabel_bench_training_<hex>) created on the server of
--database-url (default HARDLABEL_TEST_DATABASE_URL, else postgres on 127.0.0.1), migrated, and
dropped at the end.

    .venv/bin/python bench/training.py --threads 1
    .venv/bin/python bench/training.py --steps 200 --batch 32 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from itertools import pairwise
from pathlib import Path
from typing import TYPE_CHECKING, Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from trainer.config import build_sft_config  # noqa: E402  (pydantic only, no torch)
from trainer.spec import TrainingSpec  # noqa: E402

if TYPE_CHECKING:
    from fastapi.testclient import TestClient

    from service.settings import Settings

DEFAULT_SERVER = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
METRICS_FILE = "metrics.jsonl"
SAMPLE_SECONDS = 0.01
RAW, LIBRARY, WORKER = "raw trl.SFTTrainer", "hardlabel train()", "hardlabel worker run"


def addition_pairs(count: int, seed: int = 0) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    pairs = []
    for _ in range(count):
        a, b = rng.randint(0, 99), rng.randint(0, 99)
        pairs.append((f"What is {a}+{b}?", str(a + b)))
    return pairs


def as_row(question: str, answer: str) -> dict[str, Any]:
    return {
        "prompt": [{"role": "user", "content": question}],
        "completion": [{"role": "assistant", "content": answer}],
    }


# --- the one measurement --------------------------------------------------------------------------


@dataclass
class Measure:
    tokens: float  # tokens trained between the first and the last logged step
    wall: float  # seconds between those two logs
    cpu: float | None  # CPU seconds of the training process between them
    call_wall: float  # the whole call (see the module docstring)
    loss: float | None  # the last logged train loss (the same work gives the same loss)
    steps: int
    overhead: str = ""  # the worker run's timeline outside the loop

    @property
    def per_wall_second(self) -> float:
        return self.tokens / self.wall if self.wall else 0.0

    @property
    def per_cpu_second(self) -> float | None:
        return self.tokens / self.cpu if self.cpu else None


def process_cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of the process `pid` (all its threads), from /proc/PID/stat."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class CpuAtLog:
    """Samples the training process's CPU seconds when each new line of its metrics file appears."""

    def __init__(self, metrics: Path, pid: Callable[[], int | None]) -> None:
        self.metrics = metrics
        self.pid = pid
        self.at_step: dict[int, float] = {}
        self._offset = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cpu-at-log", daemon=True)

    def __enter__(self) -> CpuAtLog:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(SAMPLE_SECONDS):
            self._poll()
        self._poll()

    def _poll(self) -> None:
        try:
            if self.metrics.stat().st_size <= self._offset:
                return
        except FileNotFoundError:
            return
        pid = self.pid()
        cpu = process_cpu_seconds(pid) if pid is not None else None
        with self.metrics.open("rb") as handle:
            handle.seek(self._offset)
            data = handle.read()
        end = data.rfind(b"\n")
        if end < 0:
            return
        self._offset += end + 1
        for line in data[: end + 1].splitlines():
            row = json.loads(line)
            if cpu is not None and isinstance(row.get("step"), int):
                self.at_step.setdefault(row["step"], cpu)


def loop_measure(rows: Sequence[Mapping[str, Any]], cpu_at: Mapping[int, float], call_wall: float) -> Measure:
    """Tokens/s of the loop from a JsonlMetricsCallback series (see the module docstring)."""
    timed = [
        row
        for row in sorted(rows, key=lambda row: int(row["step"]))
        if isinstance(row.get("time"), int | float) and isinstance(row.get("tokens_per_second"), int | float)
    ]
    if len(timed) < 2:
        raise SystemExit("fewer than two logged steps: raise --steps (steps are logged every 10)")
    first, last = timed[0], timed[-1]
    tokens = sum(
        float(row["tokens_per_second"]) * (row["time"] - before["time"]) for before, row in pairwise(timed)
    )
    cpu_first, cpu_last = cpu_at.get(first["step"]), cpu_at.get(last["step"])
    losses = [row["loss"] for row in timed if isinstance(row.get("loss"), int | float)]
    return Measure(
        tokens=tokens,
        wall=float(last["time"] - first["time"]),
        cpu=cpu_last - cpu_first if cpu_first is not None and cpu_last is not None else None,
        call_wall=call_wall,
        loss=float(losses[-1]) if losses else None,
        steps=int(last["step"]),
    )


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


# --- raw TRL and the library call -------------------------------------------------------------------


def run_raw(student: Path, data: Path, spec: TrainingSpec, out: Path) -> Measure:
    """Plain TRL: the rows as a `datasets.Dataset`, the student by path, train, save."""
    from datasets import Dataset
    from transformers import AutoTokenizer, PrinterCallback
    from trl.trainer.sft_trainer import SFTTrainer

    from trainer.metrics import JsonlMetricsCallback

    shutil.rmtree(out, ignore_errors=True)
    with CpuAtLog(out / METRICS_FILE, os.getpid) as cpu:
        started = time.perf_counter()
        rows = Dataset.from_list(read_jsonl(data))
        trainer = SFTTrainer(
            model=str(student),
            args=build_sft_config(spec, out),
            train_dataset=rows,
            processing_class=AutoTokenizer.from_pretrained(str(student)),
            callbacks=[JsonlMetricsCallback(out / METRICS_FILE)],
        )
        trainer.remove_callback(PrinterCallback)
        trainer.train()
        trainer.save_model(str(out / "final"))
        call_wall = time.perf_counter() - started
    return loop_measure(read_jsonl(out / METRICS_FILE), cpu.at_step, call_wall)


def run_library(student: Path, data: Path, spec: TrainingSpec, out: Path) -> Measure:
    """`trainer.sft.train`: loading, mask pre-flight, training with checkpoints, final save."""
    from trainer.sft import train

    shutil.rmtree(out, ignore_errors=True)
    with CpuAtLog(out / METRICS_FILE, os.getpid) as cpu:
        started = time.perf_counter()
        train(dataset_path=data, student=student, output_dir=out, spec=spec)
        call_wall = time.perf_counter() - started
    return loop_measure(read_jsonl(out / METRICS_FILE), cpu.at_step, call_wall)


# --- the service: a scratch database, a dataset version, a training run, a train worker -------------


def create_version(url: str, pairs: Sequence[tuple[str, str]]) -> int:
    """A dataset version whose train split is exactly these rows, in this order."""
    from service.datasets import repository
    from service.db.models import DatasetRow, DatasetVersion
    from service.db.session import transaction

    with transaction(url) as session:
        version = DatasetVersion(
            name=f"bench-training-{uuid.uuid4().hex[:8]}",
            version=1,
            query={"source": "bench/training.py"},
            lineage={"source": "bench/training.py", "jobs": []},
            digest="",
            status="succeeded",
        )
        session.add(version)
        session.flush()
        session.add_all(
            DatasetRow(
                dataset_id=version.id,
                row_index=index,
                split="train",
                source="ground_truth",
                question=question,
                answer=answer,
                extra={},
            )
            for index, (question, answer) in enumerate(pairs)
        )
        session.flush()
        version.row_counts = repository.row_counts(session, version.id)
        version.digest = repository.content_digest(session, version.id)
        return int(version.id)


def admin_headers(url: str) -> dict[str, str]:
    from service.auth import issue_token
    from service.db.session import transaction

    with transaction(url) as session:
        _, secret = issue_token(session, role="admin", name="bench-training")
    return {"Authorization": f"Bearer {secret}"}


def api(client: TestClient, method: str, path: str, headers: dict[str, str], **kwargs: Any) -> Any:
    response = client.request(method, path, headers=headers, **kwargs)
    if response.status_code >= 300:
        raise SystemExit(f"{method} {path}: {response.status_code} {response.text}")
    return response.json()


def stored_metrics(client: TestClient, headers: dict[str, str], run_id: int) -> list[dict[str, Any]]:
    """The run's whole metric series as stored (each row's `values`: what the trainer logged)."""
    rows: list[dict[str, Any]] = []
    while True:
        page = api(
            client,
            "GET",
            f"/v1/training-runs/{run_id}/metrics",
            headers,
            params={"limit": 100, "offset": len(rows)},
        )
        rows.extend(item["values"] for item in page["items"])
        if not page["items"] or len(rows) >= page["total"]:
            return rows


def run_worker_path(
    settings: Settings,
    client: TestClient,
    headers: dict[str, str],
    dataset_id: int,
    student: Path,
    spec: TrainingSpec,
    expected_rows: list[dict[str, Any]] | None,
) -> Measure:
    """POST a training run, let an in-process `train` worker run it, read back what it stored."""
    from service.workers.runner import run_worker
    from service.workers.train import training_dir

    payload = {
        "dataset_id": dataset_id,
        "student": {"model": str(student)},
        "method": spec.method,
        "hyperparameters": spec.model_dump(mode="json", exclude={"method"}),
        "evaluation": {"enabled": False},
    }
    run_id = int(api(client, "POST", "/v1/training-runs", headers, json=payload)["id"])
    out = training_dir(settings, run_id)

    def child_pid() -> int | None:
        try:
            return int((out / "child.pid").read_text())
        except (OSError, ValueError):
            return None

    with CpuAtLog(out / METRICS_FILE, child_pid) as cpu:
        run_worker(settings, ["train"], exit_when_idle=True)
    run = api(client, "GET", f"/v1/training-runs/{run_id}", headers)
    if run["status"] != "succeeded":
        raise SystemExit(f"training run {run_id} {run['status']}: {run['last_error']}")
    if expected_rows is not None:
        exported = read_jsonl(out / "data" / "train.jsonl")
        if exported != expected_rows:
            raise SystemExit(f"the worker's exported rows ({out / 'data'}) differ from the bench's rows")
    created, claimed, finished = (
        datetime.fromisoformat(run[key]) for key in ("created_at", "started_at", "finished_at")
    )
    stored = stored_metrics(client, headers, run_id)
    measure = loop_measure(stored, cpu.at_step, (finished - created).total_seconds())
    logged = sorted(float(row["time"]) for row in stored)
    measure.overhead = (
        f"created->claimed {(claimed - created).total_seconds():.1f}s, "
        f"claimed->first log {logged[0] - claimed.timestamp():.1f}s, loop {measure.wall:.1f}s, "
        f"last log->succeeded {finished.timestamp() - logged[-1]:.1f}s; the run's own tokens/s "
        f"(TRL tokens / train_runtime) {run['progress']['tokens_per_second']:,.0f}"
    )
    shutil.rmtree(out, ignore_errors=True)
    return measure


# --- main ---------------------------------------------------------------------------------------


def set_threads(threads: int | None) -> int:
    """The same torch intra-op threads here (raw, train()) and in the worker's child (OMP_NUM_THREADS)."""
    if threads:
        os.environ["OMP_NUM_THREADS"] = str(threads)
    import torch

    if threads:
        torch.set_num_threads(threads)
    resolved = int(torch.get_num_threads())
    os.environ["OMP_NUM_THREADS"] = str(resolved)
    return resolved


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--work", type=Path, default=ROOT / ".tmp" / "bench_training")
    parser.add_argument("--student", type=Path, help="Model folder (default: a 4x128 tiny model built here).")
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--save-steps", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument(
        "--threads", type=int, help="torch intra-op threads (default: torch's; 1 on a busy shared machine)"
    )
    parser.add_argument(
        "--database-url",
        default=os.environ.get("HARDLABEL_TEST_DATABASE_URL") or DEFAULT_SERVER,
        help="Postgres server to create the scratch database on (default: HARDLABEL_TEST_DATABASE_URL, "
        f"else {DEFAULT_SERVER})",
    )
    args = parser.parse_args()
    threads = set_threads(args.threads)
    started = time.perf_counter()

    import datasets
    from fastapi.testclient import TestClient
    from transformers.utils import logging as hf_logging

    from service.app import create_app
    from service.db.scratch import scratch_database
    from service.settings import Settings
    from trainer.tiny_model import TinyModelSpec, build_tiny_model

    # Output only: no progress bars (train() hides its own; raw TRL's would bury the table).
    datasets.disable_progress_bars()
    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    student = (args.student or work / "student-4x128").resolve()
    if args.student is None and not (student / "config.json").exists():
        build_tiny_model(student, TinyModelSpec(layers=4, hidden=128, heads=4, vocab=512))
    pairs = addition_pairs(args.rows)
    rows = [as_row(question, answer) for question, answer in pairs]
    data = work / "rows.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    spec = TrainingSpec(
        learning_rate=1e-3,
        max_steps=args.steps,
        per_device_train_batch_size=args.batch,
        max_length=64,
        logging_steps=10,
        save_steps=args.save_steps,
    )
    home = work / "service-home"  # a new database numbers runs from 1: no old run folder may remain
    shutil.rmtree(home, ignore_errors=True)

    results: dict[str, list[Measure]] = {RAW: [], LIBRARY: [], WORKER: []}
    with scratch_database(args.database_url, "hardlabel_bench_training") as url:
        settings = Settings(database_url=url, home=home)
        dataset_id = create_version(url, pairs)
        headers = admin_headers(url)
        with TestClient(create_app(settings)) as client:
            contenders: dict[str, Callable[[int], Measure]] = {
                RAW: lambda _: run_raw(student, data, spec, work / "raw"),
                LIBRARY: lambda _: run_library(student, data, spec, work / "library"),
                WORKER: lambda repeat: run_worker_path(
                    settings, client, headers, dataset_id, student, spec, rows if repeat == 0 else None
                ),
            }
            names = list(contenders)
            for repeat in range(args.repeats):
                order = names[repeat % len(names) :] + names[: repeat % len(names)]
                for name in order:
                    results[name].append(contenders[name](repeat))
                print(
                    f"repeat {repeat + 1} ({' -> '.join(order)}): "
                    + ", ".join(f"{name} {results[name][-1].per_wall_second:,.0f} tok/s" for name in names),
                    flush=True,
                )

    print()
    print(
        f"student {student.name}, {args.steps} steps x batch {args.batch}, {args.rows} rows, "
        f"best of {args.repeats}, torch threads {threads} (all contenders)"
    )
    print(
        f"{'':22} {'tokens/s':>10} {'tokens/CPU s':>13} {'loop s':>8} {'whole call s':>13} {'last loss':>10}"
    )

    def best(name: str) -> tuple[float, float | None]:
        cpu = [m.per_cpu_second for m in results[name] if m.per_cpu_second is not None]
        return max(m.per_wall_second for m in results[name]), max(cpu) if cpu else None

    for name, runs in results.items():
        wall, cpu = best(name)
        loss = runs[-1].loss
        print(
            f"{name:22} {wall:10,.0f} {f'{cpu:,.0f}' if cpu else 'n/a':>13} {min(m.wall for m in runs):8.1f} "
            f"{min(m.call_wall for m in runs):13.1f} {f'{loss:.4f}' if loss is not None else 'n/a':>10}"
        )
    raw_wall, raw_cpu = best(RAW)
    for name, label in ((LIBRARY, "train()/raw"), (WORKER, "worker/raw")):
        wall, cpu = best(name)
        cpu_text = f"{cpu / raw_cpu:.3f}" if cpu and raw_cpu else "n/a"
        print(
            f"ratio {label} (goal >= 0.97): {wall / raw_wall:.3f} per wall second, {cpu_text} per CPU second"
        )
    fastest = max(results[WORKER], key=lambda m: m.per_wall_second)
    print(f"worker run (best repeat): {fastest.overhead}")
    print(f"bench wall {time.perf_counter() - started:.0f}s")


if __name__ == "__main__":
    main()
