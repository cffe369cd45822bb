"""Aggregate payloads for charts and confirmations (plain values, no ORM import here)."""

from __future__ import annotations

from pydantic import BaseModel, Field


class Bucket(BaseModel):
    """A histogram bar: rows with `lo <= value < hi`."""

    lo: float
    hi: float
    count: int


class PassFail(BaseModel):
    passed: int = 0
    failed: int = 0


class ReviewTally(BaseModel):
    pending: int = 0
    accepted: int = 0
    rejected: int = 0


class SampleStats(BaseModel):
    """Aggregates over the samples a query matches, exact up to `exact_limit` rows and estimated
    from a block sample of the table above that (every count is then scaled to the estimate)."""

    matched: int = Field(description="Samples the query matches (an estimate when `estimated`).")
    estimated: bool = Field(description="True when computed from a sample of the table, not every row.")
    rows_examined: int = Field(description="Matching rows the aggregates were computed from.")
    exact_limit: int = Field(description="Selections up to this size are aggregated exactly.")
    stages: dict[str, int] = Field(description="Matching samples per recipe stage.")
    review: ReviewTally
    filters: dict[str, PassFail] = Field(description="Per filter name: matching samples it passed / failed.")
    answer_chars: list[Bucket] = Field(description="Histogram of the current answer's length in characters.")
    scores: list[Bucket] = Field(description="Histogram of judge scores (scored samples only).")
    scored: int = Field(description="Matching samples that carry a judge score.")


class SampleCount(BaseModel):
    """How many samples a query matches: exact unless counting took too long."""

    count: int
    exact: bool = Field(description="False when the count is the planner's estimate (counting timed out).")


class DatasetPreview(BaseModel):
    """What `POST /v1/datasets` would freeze for the same body, before anything is stored."""

    stage: str = Field(description="The stage the version would take rows from (resolved).")
    rows: int = Field(description="Teacher rows (ground truth not included).")
    train: int
    test: int
    by_job: dict[str, int] = Field(description="Teacher rows per job id.")
    exact: bool = Field(
        description="False when counting took too long and the rows are the planner's estimate."
    )
