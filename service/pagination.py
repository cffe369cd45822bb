"""Paging: limit/offset envelopes for small lists, opaque keyset cursors for samples.

The page size bound comes from settings at request time, so an oversized `limit` is reported as a
422 on `query.limit` by hand rather than by a static `Query(le=...)`.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Annotated, Any, Generic, TypeVar

from fastapi import Query, Request
from pydantic import BaseModel, Field

from service.errors import ValidationProblem
from service.limits import BIGINT_MAX
from service.settings import Settings

T = TypeVar("T")


class Page(BaseModel, Generic[T]):
    """A limit/offset page: `total` rows match, `items` are rows offset..offset+limit."""

    items: list[T]
    total: int = Field(description="Rows matching the filters, over all pages.")
    limit: int
    offset: int


class CursorPage(BaseModel, Generic[T]):
    """A keyset page: pass `next_cursor` as `cursor` for the next one; null at the end."""

    items: list[T]
    limit: int
    next_cursor: str | None = Field(description="Opaque; null when this is the last page.")


@dataclass(frozen=True)
class PageParams:
    limit: int
    offset: int


def settings_of(request: Request) -> Settings:
    settings = request.app.state.settings
    assert isinstance(settings, Settings)
    return settings


def resolve_limit(settings: Settings, limit: int | None) -> int:
    if limit is None:
        return min(settings.default_page_size, settings.max_page_size)
    if limit > settings.max_page_size:
        raise ValidationProblem.at(
            ("query", "limit"), f"must be at most {settings.max_page_size} (the largest page size)"
        )
    return limit


def page_params(
    request: Request,
    limit: Annotated[
        int | None, Query(ge=1, description="Page size (at most the server's max_page_size).")
    ] = None,
    offset: Annotated[int, Query(ge=0, le=BIGINT_MAX, description="Rows to skip.")] = 0,
) -> PageParams:
    """FastAPI dependency: a bounded limit and an offset."""
    return PageParams(limit=resolve_limit(settings_of(request), limit), offset=offset)


def document_page_size(schema: dict[str, Any], max_page_size: int) -> dict[str, Any]:
    """State this server's page-size bound as the `maximum` of every `limit` query parameter.

    The bound is a setting, so no static `Query(le=...)` can carry it; the document is made per app.
    """
    for path_item in schema.get("paths", {}).values():
        for operation in path_item.values():
            for parameter in operation.get("parameters", []):
                if parameter.get("name") != "limit" or parameter.get("in") != "query":
                    continue
                parameter_schema = parameter.get("schema", {})
                for branch in parameter_schema.get("anyOf", [parameter_schema]):
                    if branch.get("type") == "integer":
                        branch["maximum"] = max_page_size
    return schema


def encode_cursor(last_id: int) -> str:
    raw = json.dumps({"after": last_id}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    """The id a keyset page continues after; a 422 on `query.cursor` when it is not ours."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        data = json.loads(base64.urlsafe_b64decode(padded.encode("ascii")))
        after = data["after"]
        if not isinstance(after, int) or isinstance(after, bool) or after < 0:
            raise TypeError(after)
    except (ValueError, TypeError, KeyError, binascii.Error, UnicodeError) as exc:
        raise ValidationProblem.at(("query", "cursor"), "not a cursor returned by this API") from exc
    return after
