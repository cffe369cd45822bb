"""Seed data for the browser tests, committed through the ORM: jobs with samples, filter verdicts
(with reasons written the way the built-in filters write them), events, and a training run with a
metric series. Deterministic, so screenshots look the same every run."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import insert
from sqlalchemy.orm import Session

from service.auth import issue_token
from service.db.models import (
    EvaluationItem,
    Event,
    FilterRun,
    FilterVerdict,
    Job,
    Recipe,
    Sample,
    Task,
    TrainingMetric,
    TrainingRun,
)
from service.db.session import transaction
from tests.factories import add_job, add_recipe

TOPICS = [
    "photosynthesis",
    "binary search",
    "the French revolution",
    "plate tectonics",
    "compound interest",
    "TCP handshakes",
    "vaccines",
    "black holes",
    "supply and demand",
    "recursion",
    "the water cycle",
    "garbage collection",
    "impressionism",
    "DNA replication",
    "inflation",
    "public-key cryptography",
]
SENTENCES = [
    "It works by breaking the problem into smaller parts.",
    "The key idea is that each step builds on the previous one.",
    "Scientists first described it in the nineteenth century.",
    "A common misconception is that it happens all at once.",
    "In practice, engineers rely on it every day.",
    "This is why the effect grows over time.",
    "Most textbooks illustrate it with a simple diagram.",
    "The process repeats until a stable state is reached.",
]

SELF_INSTRUCT_RECIPE: dict[str, Any] = {
    "name": "self-instruct",
    "description": "Questions about seed topics, answered and scored by the teacher.",
    "seed": 7,
    "seeds": {"values": {"topic": TOPICS}},
    "answer_stage": "answer",
    "stages": [
        {
            "name": "answer",
            "messages": [{"role": "user", "content": "Explain {{ topic }} to a curious student."}],
            "sampling": {"temperature": 0.7, "max_tokens": 256, "n": 3},
            "parser": {"type": "text"},
        },
        {
            "name": "judge",
            "judges": "answer",
            "messages": [{"role": "user", "content": "Rate this answer from 1 to 10: {{ answer }}"}],
            "sampling": {"temperature": 0.0, "max_tokens": 4},
            "parser": {"type": "score", "min": 1, "max": 10},
        },
    ],
}

ARITHMETIC_RECIPE: dict[str, Any] = {
    "name": "arithmetic",
    "description": "Two-digit addition questions; the answer is just the number.",
    "seed": 0,
    "seeds": {"path": "arithmetic_seeds.jsonl"},
    "stages": [
        {
            "name": "answer",
            "messages": [
                {"role": "system", "content": "Answer with a number only."},
                {"role": "user", "content": "What is {{ a }}+{{ b }}?"},
            ],
            "sampling": {"temperature": 0.0, "max_tokens": 8},
            "parser": {"type": "text"},
        }
    ],
}


@dataclass(frozen=True)
class Seeded:
    """Ids and secrets the tests look things up by."""

    admin_token: str
    reviewer_token: str
    viewer_token: str
    reviewer_id: int
    self_instruct_job: int
    arithmetic_job: int
    running_job: int
    review_job: int
    arithmetic_sample_ids: list[int]
    training_run: int | None = None
    dataset_id: int | None = None


def _recipe(session: Session, spec: dict[str, Any]) -> Recipe:
    return add_recipe(session, spec, name=spec["name"])


def _job(
    session: Session,
    recipe: Recipe,
    *,
    status: str,
    items_total: int,
    items_done: int,
    samples: int,
    started_ago: timedelta,
    finished_ago: timedelta | None,
    teacher: dict[str, Any],
) -> Job:
    now = datetime.now(UTC)
    return add_job(
        session,
        recipe,
        status=status,
        teacher=teacher,
        seed=7,
        params={"limit": None, "shard_size": 32, "chunk_size": 8},
        answer_stage=recipe.spec.get("answer_stage") or recipe.spec["stages"][-1]["name"],
        items_total=items_total,
        items_done=items_done,
        samples_written=samples,
        tokens_in=items_done * 38,
        tokens_out=items_done * 61,
        created_at=now - started_ago - timedelta(seconds=4),
        started_at=now - started_ago,
        finished_at=None if finished_ago is None else now - finished_ago,
    )


def _shards(session: Session, job: Job, *, size: int, worker: str) -> None:
    for start in range(0, job.items_total, size):
        end = min(start + size, job.items_total)
        done = min(max(job.items_done - start, 0), end - start)
        status = (
            "succeeded"
            if done == end - start
            else ("running" if done or job.status == "running" else "queued")
        )
        session.add(
            Task(
                kind="generate",
                status=status,
                job_id=job.id,
                payload={"item_start": start, "item_end": end},
                cursor=done,
                attempts=1 if status != "queued" else 0,
                worker_id=worker if status != "queued" else None,
                finished_at=datetime.now(UTC) if status == "succeeded" else None,
            )
        )
    session.flush()


def _events(session: Session, job: Job, messages: list[tuple[str, str]]) -> None:
    start = job.started_at or datetime.now(UTC)
    for i, (kind, message) in enumerate(messages):
        session.add(
            Event(job_id=job.id, kind=kind, message=message, created_at=start + timedelta(seconds=3 * i))
        )
    session.flush()


def _answer(rng: random.Random, topic: str) -> str:
    count = rng.choice([1, 2, 2, 3, 3, 4, 5, 7])
    return f"{topic.capitalize()} is easier than it sounds. " + " ".join(rng.sample(SENTENCES * 2, count))


def _addition_row(job_id: int, item: int, teacher_model: str) -> dict[str, Any]:
    """A two-digit addition sample; every 7th answer (items 3, 10, 17, …) is off by one."""
    a, b = 10 + (item * 37) % 89, 11 + (item * 53) % 87
    answer = str(a + b + (1 if item % 7 == 3 else 0))
    return {
        "job_id": job_id,
        "item_index": item,
        "stage": "answer",
        "sample_index": 0,
        "question": f"What is {a}+{b}?",
        "answer": answer,
        "raw_text": answer,
        "parse_status": "ok",
        "inputs": {"a": a, "b": b, "reference": str(a + b)},
        "provenance": {
            "teacher": {"model": teacher_model},
            "stage": "answer",
            "sampling": {"temperature": 0.0, "max_tokens": 8},
            "finish_reason": "stop",
        },
    }


def _verify(session: Session, run_id: int, ids: list[int], rows: list[dict[str, Any]]) -> None:
    """Verifier verdicts worded as the built-in verifier words them."""
    for sid, row in zip(ids, rows, strict=True):
        ok = row["answer"] == row["inputs"]["reference"]
        session.add(
            FilterVerdict(
                sample_id=sid,
                filter_name="verifier",
                filter_run_id=run_id,
                passed=ok,
                reason=f"answer {row['answer']} {'=' if ok else '≠'} reference {row['inputs']['reference']}",
            )
        )
    session.flush()


def seed_all(url: str) -> Seeded:
    rng = random.Random(1234)
    with transaction(url) as session:
        _, admin_secret = issue_token(session, role="admin", name="ada (admin)")
        reviewer, reviewer_secret = issue_token(session, role="reviewer", name="rui (reviewer)")
        _, viewer_secret = issue_token(session, role="viewer", name="vic (viewer)")
        teacher: dict[str, Any] = {
            "model": "/models/qwen-teacher",
            "engine": "vllm",
            "dtype": "float32",
            "max_model_len": 512,
        }

        # A finished self-instruct job: long-ish answers, judge scores, three filters.
        recipe = _recipe(session, SELF_INSTRUCT_RECIPE)
        job = _job(
            session,
            recipe,
            status="succeeded",
            items_total=16,
            items_done=16,
            samples=48,
            started_ago=timedelta(minutes=42),
            finished_ago=timedelta(minutes=40),
            teacher=teacher,
        )
        _shards(session, job, size=8, worker="gpu-node-1:4121")
        _events(
            session,
            job,
            [
                ("queued", "job queued: 16 items in 2 shards"),
                ("claimed", "shard 1 claimed by worker gpu-node-1:4121"),
                ("claimed", "shard 2 claimed by worker gpu-node-1:4121"),
                ("checkpoint", "shard 1: items 0–8 written (24 samples)"),
                ("checkpoint", "shard 2: items 8–16 written (24 samples)"),
                ("finished", "job succeeded: 48 samples in 2 min"),
            ],
        )
        rows: list[dict[str, Any]] = []
        for item, topic in enumerate(TOPICS):
            for n in range(3):
                answer = _answer(rng, topic)
                rows.append(
                    {
                        "job_id": job.id,
                        "item_index": item,
                        "stage": "answer",
                        "sample_index": n,
                        "question": f"Explain {topic} to a curious student.",
                        "answer": answer,
                        "raw_text": answer,
                        "parse_status": "ok",
                        "score": float(rng.choice([3, 5, 6, 7, 7, 8, 8, 9, 9, 10])),
                        "inputs": {"topic": topic},
                        "provenance": {
                            "teacher": {"model": teacher["model"], "revision": "local"},
                            "stage": "answer",
                            "sampling": {"temperature": 0.7, "max_tokens": 256, "seed": 7000 + item * 3 + n},
                            "prompt_tokens": 38,
                            "completion_tokens": len(answer) // 4,
                            "finish_reason": "stop",
                            "latency_ms": 212 + item,
                        },
                    }
                )
        ids = list(session.scalars(insert(Sample).returning(Sample.id, sort_by_parameter_order=True), rows))
        run = FilterRun(
            status="succeeded",
            spec={
                "selection": {"job_ids": [job.id], "stage": "answer"},
                "filters": [{"type": "length"}, {"type": "judge_score"}, {"type": "near_dup"}],
                "selection_size": len(ids),
            },
            items_total=len(ids) * 3,
            items_done=len(ids) * 3,
        )
        session.add(run)
        session.flush()
        verdicts = []
        for sid, row in zip(ids, rows, strict=True):
            chars = len(row["answer"])
            verdicts.append(
                FilterVerdict(
                    sample_id=sid,
                    filter_name="length",
                    filter_run_id=run.id,
                    passed=chars <= 330,
                    score=float(chars),
                    reason=f"answer has {chars:,} characters, "
                    + ("within [20, 330]" if chars <= 330 else "more than max 330"),
                )
            )
            score = row["score"]
            verdicts.append(
                FilterVerdict(
                    sample_id=sid,
                    filter_name="judge_score",
                    filter_run_id=run.id,
                    passed=score >= 6,
                    score=score,
                    reason=f"score {score:g} " + ("within [6, ]" if score >= 6 else "< min 6"),
                )
            )
            dup = row["sample_index"] == 2 and row["item_index"] % 4 == 0
            verdicts.append(
                FilterVerdict(
                    sample_id=sid,
                    filter_name="near_dup",
                    filter_run_id=run.id,
                    passed=not dup,
                    score=0.91 if dup else 0.34,
                    reason=f"near-duplicate of sample {sid - 2} (Jaccard 0.91)"
                    if dup
                    else "no near-duplicate at Jaccard ≥ 0.80; closest Jaccard 0.34",
                )
            )
        session.add_all(verdicts)
        # Some already reviewed, so progress and a dataset version have something to show.
        for sid, row in list(zip(ids, rows, strict=True))[:30]:
            sample = session.get(Sample, sid)
            assert sample is not None
            sample.review_status = "accepted" if row["score"] >= 6 else "rejected"
            sample.reviewed_by, sample.reviewed_at = reviewer.id, datetime.now(UTC) - timedelta(minutes=20)
        session.flush()

        # A finished arithmetic job with a verifier: the keyboard-review and dataset tests use it.
        arithmetic_recipe = _recipe(session, ARITHMETIC_RECIPE)
        arithmetic = _job(
            session,
            arithmetic_recipe,
            status="succeeded",
            items_total=30,
            items_done=30,
            samples=30,
            started_ago=timedelta(minutes=12),
            finished_ago=timedelta(minutes=10),
            teacher=teacher,
        )
        _shards(session, arithmetic, size=16, worker="gpu-node-2:811")
        _events(
            session,
            arithmetic,
            [
                ("queued", "job queued: 30 items in 2 shards"),
                ("finished", "job succeeded: 30 samples in 2 min"),
            ],
        )
        arithmetic_rows = [_addition_row(arithmetic.id, item, teacher["model"]) for item in range(30)]
        arithmetic_ids = list(
            session.scalars(
                insert(Sample).returning(Sample.id, sort_by_parameter_order=True), arithmetic_rows
            )
        )
        verifier = FilterRun(
            status="succeeded",
            spec={
                "selection": {"job_ids": [arithmetic.id], "stage": "answer"},
                "filters": [{"type": "verifier"}],
                "selection_size": 30,
            },
            items_total=30,
            items_done=30,
        )
        session.add(verifier)
        session.flush()
        _verify(session, verifier.id, arithmetic_ids, arithmetic_rows)

        # A small finished job only the keyboard-review test touches.
        review_job = _job(
            session,
            arithmetic_recipe,
            status="succeeded",
            items_total=8,
            items_done=8,
            samples=8,
            started_ago=timedelta(minutes=6),
            finished_ago=timedelta(minutes=5),
            teacher=teacher,
        )
        review_rows = [_addition_row(review_job.id, item, teacher["model"]) for item in range(8)]
        review_ids = list(
            session.scalars(insert(Sample).returning(Sample.id, sort_by_parameter_order=True), review_rows)
        )
        _verify(session, verifier.id, review_ids, review_rows)

        # A job still running, for the live list.
        running = _job(
            session,
            arithmetic_recipe,
            status="running",
            items_total=500,
            items_done=185,
            samples=185,
            started_ago=timedelta(minutes=3),
            finished_ago=None,
            teacher=teacher,
        )
        _shards(session, running, size=100, worker="gpu-node-2:811")
        _events(
            session,
            running,
            [
                ("queued", "job queued: 500 items in 5 shards"),
                ("claimed", "shard 1 claimed by worker gpu-node-2:811"),
            ],
        )
        session.flush()
        return Seeded(
            admin_token=admin_secret,
            reviewer_token=reviewer_secret,
            viewer_token=viewer_secret,
            reviewer_id=reviewer.id,
            self_instruct_job=job.id,
            arithmetic_job=arithmetic.id,
            running_job=running.id,
            review_job=review_job.id,
            arithmetic_sample_ids=arithmetic_ids,
        )


def loss_curve(steps: int, every: int, eval_every: int) -> list[dict[str, Any]]:
    """A plausible falling loss with noise, and an eval loss every `eval_every` steps."""
    rng = random.Random(7)
    rows = []
    for step in range(every, steps + 1, every):
        loss = 0.35 + 2.6 * (0.965**step) + rng.uniform(-0.06, 0.06)
        data: dict[str, Any] = {
            "step": step,
            "loss": round(loss, 4),
            "learning_rate": 2e-4 * (1 - step / steps),
            "grad_norm": round(1.8 * 0.99**step + 0.2, 3),
            "epoch": round(step / 40, 3),
            "tokens_per_second": 5200.0 + rng.uniform(-300, 300),
        }
        if step % eval_every == 0:
            data["eval_loss"] = round(0.42 + 2.4 * (0.968**step), 4)
        rows.append(data)
    return rows


def seed_training_run(url: str, dataset_id: int, *, teacher_model: str) -> int:
    """A finished run on `dataset_id` with metrics, checkpoints, events and an evaluation table."""
    now = datetime.now(UTC)
    with transaction(url) as session:
        run = TrainingRun(
            dataset_id=dataset_id,
            status="succeeded",
            student={"model": "/models/student-tiny"},
            method="full",
            config={
                "method": "full",
                "learning_rate": 2e-4,
                "num_train_epochs": 3.0,
                "max_steps": 120,
                "per_device_train_batch_size": 8,
                "max_length": 256,
                "packing": False,
                "seed": 42,
                "logging_steps": 2,
                "eval_steps": 10,
                "save_steps": 60,
            },
            evaluation={"enabled": True, "split": "test", "scorer": "numeric", "max_items": 200},
            step=120,
            total_steps=120,
            tokens_per_second=5310.0,
            checkpoints=["checkpoint-60", "checkpoint-120"],
            output_dir="/data/hardlabel/training/run-1",
            model_path="/data/hardlabel/training/run-1/final",
            results={
                "items": 200,
                "scorer": "numeric",
                "source": f"test split of dataset {dataset_id}",
                "teacher": {"model": teacher_model, "items": 200, "correct": 191, "accuracy": 0.955},
                "student_before": {
                    "model": "/models/student-tiny",
                    "items": 200,
                    "correct": 3,
                    "accuracy": 0.015,
                },
                "student_after": {
                    "model": "/data/hardlabel/training/run-1/final",
                    "items": 200,
                    "correct": 186,
                    "accuracy": 0.93,
                },
                "ratio": 0.974,
                "examples": [
                    {
                        "question": "What is 17+21?",
                        "reference": "38",
                        "teacher": "38",
                        "student_before": "7",
                        "student_after": "38",
                    },
                ],
            },
            created_at=now - timedelta(minutes=9),
            started_at=now - timedelta(minutes=8, seconds=40),
            finished_at=now - timedelta(minutes=2),
        )
        session.add(run)
        session.flush()
        for data in loss_curve(120, 2, 10):
            session.add(TrainingMetric(training_run_id=run.id, step=data["step"], data=data))
        for i, (kind, message) in enumerate(
            [
                ("queued", "training run queued on dataset version"),
                ("claimed", "claimed by worker gpu-node-1:4242"),
                ("preflight", "mask check passed: prompt tokens ignored, answer tokens trained"),
                ("checkpoint", "checkpoint-60 saved"),
                ("checkpoint", "checkpoint-120 saved"),
                ("evaluated", "student 0.930 vs teacher 0.955 (ratio 0.974) on 200 items"),
                ("finished", "training run succeeded"),
            ]
        ):
            session.add(
                Event(
                    training_run_id=run.id,
                    kind=kind,
                    message=message,
                    created_at=now - timedelta(minutes=8) + timedelta(seconds=50 * i),
                )
            )
        session.add_all(evaluation_items(run.id, EVALUATION_ITEMS))
        session.flush()
        return run.id


# The seeded run's scored items: 45 additions (three pages of 20 in the UI).
EVALUATION_ITEMS = 45


def teacher_wrong(index: int) -> bool:
    return index % 10 == 3


def student_wrong(index: int) -> bool:
    return index % 7 == 0


def evaluation_items(run_id: int, count: int) -> list[EvaluationItem]:
    """Items where the teacher misses every 10th (3, 13, …) and the student every 7th (0, 7, …)."""
    items = []
    for index in range(count):
        reference = str(2 * index + 10)
        items.append(
            EvaluationItem(
                training_run_id=run_id,
                item_index=index,
                question=f"What is {index}+{index + 10}?",
                reference=reference,
                teacher_answer="7" if teacher_wrong(index) else reference,
                teacher_correct=not teacher_wrong(index),
                student_before_answer="",
                student_before_correct=False,
                student_after_answer="1" if student_wrong(index) else reference,
                student_after_correct=not student_wrong(index),
            )
        )
    return items
