"""Plain factories of the training tests: committed dataset versions (ORM), addition rows, polling helpers."""

from __future__ import annotations

import json
import random
import uuid
from pathlib import Path
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from service.db.models import DatasetRow, DatasetVersion, Event, TrainingMetric, TrainingRun
from service.db.session import get_engine, transaction
from tests.factories import add_job

# A test student: fast on CPU, loss falls within a few dozen steps.
FAST = {"learning_rate": 3e-3, "per_device_train_batch_size": 16, "max_length": 64}


def addition_pairs(count: int, seed: int = 7) -> list[tuple[int, int]]:
    rng = random.Random(seed)
    return [(rng.randint(0, 99), rng.randint(0, 99)) for _ in range(count)]


def vllm_teacher(model: Path | str, **options: Any) -> dict[str, Any]:
    """A CPU-friendly vLLM teacher config (see ENV.md)."""
    return {
        "model": str(model),
        "engine": "vllm",
        "dtype": "float32",
        "enforce_eager": True,
        "kv_cache_memory_bytes": 256 << 20,
        "max_model_len": 512,
        **options,
    }


def make_version(
    url: str,
    *,
    train: list[tuple[str, str]],
    test: list[tuple[str, str]] | None = None,
    teacher: dict[str, Any] | None = None,
    inputs: list[dict[str, Any]] | None = None,
) -> int:
    """A committed dataset version with these (question, answer) rows, from one job of `teacher`.

    The rows point at no sample unless `inputs` is given (then one sample per row carries them).
    """
    from service.db.models import Sample

    test = test or []
    with transaction(url) as session:
        job = add_job(session, teacher=teacher or {"model": "/no/teacher"}, status="succeeded")
        name = f"ds-{uuid.uuid4().hex[:8]}"
        version = DatasetVersion(
            name=name,
            version=1,
            query={"query": {"job_ids": [job.id]}},
            lineage={"jobs": [{"id": job.id, "teacher": {"model": (teacher or {}).get("model")}}]},
            row_counts={"train": len(train), "test": len(test), "total": len(train) + len(test)},
            digest=uuid.uuid4().hex,
            status="succeeded",
        )
        session.add(version)
        session.flush()
        rows = [("train", q, a) for q, a in train] + [("test", q, a) for q, a in test]
        for index, (split, question, answer) in enumerate(rows):
            sample_id = None
            if inputs is not None:
                sample = Sample(
                    job_id=job.id,
                    item_index=index,
                    stage="answer",
                    sample_index=0,
                    question=question,
                    answer=answer,
                    raw_text=answer,
                    parse_status="ok",
                    inputs=inputs[index],
                )
                session.add(sample)
                session.flush()
                sample_id = sample.id
            session.add(
                DatasetRow(
                    dataset_id=version.id,
                    row_index=index,
                    split=split,
                    source="teacher",
                    sample_id=sample_id,
                    question=question,
                    answer=answer,
                    extra={"job_id": job.id},
                )
            )
        return version.id


def addition_version(url: str, train_rows: int, test_rows: int, teacher: dict[str, Any] | None = None) -> int:
    pairs = addition_pairs(train_rows + test_rows)
    rows = [(f"What is {a}+{b}?", str(a + b)) for a, b in pairs]
    return make_version(url, train=rows[:train_rows], test=rows[train_rows:], teacher=teacher)


def run_row(url: str, run_id: int) -> TrainingRun:
    with Session(get_engine(url), expire_on_commit=False) as session:
        run = session.get(TrainingRun, run_id)
        assert run is not None
        return run


def metric_steps(url: str, run_id: int) -> list[int]:
    with Session(get_engine(url)) as session:
        return list(
            session.scalars(
                select(TrainingMetric.step)
                .where(TrainingMetric.training_run_id == run_id)
                .order_by(TrainingMetric.step)
            )
        )


def metric_times(url: str, run_id: int) -> dict[int, float]:
    """step → the unix time the step was (last) logged."""
    with Session(get_engine(url)) as session:
        rows = session.execute(
            select(TrainingMetric.step, TrainingMetric.data).where(TrainingMetric.training_run_id == run_id)
        ).all()
    return {int(step): float(data["time"]) for step, data in rows}


def events(url: str, run_id: int) -> list[Event]:
    with Session(get_engine(url), expire_on_commit=False) as session:
        return list(session.scalars(select(Event).where(Event.training_run_id == run_id).order_by(Event.id)))


def process_alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie, dead but not yet reaped, counts as gone)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    state = next((line.split()[1] for line in status.splitlines() if line.startswith("State:")), "X")
    return state not in ("Z", "X")


def cancel_unfinished_runs(url: str) -> None:
    """Leave no queued/running train task behind for the next test's worker."""
    with transaction(url) as session:
        session.execute(
            text(
                "UPDATE task SET status = 'cancelled', finished_at = now() "
                "WHERE kind = 'train' AND status IN ('queued', 'running')"
            )
        )
        session.execute(
            text("UPDATE training_run SET status = 'cancelled' WHERE status IN ('queued', 'running')")
        )


def metrics_file_steps(output_dir: str) -> list[int]:
    path = Path(output_dir) / "metrics.jsonl"
    return [json.loads(line)["step"] for line in path.read_text().splitlines() if line.strip()]
