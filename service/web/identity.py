"""`GET /v1/me`: who the bearer token is, so a client (the review UI) can show what its role allows."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel, Field

from service.dependencies import Viewer

router = APIRouter(tags=["auth"])


class Me(BaseModel):
    token_id: int
    name: str
    role: str = Field(description="admin, reviewer or viewer (admin ⊃ reviewer ⊃ viewer).")


@router.get("/me", response_model=Me)
def who_am_i(principal: Viewer) -> Me:
    """The calling token's id, name and role."""
    return Me(token_id=principal.token_id, name=principal.name, role=principal.role)
