"""Prometheus metrics, computed from Postgres when scraped (so every API replica reports the truth).

Exposed at `/metrics` (viewer token, or none with HARDLABEL_METRICS_PUBLIC) and, with
HARDLABEL_METRICS_PORT, without a token on a port of their own: jobs by status, tasks by kind and
status, queue depth and oldest queued task age by kind, samples by review decision, teacher tokens,
API tokens, each live worker's heartbeat age, step and loss of each running training run, and
whether the database answered (`hardlabel_database_up`); plus this process's HTTP request counts
and latencies. No `*_created` series: they double every counter and histogram and say nothing a
scraper needs.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from wsgiref.simple_server import WSGIServer

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    start_http_server,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import case, func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.db.models import (
    JOB_STATUSES,
    REVIEW_STATUSES,
    ROLES,
    TASK_KINDS,
    TASK_STATUSES,
    ApiToken,
    Job,
    Sample,
    Task,
    TrainingMetric,
    TrainingRun,
    Worker,
)

logger = logging.getLogger(__name__)

# Process-wide (prometheus_client has no per-registry switch); the same as
# PROMETHEUS_DISABLE_CREATED_SERIES=True.
disable_created_metrics()  # type: ignore[no-untyped-call]


class DatabaseCollector(Collector):
    """Reads the queue, jobs, samples, tokens and workers at scrape time."""

    def __init__(self, session_factory: sessionmaker[Session]) -> None:
        self._session_factory = session_factory

    def collect(self) -> Iterator[Metric]:
        # All queries first: a database that fails half-way must not leave half the families.
        try:
            with self._session_factory() as session:
                families = [
                    *self._jobs(session),
                    *self._tasks(session),
                    *self._queue(session),
                    *self._samples(session),
                    *self._reviews(session),
                    *self._tokens(session),
                    *self._workers(session),
                    *self._training(session),
                ]
            answered = 1
        except SQLAlchemyError as exc:
            logger.warning("metrics: the database does not answer: %s", exc.__class__.__name__)
            families, answered = [], 0
        up = GaugeMetricFamily(
            "hardlabel_database_up",
            "1 if the database answered this scrape; 0 if not (then no database metrics are reported).",
        )
        up.add_metric([], answered)
        yield up
        yield from families

    def describe(self) -> Iterator[Metric]:
        # Declared without values so registering the collector runs no query.
        return iter(())

    def _jobs(self, session: Session) -> Iterator[Metric]:
        counts = {status: 0 for status in JOB_STATUSES}
        counts.update(
            dict(session.execute(select(Job.status, func.count()).group_by(Job.status)).tuples().all())
        )
        jobs = GaugeMetricFamily("hardlabel_jobs", "Generation jobs by status.", labels=["status"])
        for status, n in sorted(counts.items()):
            jobs.add_metric([status], n)
        yield jobs
        tokens_in, tokens_out = session.execute(
            select(func.coalesce(func.sum(Job.tokens_in), 0), func.coalesce(func.sum(Job.tokens_out), 0))
        ).one()
        teacher = CounterMetricFamily(
            "hardlabel_teacher_tokens",
            "Prompt (in) and completion (out) tokens of all jobs.",
            labels=["direction"],
        )
        teacher.add_metric(["in"], int(tokens_in))
        teacher.add_metric(["out"], int(tokens_out))
        yield teacher

    def _tasks(self, session: Session) -> Iterator[Metric]:
        counts = {(kind, status): 0 for kind in TASK_KINDS for status in TASK_STATUSES}
        rows = session.execute(select(Task.kind, Task.status, func.count()).group_by(Task.kind, Task.status))
        for kind, status, n in rows.tuples():
            counts[(kind, status)] = n
        tasks = GaugeMetricFamily(
            "hardlabel_tasks", "Queue tasks by kind and status.", labels=["kind", "status"]
        )
        for (kind, status), n in sorted(counts.items()):
            tasks.add_metric([kind, status], n)
        yield tasks

    def _queue(self, session: Session) -> Iterator[Metric]:
        # Served by the partial index of the claim query (queued rows only); `run_after` is when a
        # task became claimable (created, or its retry backoff ended).
        waited = func.greatest(func.extract("epoch", func.now() - func.min(Task.run_after)), 0)
        rows = session.execute(
            select(Task.kind, func.count(), waited).where(Task.status == "queued").group_by(Task.kind)
        )
        found = {kind: (n, float(seconds)) for kind, n, seconds in rows.tuples()}
        depth = GaugeMetricFamily(
            "hardlabel_queue_depth", "Queued tasks by kind (claimable or in retry backoff).", labels=["kind"]
        )
        oldest = GaugeMetricFamily(
            "hardlabel_queue_oldest_age_seconds",
            "Seconds the longest-waiting queued task of each kind has been claimable and unclaimed "
            "(since it was queued or its retry backoff ended); 0 when none waits.",
            labels=["kind"],
        )
        for kind in TASK_KINDS:
            n, seconds = found.get(kind, (0, 0.0))
            depth.add_metric([kind], n)
            oldest.add_metric([kind], seconds)
        yield depth
        yield oldest

    def _reviews(self, session: Session) -> Iterator[Metric]:
        counts = {decision: 0 for decision in REVIEW_STATUSES}
        counts.update(
            dict(
                session.execute(select(Sample.review_status, func.count()).group_by(Sample.review_status))
                .tuples()
                .all()
            )
        )
        decisions = GaugeMetricFamily(
            "hardlabel_samples_by_decision",
            "Samples by review decision (pending: not reviewed yet).",
            labels=["decision"],
        )
        for decision, n in sorted(counts.items()):
            decisions.add_metric([decision], n)
        yield decisions

    def _training(self, session: Session) -> Iterator[Metric]:
        # The loss of each running run's latest logged step that has one (a backward walk of the
        # metric table's primary key per run; eval-only rows carry no training loss).
        loss = (
            select(TrainingMetric.data["loss"])
            .where(
                TrainingMetric.training_run_id == TrainingRun.id,
                func.jsonb_typeof(TrainingMetric.data["loss"]) == "number",
            )
            .order_by(TrainingMetric.step.desc())
            .limit(1)
            .correlate(TrainingRun)
            .scalar_subquery()
        )
        rows = session.execute(
            select(TrainingRun.id, TrainingRun.step, TrainingRun.total_steps, loss)
            .where(TrainingRun.status == "running")
            .order_by(TrainingRun.id)
        )
        step = GaugeMetricFamily(
            "hardlabel_training_step", "Current step of each running training run.", labels=["run"]
        )
        total = GaugeMetricFamily(
            "hardlabel_training_total_steps",
            "Planned steps of each running training run (once the trainer has reported them).",
            labels=["run"],
        )
        losses = GaugeMetricFamily(
            "hardlabel_training_loss",
            "Training loss of the latest logged step of each running training run.",
            labels=["run"],
        )
        for run_id, current, planned, last_loss in rows.tuples():
            step.add_metric([str(run_id)], current)
            if planned is not None:
                total.add_metric([str(run_id)], planned)
            if isinstance(last_loss, int | float):
                losses.add_metric([str(run_id)], float(last_loss))
        yield step
        yield total
        yield losses

    def _samples(self, session: Session) -> Iterator[Metric]:
        total = session.scalar(select(func.count()).select_from(Sample)) or 0
        samples = CounterMetricFamily("hardlabel_samples", "Samples stored.")
        samples.add_metric([], total)
        yield samples

    def _tokens(self, session: Session) -> Iterator[Metric]:
        state = case((ApiToken.revoked_at.is_(None), "active"), else_="revoked")
        counts = {(role, s): 0 for role in ROLES for s in ("active", "revoked")}
        rows = session.execute(select(ApiToken.role, state, func.count()).group_by(ApiToken.role, state))
        for role, s, n in rows.tuples():
            counts[(role, s)] = n
        tokens = GaugeMetricFamily(
            "hardlabel_api_tokens", "API tokens by role and state.", labels=["role", "state"]
        )
        for (role, s), n in sorted(counts.items()):
            tokens.add_metric([role, s], n)
        yield tokens

    def _workers(self, session: Session) -> Iterator[Metric]:
        age = func.extract("epoch", func.now() - Worker.heartbeat_at)
        rows = session.execute(
            select(Worker.id, Worker.hostname, age).where(Worker.stopped_at.is_(None)).order_by(Worker.id)
        )
        heartbeat = GaugeMetricFamily(
            "hardlabel_worker_heartbeat_age_seconds",
            "Seconds since each running worker last reported.",
            labels=["worker", "hostname"],
        )
        live = 0
        for worker_id, hostname, seconds in rows.tuples():
            heartbeat.add_metric([worker_id, hostname], float(seconds))
            live += 1
        yield heartbeat
        workers = GaugeMetricFamily("hardlabel_workers", "Workers that have not reported a clean stop.")
        workers.add_metric([], live)
        yield workers


class HttpMetrics:
    """Request counts and latencies of this process, labelled by route template (not raw path)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "hardlabel_http_requests",
            "HTTP requests served.",
            ["method", "route", "status"],
            registry=registry,
        )
        self.latency = Histogram(
            "hardlabel_http_request_duration_seconds",
            "HTTP request latency.",
            ["method", "route"],
            registry=registry,
        )


class HttpMetricsMiddleware:
    """Pure ASGI middleware feeding HttpMetrics (no body buffering, streaming untouched)."""

    def __init__(self, app: ASGIApp, metrics: HttpMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_and_record(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_and_record)
        finally:
            route = scope.get("route")
            template = getattr(route, "path_format", None) or "unmatched"
            method = str(scope.get("method", ""))
            self.metrics.requests.labels(method, template, str(status)).inc()
            self.metrics.latency.labels(method, template).observe(time.perf_counter() - start)


def start_metrics_server(
    registry: CollectorRegistry, host: str, port: int
) -> tuple[WSGIServer, threading.Thread]:
    """Serve `registry` without a token on its own port (prometheus_client's HTTP server, in a
    daemon thread); stop it with `server.shutdown()` and `server.server_close()`.

    Every path answers with the metrics (`/metrics` is what scrapers ask for); a busy port raises
    OSError here, before anything is served.
    """
    return start_http_server(port, addr=host, registry=registry)


def build_registry(session_factory: sessionmaker[Session]) -> tuple[CollectorRegistry, HttpMetrics]:
    """A registry per app (not the global one), so several apps in one process never collide."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(DatabaseCollector(session_factory))
    return registry, HttpMetrics(registry)
