"""Who tokens are, for a client (the review UI) to show: `GET /v1/me` (the caller, so the UI can show
what its role allows) and `GET /v1/token-names` (every token's name, so a reviewer or editor stored
as a token id reads as a name)."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel, Field

from service.auth import list_tokens
from service.dependencies import PageDep, SessionDep, Viewer
from service.pagination import Page

router = APIRouter(tags=["auth"])


class Me(BaseModel):
    token_id: int
    name: str
    role: str = Field(description="admin, reviewer or viewer (admin ⊃ reviewer ⊃ viewer).")


class TokenName(BaseModel):
    token_id: int
    name: str = Field(description="The name given at `hardlabel token create` (never the secret).")


@router.get("/me", response_model=Me)
def who_am_i(principal: Viewer) -> Me:
    """The calling token's id, name and role."""
    return Me(token_id=principal.token_id, name=principal.name, role=principal.role)


@router.get("/token-names", response_model=Page[TokenName])
def token_names(_: Viewer, session: SessionDep, page: PageDep) -> Page[TokenName]:
    """Every token's id and name, oldest first (revoked ones too: their reviews and edits stay)."""
    # A handful of tokens per deployment: paging the full list here costs nothing.
    tokens = list_tokens(session)
    return Page[TokenName](
        items=[TokenName(token_id=t.id, name=t.name) for t in tokens[page.offset : page.offset + page.limit]],
        total=len(tokens),
        limit=page.limit,
        offset=page.offset,
    )
