"""Sample payloads. Read from ORM rows with from_attributes (no ORM import here)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, computed_field

from service.samples.query import SampleQuery


class SampleListParams(SampleQuery):
    """Query parameters of `GET /v1/samples`: the filters plus keyset paging."""

    cursor: str | None = Field(default=None, description="`next_cursor` of the previous page.")
    limit: int | None = Field(
        default=None, ge=1, description="Page size (at most the server's max_page_size)."
    )


class SampleOut(BaseModel):
    """A teacher output. `question`/`answer` are the current text (a reviewer's edit, else the
    teacher's); `teacher_question`/`teacher_answer` are what the teacher wrote, never changed."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    job_id: int
    item_index: int = Field(description="Index of the seed item this sample descends from.")
    stage: str
    sample_index: int = Field(description="Position within (item_index, stage).")
    parent_sample_index: int | None = Field(description="The previous stage's sample this one continues.")
    teacher_index: int = Field(description="Which of the job's `teachers` wrote it (0: the first).")
    teacher_question: str = Field(validation_alias="question")
    teacher_answer: str | None = Field(validation_alias="answer")
    edited_question: str | None
    edited_answer: str | None
    raw_text: str = Field(description="The teacher's completion exactly as generated.")
    parsed: Any = Field(description="The parser's value (text, list item, JSON, judge score).")
    parse_status: str
    parse_error: str | None
    score: float | None = Field(description="A judge stage's score, when one ran.")
    review_status: str
    reviewed_by: int | None
    reviewed_at: datetime | None
    tags: list[str]
    note: str | None
    created_at: datetime

    @computed_field  # type: ignore[prop-decorator]
    @property
    def question(self) -> str:
        return self.edited_question if self.edited_question is not None else self.teacher_question

    @computed_field  # type: ignore[prop-decorator]
    @property
    def answer(self) -> str | None:
        return self.edited_answer if self.edited_answer is not None else self.teacher_answer


class VerdictOut(BaseModel):
    """A filter's verdict on a sample (the latest run of that filter name)."""

    model_config = ConfigDict(from_attributes=True)

    filter_name: str
    passed: bool
    score: float | None
    reason: str
    filter_run_id: int
    created_at: datetime


class RevisionOut(BaseModel):
    """One edit: the text before and after, who made it and when."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    field: Literal["question", "answer"]
    old_text: str | None
    new_text: str
    edited_by: int | None
    created_at: datetime


class SampleDetail(SampleOut):
    """A sample with the seed item's variables and full provenance."""

    inputs: dict[str, Any] = Field(description="Seed variables and earlier stages' outputs.")
    provenance: dict[str, Any] = Field(
        description="Teacher model/revision, stage, template hash, sampling params, seed, token counts, "
        "finish reason, latency."
    )
    verdicts: list[VerdictOut] = Field(
        default_factory=list, description="Filter verdicts with reasons (the latest run of each filter name)."
    )
    revisions: list[RevisionOut] = Field(
        default_factory=list, description="Review edits, oldest first; teacher_question/teacher_answer stay."
    )
