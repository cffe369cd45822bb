"""Demo test fixtures: a database of its own (the demo's worker claims every task kind it finds)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from service.db.scratch import scratch_database


@pytest.fixture
def demo_database_url(database_url: str) -> Iterator[str]:
    """An empty database on the test server; the demo migrates it itself, as a user's would be."""
    with scratch_database(database_url, "hardlabel_demo", migrate=False) as url:
        yield url
