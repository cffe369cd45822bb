"""Which samples a filter run (or a dataset query) covers: jobs and one stage, frozen at submission.

The selection is frozen by recording the largest sample id at submission time: samples a
still-running job writes later are not part of the run, so its total and its resume positions stay
stable.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import ColumnElement, func

from service.db.models import Sample
from service.limits import BIGINT_MAX
from service.stored_text import StoredText

JobId = Annotated[int, Field(ge=1, le=BIGINT_MAX)]


class SampleSelection(BaseModel):
    """Samples of some jobs at one stage."""

    model_config = ConfigDict(extra="forbid")

    job_ids: list[JobId] = Field(
        min_length=1, max_length=1000, description="Jobs whose samples are selected."
    )
    stage: StoredText | None = Field(
        default=None,
        min_length=1,
        max_length=100,
        description="Recipe stage; default the jobs' answer stage (the last stage that is not a judge).",
    )
    include_parse_failed: bool = Field(
        default=False, description="Also select samples whose output parser failed (their answer is null)."
    )


class ResolvedSelection(BaseModel):
    """A selection as a run stores it: the stage resolved and the id bound fixed."""

    job_ids: list[int]
    stage: str
    include_parse_failed: bool
    max_sample_id: int


def current_question() -> ColumnElement[str]:
    return func.coalesce(Sample.edited_question, Sample.question)


def current_answer() -> ColumnElement[Any]:
    return func.coalesce(Sample.edited_answer, Sample.answer)


def selection_conditions(
    job_ids: Sequence[int], stage: str, *, include_parse_failed: bool, max_sample_id: int | None = None
) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = [
        Sample.job_id.in_(list(job_ids)) if len(job_ids) > 1 else Sample.job_id == job_ids[0],
        Sample.stage == stage,
    ]
    if not include_parse_failed:
        conditions.append(Sample.parse_status == "ok")
    if max_sample_id is not None:
        conditions.append(Sample.id <= max_sample_id)
    return conditions


def resolved_conditions(selection: ResolvedSelection) -> list[ColumnElement[bool]]:
    return selection_conditions(
        selection.job_ids,
        selection.stage,
        include_parse_failed=selection.include_parse_failed,
        max_sample_id=selection.max_sample_id,
    )
