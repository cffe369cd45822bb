"""Prometheus metrics, computed from Postgres when scraped (so every API replica reports the truth).

Exposed at `/metrics` (viewer token): jobs by status, tasks by kind and status, samples, teacher
tokens, API tokens, and each live worker's heartbeat age; plus this process's HTTP request counts
and latencies.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import case, func, select
from sqlalchemy.orm import Session, sessionmaker
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.db.models import (
    JOB_STATUSES,
    ROLES,
    TASK_KINDS,
    TASK_STATUSES,
    ApiToken,
    Job,
    Sample,
    Task,
    Worker,
)


class DatabaseCollector(Collector):
    """Reads the queue, jobs, samples, tokens and workers at scrape time."""

    def __init__(self, session_factory: sessionmaker[Session]) -> None:
        self._session_factory = session_factory

    def collect(self) -> Iterator[Metric]:
        with self._session_factory() as session:
            yield from self._jobs(session)
            yield from self._tasks(session)
            yield from self._samples(session)
            yield from self._tokens(session)
            yield from self._workers(session)

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


def build_registry(session_factory: sessionmaker[Session]) -> tuple[CollectorRegistry, HttpMetrics]:
    """A registry per app (not the global one), so several apps in one process never collide."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(DatabaseCollector(session_factory))
    return registry, HttpMetrics(registry)
