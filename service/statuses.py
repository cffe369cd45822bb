"""The statuses of queued work, in one place: tasks and what owns them (jobs, filter runs, training
runs, dataset freezes) move through the same five (service/queue/owners.py moves them).

No ORM or web imports: the models, the API schemas, the workers and the CLI all read it.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Literal, get_args


class WorkStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


# The same names as a type for API schemas (OpenAPI shows them inline as an enum of strings).
StatusName = Literal["queued", "running", "succeeded", "failed", "cancelled"]
assert get_args(StatusName) == tuple(WorkStatus), "StatusName and WorkStatus name the same statuses"

ALL_STATUSES: tuple[str, ...] = tuple(status.value for status in WorkStatus)
# Still to do (a worker may be at it): the only statuses cancel, fail and finish move an owner from.
ACTIVE_STATUSES: frozenset[WorkStatus] = frozenset({WorkStatus.QUEUED, WorkStatus.RUNNING})
# Final: an owner here is never moved again, except a failed or cancelled one that is requeued.
FINISHED_STATUSES: frozenset[WorkStatus] = frozenset(
    {WorkStatus.SUCCEEDED, WorkStatus.FAILED, WorkStatus.CANCELLED}
)
# What a resume may requeue (a succeeded owner has nothing left to do).
REQUEUEABLE_STATUSES: frozenset[WorkStatus] = frozenset({WorkStatus.FAILED, WorkStatus.CANCELLED})
