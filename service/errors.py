"""RFC 9457 problem details: every error the API returns is `application/problem+json`.

A problem has `type`, `title`, `status`, `detail` and `instance` (the request path); validation
problems add `errors: [{"loc": [...], "field": "a.b[0].c", "msg": ...}]`. Services raise
`ProblemError` subclasses; the handlers here turn them, FastAPI's validation errors, Starlette's
HTTP errors and anything unexpected (a 500 without a traceback, logged server side) into that shape.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.exc import DataError, DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.formparsers import MultiPartException
from starlette.routing import Match

logger = logging.getLogger(__name__)

PROBLEM_MEDIA_TYPE = "application/problem+json"
# Tag-style URIs: stable identifiers of the problem kinds, not pages to fetch.
TYPE_PREFIX = "urn:hardlabel:problem:"
_PYDANTIC_VALUE_ERROR_PREFIX = "Value error, "
REQUEST_LOCATIONS = ("body", "query", "path", "header", "cookie")
# pydantic puts the tag of a discriminated union into error locations; tags made with union_tag()
# are dropped, so a field path names only keys the client wrote.
UNION_TAG_MARK = "§"


def union_tag(name: str) -> str:
    """A discriminated-union tag that error locations leave out."""
    return UNION_TAG_MARK + name


class ProblemResponse(JSONResponse):
    media_type = PROBLEM_MEDIA_TYPE


class Problem(BaseModel):
    """RFC 9457 problem details (more members may follow, e.g. `template`, `line`, `job_id`)."""

    model_config = ConfigDict(extra="allow")

    type: str = Field(description="A URI naming the kind of problem, e.g. `urn:hardlabel:problem:not-found`.")
    title: str
    status: int
    detail: str
    instance: str = Field(description="The request path.")


class FieldErrorOut(BaseModel):
    model_config = ConfigDict(extra="allow")

    loc: list[str | int] = Field(
        description='Where, as FastAPI writes it, e.g. ["body", "teacher", "model"].'
    )
    field: str = Field(description='The same as a path, e.g. "teacher.model" or "spec.stages[0].name".')
    msg: str


class ValidationProblemOut(Problem):
    errors: list[FieldErrorOut]


PROBLEM_DESCRIPTIONS = {
    401: "Missing, unknown or revoked token.",
    403: "The token's role is not enough.",
    404: "No such resource.",
    409: "Conflicts with the resource's state.",
    413: "Request body too large.",
    422: "Invalid request: `errors` names each field.",
    503: "The database is unreachable; retry shortly.",
}
# Starlette's own HTTP errors (unknown route, wrong method, unreadable body, body too large) get
# the app's problem types too, not `about:blank`.
HTTP_SLUGS = {
    400: "bad-request",
    401: "unauthorized",
    403: "forbidden",
    404: "not-found",
    405: "method-not-allowed",
    409: "conflict",
    413: "payload-too-large",
    415: "unsupported-media-type",
    422: "validation-error",
    503: "service-unavailable",
}
# Seconds a client should wait before retrying while the database is away.
DATABASE_RETRY_AFTER_SECONDS = 2


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` entries for these error statuses (documented as problem+json)."""
    return {
        status: {
            "model": ValidationProblemOut if status == 422 else Problem,
            "description": PROBLEM_DESCRIPTIONS.get(status, HTTPStatus(status).phrase),
        }
        for status in statuses
    }


def field_path(loc: Sequence[str | int]) -> str:
    """`("body", "a", "b", 0, "c")` → `"a.b[0].c"` (the request part is left out)."""
    parts = list(loc)
    if parts and parts[0] in REQUEST_LOCATIONS:
        parts = parts[1:]
    path = ""
    for part in parts:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else str(part)
    return path


def field_error(loc: Sequence[str | int], msg: str, **extra: Any) -> dict[str, Any]:
    """One entry of a 422 problem's `errors` list."""
    loc = [part for part in loc if not (isinstance(part, str) and part.startswith(UNION_TAG_MARK))]
    return {"loc": loc, "field": field_path(loc), "msg": msg, **extra}


class ProblemError(Exception):
    """An error the API reports as a problem. Subclasses set the status and a default title."""

    status: int = 500
    slug: str = "internal-error"
    title: str = "Internal Server Error"

    def __init__(
        self,
        detail: str,
        *,
        title: str | None = None,
        slug: str | None = None,
        errors: list[dict[str, Any]] | None = None,
        headers: Mapping[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        if title is not None:
            self.title = title
        if slug is not None:
            self.slug = slug
        self.errors = errors
        self.headers = dict(headers or {})
        self.extra = extra


class BadRequestError(ProblemError):
    status, slug, title = 400, "bad-request", "Bad Request"


class UnauthorizedError(ProblemError):
    status, slug, title = 401, "unauthorized", "Unauthorized"


class ForbiddenError(ProblemError):
    status, slug, title = 403, "forbidden", "Forbidden"


class NotFoundError(ProblemError):
    status, slug, title = 404, "not-found", "Not Found"


class ConflictError(ProblemError):
    status, slug, title = 409, "conflict", "Conflict"


class PayloadTooLargeError(ProblemError):
    status, slug, title = 413, "payload-too-large", "Payload Too Large"


class ValidationProblem(ProblemError):
    """422 with the offending field paths in `errors`."""

    status, slug, title = 422, "validation-error", "Validation Error"

    @classmethod
    def at(cls, loc: Sequence[str | int], msg: str, **extra: Any) -> ValidationProblem:
        """A validation problem about one field (`loc` as FastAPI writes it, e.g. `("query", "limit")`)."""
        return cls(f"{field_path(loc) or 'request'}: {msg}", errors=[field_error(loc, msg, **extra)])


class ServiceUnavailableError(ProblemError):
    status, slug, title = 503, "service-unavailable", "Service Unavailable"


def problem_response(
    request: Request,
    status: int,
    *,
    title: str | None = None,
    detail: str | None = None,
    slug: str | None = None,
    errors: list[dict[str, Any]] | None = None,
    headers: Mapping[str, str] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> ProblemResponse:
    body: dict[str, Any] = {
        "type": f"{TYPE_PREFIX}{slug}" if slug else "about:blank",
        "title": title or HTTPStatus(status).phrase,
        "status": status,
        "detail": detail or HTTPStatus(status).description,
        "instance": request.url.path,
    }
    if errors is not None:
        body["errors"] = errors
    if extra:
        body.update({k: v for k, v in extra.items() if k not in body})
    return ProblemResponse(body, status_code=status, headers=dict(headers or {}))


def _validation_errors(exc: RequestValidationError) -> list[dict[str, Any]]:
    out = []
    for error in exc.errors():
        loc = [part if isinstance(part, int) else str(part) for part in error.get("loc", ())]
        msg = str(error.get("msg", "invalid value"))
        # A validator's own words, without the "Value error, " pydantic puts before them.
        msg = msg.removeprefix(_PYDANTIC_VALUE_ERROR_PREFIX) if error.get("type") == "value_error" else msg
        out.append(field_error(loc, msg, type=str(error.get("type", "value_error"))))
    return out


async def _handle_problem(request: Request, exc: Exception) -> ProblemResponse:
    assert isinstance(exc, ProblemError)
    return problem_response(
        request,
        exc.status,
        title=exc.title,
        detail=exc.detail,
        slug=exc.slug,
        errors=exc.errors,
        headers=exc.headers,
        extra=exc.extra,
    )


async def _handle_validation(request: Request, exc: Exception) -> ProblemResponse:
    assert isinstance(exc, RequestValidationError)
    errors = _validation_errors(exc)
    first = errors[0] if errors else None
    detail = f"{first['field'] or 'request'}: {first['msg']}" if first else "invalid request"
    if len(errors) > 1:
        detail += f" (and {len(errors) - 1} more)"
    return problem_response(
        request, 422, title="Validation Error", detail=detail, slug="validation-error", errors=errors
    )


def _allowed_methods(request: Request) -> list[str]:
    """Every method some route serves at this path (Starlette's 405 names only the first route's)."""
    methods: set[str] = set()
    for route in request.app.router.routes:
        match, _ = route.matches({**request.scope, "method": "GET"})
        route_methods = getattr(route, "methods", None)
        if match != Match.NONE and route_methods:
            methods |= set(route_methods)
    return sorted(methods)


async def _handle_http(request: Request, exc: Exception) -> ProblemResponse:
    assert isinstance(exc, StarletteHTTPException)
    unreadable = exc.__cause__ or exc.__context__
    if exc.status_code == 400 and isinstance(unreadable, ValueError | MultiPartException):
        # FastAPI's "There was an error parsing the body" (bytes that are not UTF-8 JSON) and
        # Starlette's "Invalid multipart data": the body is a field like any other.
        if isinstance(unreadable, MultiPartException):
            reason = f"the body is not valid multipart form data: {unreadable.message}"
        else:
            reason = f"the body is not UTF-8 JSON: {unreadable}"
        return problem_response(
            request,
            422,
            title="Validation Error",
            detail=f"body: {reason}",
            slug="validation-error",
            errors=[field_error(["body"], reason, type="body_unreadable")],
        )
    detail = exc.detail if isinstance(exc.detail, str) else None
    headers = dict(exc.headers or {})
    if exc.status_code == 405:
        headers["Allow"] = ", ".join(_allowed_methods(request)) or headers.get("Allow", "")
    return problem_response(
        request, exc.status_code, detail=detail, slug=HTTP_SLUGS.get(exc.status_code), headers=headers
    )


def _database_unavailable(request: Request, exc: Exception) -> ProblemResponse:
    logger.warning("database unavailable during %s %s: %s", request.method, request.url.path, exc)
    return problem_response(
        request,
        503,
        slug="database-unavailable",
        detail="The database is unreachable; retry shortly.",
        headers={"Retry-After": str(DATABASE_RETRY_AFTER_SECONDS)},
    )


async def _handle_database(request: Request, exc: Exception) -> ProblemResponse:
    assert isinstance(exc, DBAPIError)
    if isinstance(exc, DataError):
        # A value the database cannot store (NUL in text, out-of-range number): the client's input.
        # Request validation should have named the field; this is the backstop.
        reason = (str(exc.orig).strip().splitlines() or ["invalid value"])[0]
        logger.warning("database refused a value in %s %s: %s", request.method, request.url.path, reason)
        msg = f"invalid value: {reason}"
        return problem_response(
            request,
            422,
            title="Validation Error",
            slug="validation-error",
            detail=msg,
            errors=[field_error(["request"], msg, type="database_refused")],
        )
    # One rule for every route, token authentication included: a database that cannot be reached
    # (refused connection, killed connection, server shutting down) is a 503, never a 500.
    if exc.connection_invalidated or isinstance(exc, OperationalError | InterfaceError):
        return _database_unavailable(request, exc)
    return await _handle_unexpected(request, exc)


async def _handle_pool_timeout(request: Request, exc: Exception) -> ProblemResponse:
    return _database_unavailable(request, exc)


async def _handle_unexpected(request: Request, exc: Exception) -> ProblemResponse:
    logger.error("unhandled error in %s %s", request.method, request.url.path, exc_info=exc)
    return problem_response(
        request,
        500,
        slug="internal-error",
        detail="An unexpected error occurred; it has been logged on the server.",
    )


def install_problem_handlers(app: FastAPI) -> None:
    """Route every error of `app` through the problem+json handlers above."""
    app.add_exception_handler(ProblemError, _handle_problem)
    app.add_exception_handler(RequestValidationError, _handle_validation)
    app.add_exception_handler(StarletteHTTPException, _handle_http)
    app.add_exception_handler(DBAPIError, _handle_database)
    app.add_exception_handler(PoolTimeoutError, _handle_pool_timeout)
    app.add_exception_handler(Exception, _handle_unexpected)


def document_problems(schema: dict[str, Any]) -> dict[str, Any]:
    """Make an OpenAPI document tell the truth about errors (in place; idempotent).

    Every 4xx/5xx response is `application/problem+json` with the Problem schema (the validation
    variant for 422, replacing FastAPI's `HTTPValidationError`); every operation documents 422,
    every operation that needs a token 401, 403 and 503, and every one on a path with a parameter 404.
    """
    from pydantic.json_schema import models_json_schema

    ref = "#/components/schemas/{model}"
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    _, definitions = models_json_schema(
        [(Problem, "serialization"), (ValidationProblemOut, "serialization")], ref_template=ref
    )
    components.update(definitions.get("$defs", {}))
    for unused in ("HTTPValidationError", "ValidationError"):
        components.pop(unused, None)
    for path, path_item in schema.get("paths", {}).items():
        for operation in path_item.values():
            responses = operation.setdefault("responses", {})
            if operation.get("security"):  # checking a token reads the database
                for status in (401, 403, 503):
                    responses.setdefault(str(status), {"description": PROBLEM_DESCRIPTIONS[status]})
            if "{" in path:  # an id in the path may name nothing
                responses.setdefault("404", {"description": PROBLEM_DESCRIPTIONS[404]})
            # Any string a request brings may be refused (service.dependencies.storable_request_text).
            responses.setdefault("422", {"description": PROBLEM_DESCRIPTIONS[422]})
            for code, response in responses.items():
                if not (code.isdigit() and int(code) >= 400):
                    continue
                response.pop("model", None)
                name = ValidationProblemOut.__name__ if code == "422" else Problem.__name__
                response["content"] = {PROBLEM_MEDIA_TYPE: {"schema": {"$ref": ref.format(model=name)}}}
                if code == "422" and response.get("description") == "Validation Error":
                    response["description"] = PROBLEM_DESCRIPTIONS[422]
                response.setdefault("description", HTTPStatus(int(code)).phrase)
    return schema
