"""Sample-listing conditions on review state: status, tags, reviewer."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import ColumnElement, String, cast
from sqlalchemy.dialects.postgresql import ARRAY

from service.db.models import Sample


def review_status_condition(statuses: Sequence[str]) -> ColumnElement[bool]:
    unique = list(dict.fromkeys(statuses))
    return Sample.review_status == unique[0] if len(unique) == 1 else Sample.review_status.in_(unique)


def tags_condition(tags: Sequence[str]) -> ColumnElement[bool]:
    """The sample carries every listed tag (array containment: served by the GIN index on tags)."""
    wanted = cast(list(dict.fromkeys(tags)), ARRAY(String(100)))
    return Sample.tags.op("@>", is_comparison=True)(wanted)


def reviewer_condition(token_id: int) -> ColumnElement[bool]:
    """The sample's last review (accept/reject) was made with this token."""
    return Sample.reviewed_by == token_id
