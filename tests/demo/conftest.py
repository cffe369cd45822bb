"""Demo test fixtures: a database of its own (the demo's worker claims every task kind it finds)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import create_engine, make_url, text


@pytest.fixture
def demo_database_url(database_url: str) -> Iterator[str]:
    """An empty database on the test server; the demo migrates it itself, as a user's would be."""
    server = make_url(database_url)
    name = f"hardlabel_demo_{uuid.uuid4().hex[:10]}"
    admin = create_engine(server.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    yield server.set(database=name).render_as_string(hide_password=False)
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()
