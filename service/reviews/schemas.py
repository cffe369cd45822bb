"""Review payloads. Read from ORM rows with from_attributes (no ORM import here)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from service.samples.query import SampleQuery
from service.stored_text import StoredText

ReviewAction = Literal["accept", "reject", "reset"]
# Tags are listed comma-separated in query strings, so a tag holds no comma.
Tag = Annotated[
    StoredText, StringConstraints(min_length=1, max_length=100, pattern=r"^[^,\s](?:[^,]*[^,\s])?$")
]
MAX_TEXT_CHARS = 1_000_000


class SampleReviewPatch(BaseModel):
    """One reviewer action on a sample; every part is optional, at least one must be given."""

    model_config = ConfigDict(extra="forbid")

    action: ReviewAction | None = Field(
        default=None,
        description="accept / reject (recorded with the reviewer and time), reset (back to pending).",
    )
    question: StoredText | None = Field(
        default=None, min_length=1, max_length=MAX_TEXT_CHARS, description="New question text (a revision)."
    )
    answer: StoredText | None = Field(
        default=None, min_length=1, max_length=MAX_TEXT_CHARS, description="New answer text (a revision)."
    )
    restore: list[Literal["question", "answer"]] = Field(
        default_factory=list, description="Go back to the teacher's text of these fields (a revision each)."
    )
    tags_add: list[Tag] = Field(default_factory=list, max_length=50)
    tags_remove: list[Tag] = Field(default_factory=list, max_length=50)
    note: StoredText | None = Field(
        default=None, max_length=10_000, description='Free text; null or "" clears it.'
    )

    @model_validator(mode="after")
    def _something_to_do(self) -> SampleReviewPatch:
        if not self.model_fields_set - {"restore", "tags_add", "tags_remove"} and not (
            self.restore or self.tags_add or self.tags_remove
        ):
            raise ValueError("nothing to do: give an action, an edit, restore, tags or a note")
        for field in self.restore:
            if getattr(self, field) is not None:
                raise ValueError(f"{field}: cannot both edit and restore it")
        both = set(self.tags_add) & set(self.tags_remove)
        if both:
            raise ValueError(f"tags both added and removed: {', '.join(sorted(both))}")
        return self


class BulkReview(BaseModel):
    """Review every sample a query matches in one statement."""

    model_config = ConfigDict(extra="forbid")

    query: SampleQuery = Field(
        description="Which samples (the filters of GET /v1/samples); at least one filter."
    )
    action: ReviewAction | None = None
    tags_add: list[Tag] = Field(default_factory=list, max_length=50)
    tags_remove: list[Tag] = Field(default_factory=list, max_length=50)

    @model_validator(mode="before")
    @classmethod
    def _known_query_fields(cls, data: Any) -> Any:
        # SampleQuery ignores unknown keys (query strings carry paging too); here a typo would
        # silently widen a bulk update, so unknown keys are an error.
        query = data.get("query") if isinstance(data, dict) else None
        if isinstance(query, dict):
            unknown = sorted(set(query) - set(SampleQuery.model_fields))
            if unknown:
                raise ValueError(f"query: unknown filter(s) {', '.join(unknown)}")
            if not any(v not in (None, [], "") for v in query.values()):
                raise ValueError(
                    "query: give at least one filter (reviewing every sample at once is refused)"
                )
        return data

    @model_validator(mode="after")
    def _something_to_do(self) -> BulkReview:
        if self.action is None and not self.tags_add and not self.tags_remove:
            raise ValueError("nothing to do: give an action or tags")
        both = set(self.tags_add) & set(self.tags_remove)
        if both:
            raise ValueError(f"tags both added and removed: {', '.join(sorted(both))}")
        return self


class BulkReviewResult(BaseModel):
    matched: int = Field(description="Samples the query matched.")
    changed: int = Field(description="Samples whose review status or tags actually changed.")


class ReviewCounts(BaseModel):
    pending: int = 0
    accepted: int = 0
    rejected: int = 0
    total: int = 0


class FilterOutcome(BaseModel):
    passed: ReviewCounts
    failed: ReviewCounts


class ReviewSummary(BaseModel):
    """Review state of a job's samples at one stage, overall and by filter outcome."""

    job_id: int
    stage: str
    review: ReviewCounts
    filters: dict[str, FilterOutcome] = Field(
        description="Per filter name: review counts of passed / failed."
    )
    passed_all: ReviewCounts = Field(description="Samples some filter judged and none failed.")
    failed_any: ReviewCounts = Field(description="Samples at least one filter failed.")
    unfiltered: ReviewCounts = Field(description="Samples no filter has judged.")
