"""Filter-run payloads. Read from ORM rows with from_attributes (no ORM import here)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, computed_field, field_validator

from service.filters.specs import FilterSpec
from service.samples.selection import SampleSelection
from service.statuses import FINISHED_STATUSES, StatusName
from service.stored_text import storable_anywhere

FilterRunStatus = StatusName


def redacted_filter_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """A stored filter spec as shown to users: a judge teacher's api_key replaced by ***."""
    teacher = ((spec.get("params") or {}).get("judge") or {}).get("teacher") or {}
    if not teacher.get("api_key"):
        return spec
    judge = {**spec["params"]["judge"], "teacher": {**teacher, "api_key": "***"}}
    return {**spec, "params": {**spec["params"], "judge": judge}}


class FilterRunCreate(BaseModel):
    """Apply filters to a selection of samples; each filter stores one verdict per sample."""

    model_config = ConfigDict(extra="forbid")

    selection: SampleSelection
    filters: list[FilterSpec] = Field(min_length=1, max_length=32)

    @field_validator("filters", mode="before")
    @classmethod
    def _storable(cls, filters: Any) -> Any:
        return storable_anywhere(filters)  # specs are stored as JSONB

    @field_validator("filters")
    @classmethod
    def _unique_names(cls, filters: list[FilterSpec]) -> list[FilterSpec]:
        seen: set[str] = set()
        for spec in filters:
            if spec.verdict_name in seen:
                raise ValueError(
                    f"two filters store verdicts as {spec.verdict_name!r}: give one of them another `name`"
                )
            seen.add(spec.verdict_name)
        return filters


class FilterCounts(BaseModel):
    passed: int = 0
    failed: int = 0


class FilterRunProgress(BaseModel):
    items_done: int = Field(description="Sample evaluations done (selection size × passes in all).")
    items_total: int
    fraction: float
    elapsed_seconds: float | None
    items_per_second: float | None
    eta_seconds: float | None


class FilterRunOut(BaseModel):
    """A filter run: what it applies to what, where it stands, and its per-filter counts."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    status: FilterRunStatus
    spec: dict[str, Any] = Field(
        exclude=True, description="Stored spec: selection (resolved), filters, selection_size, passes."
    )
    counts: dict[str, FilterCounts] = Field(description="Per filter name: samples passed and failed so far.")
    items_done: int = Field(exclude=True)
    items_total: int = Field(exclude=True)
    error: str | None
    created_by: int | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None

    @computed_field  # type: ignore[prop-decorator]
    @property
    def selection(self) -> dict[str, Any]:
        """job_ids, stage (resolved), include_parse_failed, max_sample_id (the frozen bound)."""
        value = self.spec.get("selection", {})
        assert isinstance(value, dict)
        return value

    @computed_field  # type: ignore[prop-decorator]
    @property
    def filters(self) -> list[dict[str, Any]]:
        """The filter specs as submitted (a judge pass's teacher api_key redacted)."""
        value = self.spec.get("filters", [])
        assert isinstance(value, list)
        return [redacted_filter_spec(spec) for spec in value]

    @computed_field  # type: ignore[prop-decorator]
    @property
    def selection_size(self) -> int:
        """Samples in the selection when the run was submitted."""
        return int(self.spec.get("selection_size", 0))

    @computed_field  # type: ignore[prop-decorator]
    @property
    def progress(self) -> FilterRunProgress:
        now = datetime.now(UTC)
        total, done = self.items_total, self.items_done
        fraction = min(done / total, 1.0) if total else (1.0 if self.status == "succeeded" else 0.0)
        elapsed = (
            max(((self.finished_at or now) - self.started_at).total_seconds(), 0.0)
            if self.started_at
            else None
        )
        rate = done / elapsed if elapsed and done else None
        if self.status in FINISHED_STATUSES:
            eta: float | None = 0.0
        else:
            eta = max(total - done, 0) / rate if rate else None
        return FilterRunProgress(
            items_done=done,
            items_total=total,
            fraction=fraction,
            elapsed_seconds=elapsed,
            items_per_second=rate,
            eta_seconds=eta,
        )
