"""API tokens: issuing, hashing, checking, revoking, and the role order admin ⊃ reviewer ⊃ viewer.

A token is `hl_` + 32 random bytes (URL-safe base64). Only its SHA-256 is stored, with a short
prefix so people can tell tokens apart in `hardlabel token list`; the secret is shown once.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from service.db.models import ROLES, ApiToken
from service.errors import ForbiddenError, NotFoundError, UnauthorizedError

TOKEN_PREFIX = "hl_"
DISPLAY_PREFIX_CHARS = 10
# last_used_at is a hint for people, not an audit log: write it at most this often per token.
LAST_USED_RESOLUTION = timedelta(seconds=60)
ROLE_RANK = {"viewer": 0, "reviewer": 1, "admin": 2}
assert set(ROLE_RANK) == set(ROLES)


@dataclass(frozen=True)
class Principal:
    """Who is calling: the token's id, name and role."""

    token_id: int
    name: str
    role: str
    last_used_at: datetime | None = None

    def has_role(self, role: str) -> bool:
        return ROLE_RANK[self.role] >= ROLE_RANK[role]


def hash_token(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def new_secret() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def issue_token(session: Session, *, role: str, name: str) -> tuple[ApiToken, str]:
    """Add a token (flushed) and return it with its secret, which is not stored anywhere."""
    if role not in ROLE_RANK:
        raise ValueError(f"unknown role {role!r} (expected one of {', '.join(ROLES)})")
    secret = new_secret()
    token = ApiToken(
        name=name, role=role, token_hash=hash_token(secret), prefix=secret[:DISPLAY_PREFIX_CHARS]
    )
    session.add(token)
    session.flush()
    return token, secret


def list_tokens(session: Session, *, include_revoked: bool = True) -> list[ApiToken]:
    query = select(ApiToken).order_by(ApiToken.id)
    if not include_revoked:
        query = query.where(ApiToken.revoked_at.is_(None))
    return list(session.scalars(query))


def count_tokens(session: Session) -> int:
    return session.scalar(select(func.count()).select_from(ApiToken)) or 0


def revoke_token(session: Session, token_id: int) -> ApiToken:
    """Mark a token revoked (idempotent: revoking twice keeps the first time)."""
    token = session.get(ApiToken, token_id)
    if token is None:
        raise NotFoundError(f"token {token_id} does not exist")
    if token.revoked_at is None:
        token.revoked_at = datetime.now(UTC)
        session.flush()
    return token


def authenticate(session: Session, authorization: str | None) -> Principal:
    """The principal of an `Authorization: Bearer <token>` header, or 401."""
    challenge = {"WWW-Authenticate": "Bearer"}
    if not authorization:
        raise UnauthorizedError(
            "This route needs an `Authorization: Bearer <token>` header.", headers=challenge
        )
    scheme, _, secret = authorization.partition(" ")
    secret = secret.strip()
    if scheme.lower() != "bearer" or not secret:
        raise UnauthorizedError("The Authorization header must be `Bearer <token>`.", headers=challenge)
    invalid = {"WWW-Authenticate": 'Bearer error="invalid_token"'}
    token = session.scalar(select(ApiToken).where(ApiToken.token_hash == hash_token(secret)))
    if token is None:
        raise UnauthorizedError("The token is not valid.", headers=invalid)
    if token.revoked_at is not None:
        raise UnauthorizedError("The token has been revoked.", headers=invalid)
    return Principal(token_id=token.id, name=token.name, role=token.role, last_used_at=token.last_used_at)


def needs_last_used_update(last_used_at: datetime | None, now: datetime) -> bool:
    return last_used_at is None or now - last_used_at >= LAST_USED_RESOLUTION


def touch_token(session: Session, token_id: int) -> None:
    """Set last_used_at unless it was set within the resolution (a no-op row filter, no lock wait)."""
    session.execute(
        update(ApiToken)
        .where(
            ApiToken.id == token_id,
            (ApiToken.last_used_at.is_(None)) | (ApiToken.last_used_at < func.now() - LAST_USED_RESOLUTION),
        )
        .values(last_used_at=func.now())
    )


def require(principal: Principal, role: str) -> None:
    if not principal.has_role(role):
        raise ForbiddenError(f"This action needs the {role!r} role; the token has {principal.role!r}.")
