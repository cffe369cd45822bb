"""Per-request dependencies: settings, the database session, and the caller's principal.

One session per request, committed when the route returns and before the response is sent
(`scope="function"`), so a failed commit is a problem response, never a 2xx for lost work.
Services only flush.
"""

from __future__ import annotations

import itertools
import logging
import re
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from service.auth import Principal, authenticate, needs_last_used_update, require, touch_token
from service.errors import ValidationProblem, field_error
from service.pagination import PageParams, page_params, settings_of
from service.settings import Settings
from service.stored_text import storable_text_problem

logger = logging.getLogger(__name__)

bearer_scheme = HTTPBearer(
    auto_error=False,
    bearerFormat="hl_…",
    description="An API token from `hardlabel token create --role admin|reviewer|viewer`.",
)


def _session_factory(request: Request) -> sessionmaker[Session]:
    factory = request.app.state.session_factory
    assert isinstance(factory, sessionmaker)
    return factory


def get_session(request: Request) -> Iterator[Session]:
    """A session that commits when the route returns and rolls back when it raises."""
    with _session_factory(request)() as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise


# A request with more unstorable strings than this gets the first ones reported.
MAX_REPORTED_TEXT_ERRORS = 20
JSON_MEDIA_TYPE = re.compile(r"^application/(?:[\w.+-]+\+)?json\b", re.IGNORECASE)


def _unstorable_strings(root: Any, loc: tuple[str | int, ...]) -> Iterator[tuple[tuple[str | int, ...], str]]:
    """(location, problem) of every string in a JSON value that is not storable text, keys included."""
    pending: list[tuple[tuple[str | int, ...], Any]] = [(loc, root)]
    while pending:  # iterative: a deeply nested body must not exhaust the stack
        where, value = pending.pop()
        if isinstance(value, str):
            problem = storable_text_problem(value)
            if problem is not None:
                yield where, problem
        elif isinstance(value, dict):
            for key, item in reversed(value.items()):
                problem = storable_text_problem(key)
                if problem is not None:
                    yield (*where, key), f"the key {problem}"
                pending.append(((*where, key), item))
        elif isinstance(value, list):
            pending.extend(((*where, index), item) for index, item in reversed(list(enumerate(value))))


def _first_unstorable(root: Any, loc: tuple[str | int, ...]) -> list[tuple[tuple[str | int, ...], str]]:
    return list(itertools.islice(_unstorable_strings(root, loc), MAX_REPORTED_TEXT_ERRORS))


async def storable_request_text(request: Request) -> None:
    """One rule for every text field: strings in the query, path or JSON body must be storable.

    A NUL or a lone surrogate anywhere is a 422 naming the field, whatever the route or schema
    (otherwise Postgres or the UTF-8 encoder refuses it later: a 500, or a 422 without a field).
    """
    parameters = [("query", name, value) for name, value in request.query_params.multi_items()]
    parameters += [("path", name, value) for name, value in request.path_params.items()]
    found = [hit for part, name, value in parameters for hit in _first_unstorable(value, (part, name))]
    content_type = request.headers.get("content-type", "")
    if request.method in ("POST", "PUT", "PATCH") and JSON_MEDIA_TYPE.match(content_type):
        try:
            body = await request.json()  # already read and parsed by FastAPI: cached
        except ValueError:
            body = None  # not JSON: FastAPI reports it
        found += await run_in_threadpool(_first_unstorable, body, ("body",))  # bodies may be big
    if found:
        errors = [field_error(list(loc), msg, type="string_not_storable") for loc, msg in found]
        errors = errors[:MAX_REPORTED_TEXT_ERRORS]
        first = errors[0]
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise ValidationProblem(f"{first['field'] or 'request'}: {first['msg']}{more}", errors=errors)


SettingsDep = Annotated[Settings, Depends(settings_of)]
SessionDep = Annotated[Session, Depends(get_session, scope="function")]
PageDep = Annotated[PageParams, Depends(page_params)]


def get_principal(
    request: Request,
    session: SessionDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
) -> Principal:
    """The caller, from `Authorization: Bearer <token>` (401 when missing, unknown or revoked)."""
    header = f"{credentials.scheme} {credentials.credentials}" if credentials else None
    if header is None and request.headers.get("authorization"):
        header = request.headers["authorization"]  # not Bearer: let authenticate() say why
    principal = authenticate(session, header)
    if needs_last_used_update(principal.last_used_at, datetime.now(UTC)):
        _record_use(request, principal.token_id)
    return principal


def _record_use(request: Request, token_id: int) -> None:
    # Its own short transaction: the request's transaction may run long (or roll back), and
    # holding the token row's lock for that long would serialize every request of the token.
    try:
        with _session_factory(request)() as session, session.begin():
            touch_token(session, token_id)
    except SQLAlchemyError as exc:
        logger.warning("could not record use of token %s: %s", token_id, exc)


def role(minimum: str) -> Callable[[Principal], Principal]:
    """A dependency that admits principals with at least the `minimum` role (403 otherwise)."""

    def dependency(principal: Annotated[Principal, Depends(get_principal)]) -> Principal:
        require(principal, minimum)
        return principal

    dependency.__name__ = f"require_{minimum}"
    return dependency


Viewer = Annotated[Principal, Depends(role("viewer"))]
Reviewer = Annotated[Principal, Depends(role("reviewer"))]
Admin = Annotated[Principal, Depends(role("admin"))]
