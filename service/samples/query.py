"""Which samples a request means: the filter model shared by listing (and later bulk review and
dataset creation), and its translation into SQL conditions.

Extend `SampleQuery` with a field and `sample_conditions` with its condition; every caller that
filters samples then understands it.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from sqlalchemy import ColumnElement, func

from service.db.models import Sample
from service.limits import BIGINT_MAX, INT_MAX
from service.samples.conditions import (
    failed_condition,
    passed_conditions,
    review_status_condition,
    reviewer_condition,
    score_conditions,
    tags_condition,
)
from service.stored_text import storable_text

# A job has at most 8 teachers (service.jobs.schemas.MAX_TEACHERS); the column is a smallint.
MAX_TEACHER_INDEX = 32767


class SampleQuery(BaseModel):
    """Filters over samples (all optional; given ones are combined with AND)."""

    model_config = ConfigDict(extra="ignore")

    job_id: int | None = Field(default=None, ge=1, le=BIGINT_MAX, description="Only samples of this job.")
    stage: str | None = Field(default=None, min_length=1, max_length=100, description="Recipe stage name.")
    teacher_index: int | None = Field(
        default=None, ge=0, le=MAX_TEACHER_INDEX, description="Only samples of this teacher of their job."
    )
    parse_status: Literal["ok", "failed"] | None = Field(
        default=None, description="Whether the stage's output parser accepted the teacher's text."
    )
    q: str | None = Field(
        default=None,
        min_length=1,
        max_length=500,
        description="Full-text search over the current question and answer "
        '(web-search syntax: words, "quoted phrases", -excluded, or).',
    )
    # Curation (service/filters, service/reviews). Lists accept `a,b` or repeated parameters.
    passed: list[str] | None = Field(
        default=None, description="Filter names the sample passed, all of them (e.g. `length,verifier`)."
    )
    failed: list[str] | None = Field(
        default=None, description="Filter names the sample failed, at least one of them (e.g. `near_dup`)."
    )
    score_min: float | None = Field(default=None, allow_inf_nan=False, description="Least judge score.")
    score_max: float | None = Field(default=None, allow_inf_nan=False, description="Largest judge score.")
    review_status: list[Literal["pending", "accepted", "rejected"]] | None = Field(
        default=None, description="Any of these review statuses (e.g. `accepted,pending`)."
    )
    tag: list[str] | None = Field(default=None, description="Tags the sample carries, all of them.")
    reviewer: int | None = Field(
        default=None, ge=1, le=INT_MAX, description="Id of the token that accepted or rejected it."
    )

    @field_validator("passed", "failed", "review_status", "tag", mode="before")
    @classmethod
    def _comma_lists(cls, value: Any) -> Any:
        items = [value] if isinstance(value, str) else value
        if isinstance(items, list) and all(isinstance(item, str) for item in items):
            split = [
                storable_text(part.strip()) for item in items for part in item.split(",") if part.strip()
            ]
            return split or None
        return value

    @field_validator("passed", "failed")
    @classmethod
    def _filter_names(cls, names: list[str] | None) -> list[str] | None:
        for name in names or []:
            if len(name) > 100:
                raise ValueError(f"filter name too long: {name[:20]}…")
        return names

    @model_validator(mode="after")
    def _score_range(self) -> SampleQuery:
        if self.score_min is not None and self.score_max is not None and self.score_min > self.score_max:
            raise ValueError(f"score_min ({self.score_min}) is larger than score_max ({self.score_max})")
        return self


def sample_conditions(query: SampleQuery) -> list[ColumnElement[bool]]:
    """SQL conditions (AND-ed by the caller) selecting the samples `query` describes."""
    conditions: list[ColumnElement[bool]] = []
    if query.job_id is not None:
        conditions.append(Sample.job_id == query.job_id)
    if query.stage is not None:
        conditions.append(Sample.stage == query.stage)
    if query.teacher_index is not None:
        conditions.append(Sample.teacher_index == query.teacher_index)
    if query.parse_status is not None:
        conditions.append(Sample.parse_status == query.parse_status)
    if query.q is not None:
        # 'simple': no stemming or stop words, so code, numbers and any language match literally.
        conditions.append(Sample.search.op("@@")(func.websearch_to_tsquery("simple", query.q)))
    if query.passed:
        conditions.extend(passed_conditions(query.passed))
    if query.failed:
        conditions.append(failed_condition(query.failed))
    conditions.extend(score_conditions(query.score_min, query.score_max))
    if query.review_status:
        conditions.append(review_status_condition(query.review_status))
    if query.tag:
        conditions.append(tags_condition(query.tag))
    if query.reviewer is not None:
        conditions.append(reviewer_condition(query.reviewer))
    return conditions
