"""Bounds of the database's integer columns: an out-of-range id or count is a 422 at the edge,
never a database error (a 500)."""

from __future__ import annotations

INT_MAX = 2**31 - 1  # INTEGER columns (recipe and token ids, versions, item counts)
BIGINT_MAX = 2**63 - 1  # BIGINT columns (job, task, sample, event ids; seeds)
