"""Dataset-version payloads. Read from ORM rows with from_attributes (no ORM import here)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from service.limits import BIGINT_MAX, INT_MAX
from service.reviews.schemas import Tag
from service.statuses import StatusName
from service.stored_text import StoredText

DATASET_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$"
ReviewStatus = Literal["pending", "accepted", "rejected"]
# Accepted samples, plus pending ones that some filter judged and none failed.
ACCEPTED_OR_UNREVIEWED_PASSED_ALL: Literal["accepted_or_unreviewed_passed_all"] = (
    "accepted_or_unreviewed_passed_all"
)


class DatasetQuery(BaseModel):
    """Which samples become rows (AND of everything given). Rows are taken in sample-id order."""

    model_config = ConfigDict(extra="forbid")

    job_ids: list[int] = Field(min_length=1, max_length=1000)
    stage: StoredText | None = Field(
        default=None, min_length=1, max_length=100, description="Default: the jobs' answer stage."
    )
    require_passed: list[Annotated[StoredText, Field(min_length=1, max_length=100)]] = Field(
        default_factory=list, max_length=32, description="Filter names every row must have passed."
    )
    # The default fits "filter everything, review the exceptions": a filter run alone is enough to
    # freeze a version, and rejected samples never get in. ["accepted"] asks for reviewed rows only.
    review_status: list[ReviewStatus] | Literal["accepted_or_unreviewed_passed_all"] = Field(
        default=ACCEPTED_OR_UNREVIEWED_PASSED_ALL,
        description='Review statuses to include (e.g. ["accepted"] or ["accepted", "pending"]), or '
        '"accepted_or_unreviewed_passed_all" (the default): accepted samples plus pending ones that some '
        "filter judged and none failed; rejected samples never.",
    )
    tags: list[Tag] = Field(default_factory=list, max_length=20, description="Tags every row must carry.")
    exclude_tags: list[Tag] = Field(default_factory=list, max_length=20, description="Tags no row may carry.")
    limit: int | None = Field(
        default=None, ge=1, le=INT_MAX, description="At most this many samples (lowest ids)."
    )

    @field_validator("job_ids")
    @classmethod
    def _job_ids(cls, job_ids: list[int]) -> list[int]:
        for job_id in job_ids:
            if not 1 <= job_id <= BIGINT_MAX:
                raise ValueError(f"not a job id: {job_id}")
        return sorted(set(job_ids))

    @field_validator("review_status")
    @classmethod
    def _statuses(cls, value: list[str] | str) -> list[str] | str:
        if isinstance(value, list):
            if not value:
                raise ValueError("give at least one review status")
            return sorted(set(value))
        return value


class SplitSpec(BaseModel):
    """A deterministic train/test split.

    Items are split, not samples: each item's rank is its position when ordered by
    md5("<seed>:<job id>:<item index>"), and every sample of the round(test_fraction × items)
    lowest-ranked items is `test`, the rest `train`, so an item answered by several teachers (or
    n times) never sits on both sides. With `stratify_by_job` the ranking and the count are per
    job. The same seed and samples always give the same split; adding samples moves few others.
    """

    model_config = ConfigDict(extra="forbid")

    test_fraction: float = Field(ge=0, lt=1)
    seed: int = Field(default=0, ge=0, le=BIGINT_MAX)
    stratify_by_job: bool = False


class GroundTruthRecord(BaseModel):
    model_config = ConfigDict(extra="forbid")

    question: StoredText = Field(min_length=1)
    answer: StoredText = Field(min_length=1)
    system: StoredText | None = None


class GroundTruthSpec(BaseModel):
    """Ground-truth rows mixed into the train split beside the teacher's labels, so a student trains
    on a blend. Each row says where it came from (`source`: teacher | ground_truth).

    Where they come from, one of: `records` given inline (or a JSONL file uploaded as the multipart
    part `ground_truth`), or `from_seed_field`: the reference its seed data carries for each of the
    version's own items (`inputs[from_seed_field]`, dotted paths allowed), one row per (job, item
    index) with the item's question and the reference as the answer; an item with a row in the
    test split is never used, so no test question leaks into train.

    With `ratio` r, the train split gets n_gt = min(available, round(n_teacher_train × r / (1 − r)))
    ground-truth rows, so ground truth makes up r of the train rows (less when too few are
    available; the actual ratio is in the lineage and the card). Which ones: the first n_gt when
    ordered by sha256("<split seed>:<record index>") (records) or sha256("<split seed>:<job
    id>:<item index>") (seed references). Without `ratio`, every one available is used.
    """

    model_config = ConfigDict(extra="forbid")

    records: list[GroundTruthRecord] | None = Field(
        default=None, description="Inline records; or upload a JSONL file (multipart part `ground_truth`)."
    )
    from_seed_field: StoredText | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        description="Take ground truth from the version's own samples: the seed field (in each sample's "
        '`inputs`, e.g. "reference" or a dotted path "meta.answer") holding the reference answer to '
        "its question. Not with records or an upload.",
    )
    ratio: float | None = Field(
        default=None,
        gt=0,
        lt=1,
        description="The share of the train split that is ground truth; default: all that is available.",
    )


class DatasetCreate(BaseModel):
    """Freeze a new version of a named dataset from a query over curated samples."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=DATASET_NAME_PATTERN, description="Versions are numbered per name: 1, 2, …")
    query: DatasetQuery
    split: SplitSpec | None = None
    ground_truth: GroundTruthSpec | None = None
    system: StoredText | None = Field(
        default=None, max_length=100_000, description="System prompt stored with every teacher row."
    )


DatasetStatus = StatusName


class DatasetOut(BaseModel):
    """A dataset version: queued or running while its freeze task copies the rows, then succeeded
    (frozen: rows, counts, digest and lineage never change again) or failed (with the error)."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    version: int
    status: DatasetStatus = Field(description="Of the freeze: poll until succeeded or failed.")
    rows_done: int = Field(description="Rows copied so far (of rows_total).")
    rows_total: int | None = Field(
        description="Teacher rows to copy, known once the freeze has started; once frozen, every row "
        "(ground truth included)."
    )
    error: str | None = Field(description="Why the freeze failed.")
    query: dict[str, Any] = Field(description="The request that created it (stage resolved).")
    row_counts: dict[str, int] = Field(
        description="Rows per split and per source, and the total (empty until frozen)."
    )
    digest: str = Field(
        description="SHA-256 of the rows' content in row order (see the README); empty until frozen."
    )
    created_by: int | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


class DatasetDetail(DatasetOut):
    lineage: dict[str, Any] = Field(
        description="Jobs, recipes, teachers, filter runs (with specs), review counts, ground truth."
    )


ExportFormat = Literal["prompt_completion", "messages", "alpaca", "preference"]
ExportContainer = Literal["jsonl", "parquet", "hf"]
ExportSplit = Literal["train", "test", "all"]
