"""Per-request dependencies: settings, the database session, and the caller's principal.

One session per request, committed when the route returns and before the response is sent
(`scope="function"`), so a failed commit is a problem response, never a 2xx for lost work.
Services only flush.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from service.auth import Principal, authenticate, needs_last_used_update, require, touch_token
from service.pagination import PageParams, page_params, settings_of
from service.settings import Settings

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
