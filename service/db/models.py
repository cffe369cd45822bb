"""The schema. Alembic migrations in migrations/ must agree with it (`alembic check` in CI)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    ARRAY,
    BigInteger,
    CheckConstraint,
    Computed,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB, TSVECTOR
from sqlalchemy.orm import Mapped, mapped_column

from service.db.base import Base, created_at_column, status_check
from service.statuses import ALL_STATUSES

ROLES = ("admin", "reviewer", "viewer")
TASK_KINDS = ("generate", "filter", "export", "train", "freeze")
PARSE_STATUSES = ("ok", "failed")
REVIEW_STATUSES = ("pending", "accepted", "rejected")
SPLITS = ("train", "test")
ROW_SOURCES = ("teacher", "ground_truth")
TRAINING_METHODS = ("full", "lora")


JOB_STATUSES: tuple[str, ...] = ALL_STATUSES
TASK_STATUSES: tuple[str, ...] = JOB_STATUSES


class ApiToken(Base):
    """A bearer token. Only its SHA-256 is stored; the secret is printed once at creation."""

    __tablename__ = "api_token"
    __table_args__ = (CheckConstraint(status_check("role", ROLES), name="role"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(20))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = created_at_column()
    last_used_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]


class Recipe(Base):
    """A named, immutable recipe version (templates, seeds, stages)."""

    __tablename__ = "recipe"
    __table_args__ = (UniqueConstraint("name", "version"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    version: Mapped[int] = mapped_column(Integer)
    spec: Mapped[dict[str, Any]]
    digest: Mapped[str] = mapped_column(String(64), index=True)
    created_by: Mapped[int | None] = mapped_column(ForeignKey("api_token.id"))
    created_at: Mapped[datetime] = created_at_column()


class Job(Base):
    """A generation job: one recipe on one or more teachers, split into shards (tasks) per teacher."""

    __tablename__ = "job"
    __table_args__ = (
        CheckConstraint(status_check("status", JOB_STATUSES), name="status"),
        CheckConstraint(
            "jsonb_typeof(teachers) = 'array' AND jsonb_array_length(teachers) >= 1", name="teachers"
        ),
        Index("ix_job_status_id", "status", "id"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    recipe_id: Mapped[int] = mapped_column(ForeignKey("recipe.id"), index=True)
    status: Mapped[str] = mapped_column(String(20), server_default="queued")
    # Teacher configs; each item is answered by each, and the first is the job's primary teacher
    # (the one a training run's evaluation compares students with unless told otherwise).
    teachers: Mapped[list[dict[str, Any]]] = mapped_column(JSONB)
    seed: Mapped[int] = mapped_column(BigInteger, server_default="0")
    priority: Mapped[int] = mapped_column(Integer, server_default="0")
    params: Mapped[dict[str, Any]] = mapped_column(server_default=text("'{}'::jsonb"))
    # The recipe stage whose samples are the training pairs, fixed at submission (generator.recipe
    # decides it); null only for rows whose recipe names no usable stage.
    answer_stage: Mapped[str | None] = mapped_column(String(100))
    items_total: Mapped[int] = mapped_column(Integer, server_default="0")
    items_done: Mapped[int] = mapped_column(Integer, server_default="0")
    samples_written: Mapped[int] = mapped_column(BigInteger, server_default="0")
    tokens_in: Mapped[int] = mapped_column(BigInteger, server_default="0")
    tokens_out: Mapped[int] = mapped_column(BigInteger, server_default="0")
    # Each teacher's share of the counters above, by teacher index ("0", "1", ...): items_done,
    # samples, tokens_in, tokens_out. Written in the same chunk transaction as the totals.
    teacher_usage: Mapped[dict[str, Any]] = mapped_column(server_default=text("'{}'::jsonb"))
    idempotency_key: Mapped[str | None] = mapped_column(String(200), unique=True)
    request_digest: Mapped[str | None] = mapped_column(String(64))
    error: Mapped[str | None] = mapped_column(Text)
    created_by: Mapped[int | None] = mapped_column(ForeignKey("api_token.id"))
    created_at: Mapped[datetime] = created_at_column()
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]

    @property
    def teacher(self) -> dict[str, Any]:
        """The primary teacher (the first); setting it makes a one-teacher job."""
        return self.teachers[0]

    @teacher.setter
    def teacher(self, config: dict[str, Any]) -> None:
        self.teachers = [config]


class Worker(Base):
    """A worker process, as it last reported itself."""

    __tablename__ = "worker"

    id: Mapped[str] = mapped_column(String(100), primary_key=True)
    hostname: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    kinds: Mapped[list[str]] = mapped_column(ARRAY(String(20)))
    started_at: Mapped[datetime] = created_at_column()
    heartbeat_at: Mapped[datetime] = created_at_column()
    stopped_at: Mapped[datetime | None]


class FilterRun(Base):
    """One application of one or more filters to a selection of samples."""

    __tablename__ = "filter_run"
    __table_args__ = (CheckConstraint(status_check("status", JOB_STATUSES), name="status"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    status: Mapped[str] = mapped_column(String(20), server_default="queued")
    spec: Mapped[dict[str, Any]]
    counts: Mapped[dict[str, Any]] = mapped_column(server_default=text("'{}'::jsonb"))
    items_total: Mapped[int] = mapped_column(Integer, server_default="0")
    items_done: Mapped[int] = mapped_column(Integer, server_default="0")
    error: Mapped[str | None] = mapped_column(Text)
    created_by: Mapped[int | None] = mapped_column(ForeignKey("api_token.id"))
    created_at: Mapped[datetime] = created_at_column()
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]


class DatasetVersion(Base):
    """A frozen, immutable dataset version: rows copied by its `freeze` task, lineage and digest.

    Its rows, counts, digest and lineage are set once, when the freeze succeeds; until then it is
    queued or running (with `rows_done` of `rows_total`), and a failed freeze keeps its error.
    """

    __tablename__ = "dataset_version"
    __table_args__ = (
        UniqueConstraint("name", "version"),
        CheckConstraint(status_check("status", JOB_STATUSES), name="status"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    version: Mapped[int] = mapped_column(Integer)
    query: Mapped[dict[str, Any]]
    lineage: Mapped[dict[str, Any]] = mapped_column(server_default=text("'{}'::jsonb"))
    row_counts: Mapped[dict[str, Any]] = mapped_column(server_default=text("'{}'::jsonb"))
    digest: Mapped[str] = mapped_column(String(64), index=True)
    status: Mapped[str] = mapped_column(String(20), server_default="queued")
    rows_total: Mapped[int | None] = mapped_column(BigInteger)
    rows_done: Mapped[int] = mapped_column(BigInteger, server_default="0")
    error: Mapped[str | None] = mapped_column(Text)
    created_by: Mapped[int | None] = mapped_column(ForeignKey("api_token.id"))
    created_at: Mapped[datetime] = created_at_column()
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]


class TrainingRun(Base):
    """A student fine-tune on a dataset version, with its evaluation against the teacher."""

    __tablename__ = "training_run"
    __table_args__ = (
        CheckConstraint(status_check("status", JOB_STATUSES), name="status"),
        CheckConstraint(status_check("method", TRAINING_METHODS), name="method"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("dataset_version.id"), index=True)
    status: Mapped[str] = mapped_column(String(20), server_default="queued")
    student: Mapped[dict[str, Any]]
    method: Mapped[str] = mapped_column(String(10))
    config: Mapped[dict[str, Any]]
    evaluation: Mapped[dict[str, Any]] = mapped_column(server_default=text("'{}'::jsonb"))
    step: Mapped[int] = mapped_column(Integer, server_default="0")
    total_steps: Mapped[int | None] = mapped_column(Integer)
    tokens_per_second: Mapped[float | None]
    checkpoints: Mapped[list[Any]] = mapped_column(server_default=text("'[]'::jsonb"))
    output_dir: Mapped[str | None] = mapped_column(Text)
    model_path: Mapped[str | None] = mapped_column(Text)
    results: Mapped[dict[str, Any] | None]
    error: Mapped[str | None] = mapped_column(Text)
    created_by: Mapped[int | None] = mapped_column(ForeignKey("api_token.id"))
    created_at: Mapped[datetime] = created_at_column()
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]


class Task(Base):
    """A row of the Postgres job queue (see DESIGN.md: SKIP LOCKED claims, leases, fencing)."""

    __tablename__ = "task"
    __table_args__ = (
        CheckConstraint(status_check("status", TASK_STATUSES), name="status"),
        CheckConstraint(status_check("kind", TASK_KINDS), name="kind"),
        # The claim query's access path: only queued rows, in claim order.
        Index(
            "ix_task_claim",
            "kind",
            text("priority DESC"),
            "id",
            postgresql_where=text("status = 'queued'"),
        ),
        Index("ix_task_lease", "lease_expires_at", postgresql_where=text("status = 'running'")),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    kind: Mapped[str] = mapped_column(String(20))
    status: Mapped[str] = mapped_column(String(20), server_default="queued")
    priority: Mapped[int] = mapped_column(Integer, server_default="0")
    job_id: Mapped[int | None] = mapped_column(ForeignKey("job.id", ondelete="CASCADE"), index=True)
    filter_run_id: Mapped[int | None] = mapped_column(
        ForeignKey("filter_run.id", ondelete="CASCADE"), index=True
    )
    training_run_id: Mapped[int | None] = mapped_column(
        ForeignKey("training_run.id", ondelete="CASCADE"), index=True
    )
    dataset_id: Mapped[int | None] = mapped_column(
        ForeignKey("dataset_version.id", ondelete="CASCADE"), index=True
    )
    payload: Mapped[dict[str, Any]] = mapped_column(server_default=text("'{}'::jsonb"))
    cursor: Mapped[int] = mapped_column(BigInteger, server_default="0")
    attempts: Mapped[int] = mapped_column(Integer, server_default="0")
    max_attempts: Mapped[int] = mapped_column(Integer, server_default="5")
    lease_token: Mapped[int] = mapped_column(BigInteger, server_default="0")
    lease_expires_at: Mapped[datetime | None]
    worker_id: Mapped[str | None] = mapped_column(String(100))
    run_after: Mapped[datetime] = created_at_column()
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = created_at_column()
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]


class Event(Base):
    """A timeline entry of a job, filter run, training run or dataset freeze (queued, claimed, ...)."""

    __tablename__ = "event"
    __table_args__ = (
        Index("ix_event_job", "job_id", "id"),
        Index("ix_event_training_run", "training_run_id", "id"),
        Index("ix_event_filter_run", "filter_run_id", "id"),
        Index("ix_event_dataset", "dataset_id", "id"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    job_id: Mapped[int | None] = mapped_column(ForeignKey("job.id", ondelete="CASCADE"))
    filter_run_id: Mapped[int | None] = mapped_column(ForeignKey("filter_run.id", ondelete="CASCADE"))
    training_run_id: Mapped[int | None] = mapped_column(ForeignKey("training_run.id", ondelete="CASCADE"))
    dataset_id: Mapped[int | None] = mapped_column(ForeignKey("dataset_version.id", ondelete="CASCADE"))
    task_id: Mapped[int | None] = mapped_column(BigInteger)
    kind: Mapped[str] = mapped_column(String(40))
    message: Mapped[str] = mapped_column(Text)
    data: Mapped[dict[str, Any]] = mapped_column(server_default=text("'{}'::jsonb"))
    created_at: Mapped[datetime] = created_at_column()


class Sample(Base):
    """One teacher output. `question`/`answer` are the teacher's and never change; review edits go
    to `edited_*` (current text = coalesce(edited, original)) with a SampleRevision each."""

    __tablename__ = "sample"
    __table_args__ = (
        UniqueConstraint("job_id", "item_index", "stage", "sample_index", "teacher_index"),
        CheckConstraint(status_check("parse_status", PARSE_STATUSES), name="parse_status"),
        CheckConstraint(status_check("review_status", REVIEW_STATUSES), name="review_status"),
        Index("ix_sample_job_stage_id", "job_id", "stage", "id"),
        # Keyset pages of one job's samples (any stage) by id: without it a job whose samples have
        # high ids is found by scanning every older sample (bench/curation.py).
        Index("ix_sample_job_id_id", "job_id", "id"),
        Index("ix_sample_review_status_id", "review_status", "id"),
        Index("ix_sample_search", "search", postgresql_using="gin"),
        Index("ix_sample_tags", "tags", postgresql_using="gin"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("job.id", ondelete="CASCADE"))
    item_index: Mapped[int] = mapped_column(Integer)
    stage: Mapped[str] = mapped_column(String(100))
    sample_index: Mapped[int] = mapped_column(Integer)
    # Which of the job's teachers wrote it (an index into job.teachers).
    teacher_index: Mapped[int] = mapped_column(SmallInteger, server_default="0")
    parent_sample_index: Mapped[int | None] = mapped_column(Integer)
    question: Mapped[str] = mapped_column(Text)
    answer: Mapped[str | None] = mapped_column(Text)
    raw_text: Mapped[str] = mapped_column(Text)
    parsed: Mapped[Any | None] = mapped_column(JSONB)
    parse_status: Mapped[str] = mapped_column(String(10))
    parse_error: Mapped[str | None] = mapped_column(Text)
    score: Mapped[float | None]
    inputs: Mapped[dict[str, Any]] = mapped_column(server_default=text("'{}'::jsonb"))
    provenance: Mapped[dict[str, Any]] = mapped_column(server_default=text("'{}'::jsonb"))
    edited_question: Mapped[str | None] = mapped_column(Text)
    edited_answer: Mapped[str | None] = mapped_column(Text)
    review_status: Mapped[str] = mapped_column(String(10), server_default="pending")
    reviewed_by: Mapped[int | None] = mapped_column(ForeignKey("api_token.id"))
    reviewed_at: Mapped[datetime | None]
    tags: Mapped[list[str]] = mapped_column(ARRAY(String(100)), server_default=text("'{}'"))
    note: Mapped[str | None] = mapped_column(Text)
    # The teacher's top-k log-probabilities per completion token (generator.soft_labels format),
    # where the job's stage asked for them. Deferred: lists and reviews never load the bytes.
    soft_labels: Mapped[bytes | None] = mapped_column(LargeBinary, deferred=True)
    search: Mapped[Any] = mapped_column(
        TSVECTOR,
        Computed(
            "to_tsvector('simple', coalesce(edited_question, question) || ' ' "
            "|| coalesce(edited_answer, answer, raw_text))",
            persisted=True,
        ),
    )
    created_at: Mapped[datetime] = created_at_column()


class SampleRevision(Base):
    """One review edit of a sample's question or answer."""

    __tablename__ = "sample_revision"
    __table_args__ = (
        CheckConstraint("field IN ('question', 'answer')", name="field"),
        Index("ix_sample_revision_sample", "sample_id", "id"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    sample_id: Mapped[int] = mapped_column(ForeignKey("sample.id", ondelete="CASCADE"))
    field: Mapped[str] = mapped_column(String(10))
    old_text: Mapped[str | None] = mapped_column(Text)
    new_text: Mapped[str] = mapped_column(Text)
    edited_by: Mapped[int | None] = mapped_column(ForeignKey("api_token.id"))
    created_at: Mapped[datetime] = created_at_column()


class FilterVerdict(Base):
    """A filter's verdict on a sample. Re-running a filter replaces its verdict (one per pair)."""

    __tablename__ = "filter_verdict"
    __table_args__ = (Index("ix_filter_verdict_filter_passed", "filter_name", "passed", "sample_id"),)

    sample_id: Mapped[int] = mapped_column(ForeignKey("sample.id", ondelete="CASCADE"), primary_key=True)
    filter_name: Mapped[str] = mapped_column(String(100), primary_key=True)
    filter_run_id: Mapped[int] = mapped_column(ForeignKey("filter_run.id", ondelete="CASCADE"), index=True)
    passed: Mapped[bool]
    score: Mapped[float | None]
    reason: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = created_at_column()


class DatasetRow(Base):
    """A row of a frozen dataset version: the exact text at creation time."""

    __tablename__ = "dataset_row"
    __table_args__ = (
        CheckConstraint(status_check("split", SPLITS), name="split"),
        CheckConstraint(status_check("source", ROW_SOURCES), name="source"),
        Index("ix_dataset_row_split", "dataset_id", "split", "row_index"),
    )

    dataset_id: Mapped[int] = mapped_column(
        ForeignKey("dataset_version.id", ondelete="CASCADE"), primary_key=True
    )
    row_index: Mapped[int] = mapped_column(Integer, primary_key=True)
    split: Mapped[str] = mapped_column(String(10))
    source: Mapped[str] = mapped_column(String(20))
    sample_id: Mapped[int | None] = mapped_column(ForeignKey("sample.id", ondelete="SET NULL"))
    question: Mapped[str] = mapped_column(Text)
    answer: Mapped[str] = mapped_column(Text)
    system: Mapped[str | None] = mapped_column(Text)
    extra: Mapped[dict[str, Any]] = mapped_column(server_default=text("'{}'::jsonb"))


class TrainingMetric(Base):
    """One logged step of a training run. One row per step: a resumed run upserts, never duplicates."""

    __tablename__ = "training_metric"

    training_run_id: Mapped[int] = mapped_column(
        ForeignKey("training_run.id", ondelete="CASCADE"), primary_key=True
    )
    step: Mapped[int] = mapped_column(Integer, primary_key=True)
    data: Mapped[dict[str, Any]]
    created_at: Mapped[datetime] = created_at_column()


class EvaluationItem(Base):
    """One scored evaluation item of a training run: the question, the reference, and each model's
    answer with its verdict (null where that model was not scored). Replaced as a whole when the
    run's evaluation is stored, so a re-evaluated run never mixes item lists."""

    __tablename__ = "evaluation_item"

    training_run_id: Mapped[int] = mapped_column(
        ForeignKey("training_run.id", ondelete="CASCADE"), primary_key=True
    )
    item_index: Mapped[int] = mapped_column(Integer, primary_key=True)
    question: Mapped[str] = mapped_column(Text)
    reference: Mapped[str] = mapped_column(Text)
    system: Mapped[str | None] = mapped_column(Text)
    teacher_answer: Mapped[str | None] = mapped_column(Text)
    teacher_correct: Mapped[bool | None]
    student_before_answer: Mapped[str | None] = mapped_column(Text)
    student_before_correct: Mapped[bool | None]
    student_after_answer: Mapped[str | None] = mapped_column(Text)
    student_after_correct: Mapped[bool | None]
