"""The FastAPI application: `create_app()` wires settings, database, auth, errors, metrics and routers.

Run it with `hardlabel serve` (which resolves the database first), or with
`uvicorn --factory service.app:create_app` when HARDLABEL_DATABASE_URL is set.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.datasets.routes import router as datasets_router
from service.db.session import session_factory
from service.dependencies import role, storable_request_text
from service.errors import (
    ServiceUnavailableError,
    document_problems,
    install_problem_handlers,
    problem_response,
    problem_responses,
)
from service.filters.routes import router as filters_router
from service.jobs.routes import router as jobs_router
from service.metrics import HttpMetricsMiddleware, build_registry
from service.pagination import document_page_size
from service.recipes.routes import router as recipes_router
from service.reviews.routes import router as reviews_router
from service.samples.routes import router as samples_router
from service.settings import Settings, get_settings
from service.stats.routes import router as stats_router
from service.training.routes import router as training_router
from service.web.identity import router as identity_router
from service.web.routes import install_ui

logger = logging.getLogger(__name__)

API_PREFIX = "/v1"


class BodySizeLimitMiddleware:
    """Rejects bodies over `max_bytes` with a 413 problem: by Content-Length up front, or while
    streaming when the client sends none (chunked)."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        detail = f"The request body is larger than {self.max_bytes} bytes."
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            response = problem_response(Request(scope), 413, slug="payload-too-large", detail=detail)
            await response(scope, receive, send)
            return
        received = 0

        async def bounded_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    # fastapi.HTTPException passes FastAPI's body reader untouched (others become 400).
                    raise HTTPException(413, detail=detail)
            return message

        await self.app(scope, bounded_receive, send)


class Health(BaseModel):
    status: str


def _check_database(app: FastAPI) -> None:
    with app.state.session_factory() as session:
        session.execute(text("SELECT 1"))


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the API. `settings.database_url` must be set (the CLI resolves it before calling this)."""
    settings = settings or get_settings()
    if not settings.database_url:
        raise RuntimeError(
            "HARDLABEL_DATABASE_URL is not set: start the API with `hardlabel serve` "
            "(which starts the embedded Postgres) or point it at a database."
        )
    factory = session_factory(settings.database_url)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            await run_in_threadpool(_check_database, app)
        except SQLAlchemyError as exc:
            raise RuntimeError(f"cannot reach the database: {exc.__class__.__name__}: {exc}") from exc
        yield

    app = FastAPI(
        title="hardlabel",
        version="1",
        summary="Hard-label distillation of LLMs: teacher samples, curation, student SFT.",
        description="Every route but /healthz, /readyz and the docs needs `Authorization: Bearer <token>`. "
        "Errors are RFC 9457 `application/problem+json`.",
        lifespan=lifespan,
        docs_url="/docs",
        redoc_url=None,
        dependencies=[Depends(storable_request_text)],
    )
    app.state.settings = settings
    app.state.session_factory = factory
    registry, http_metrics = build_registry(factory)
    app.state.metrics_registry = registry

    install_problem_handlers(app)
    generate_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = document_page_size(
                document_problems(generate_openapi()), settings.max_page_size
            )
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    app.add_middleware(BodySizeLimitMiddleware, max_bytes=settings.max_request_bytes)
    app.add_middleware(HttpMetricsMiddleware, metrics=http_metrics)

    @app.get("/healthz", tags=["health"], response_model=Health)
    def healthz() -> Health:
        """Liveness: the process answers (no database call)."""
        return Health(status="ok")

    @app.get("/readyz", tags=["health"], response_model=Health, responses=problem_responses(503))
    def readyz() -> Health:
        """Readiness: the database answers."""
        try:
            _check_database(app)
        except SQLAlchemyError as exc:
            logger.warning("readiness check failed: %s", exc)
            raise ServiceUnavailableError(
                "The database does not answer.", slug="database-unavailable"
            ) from exc
        return Health(status="ok")

    def metrics() -> PlainTextResponse:
        """Prometheus metrics (text exposition format), computed at scrape time."""
        return PlainTextResponse(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    # A viewer token, unless HARDLABEL_METRICS_PUBLIC opens it to scrapers that carry none.
    app.add_api_route(
        "/metrics",
        metrics,
        methods=["GET"],
        tags=["health"],
        response_class=PlainTextResponse,
        dependencies=[] if settings.metrics_public else [Depends(role("viewer"))],
    )

    app.include_router(recipes_router, prefix=API_PREFIX)
    app.include_router(jobs_router, prefix=API_PREFIX)
    app.include_router(reviews_router, prefix=API_PREFIX)
    app.include_router(samples_router, prefix=API_PREFIX)
    app.include_router(filters_router, prefix=API_PREFIX)
    app.include_router(datasets_router, prefix=API_PREFIX)
    app.include_router(training_router, prefix=API_PREFIX)
    app.include_router(stats_router, prefix=API_PREFIX)
    app.include_router(identity_router, prefix=API_PREFIX)
    install_ui(app)  # the review UI: /ui pages and /ui/static (after the API routes)
    return app
