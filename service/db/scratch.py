"""Scratch databases: one of their own for a test session, a group of tests or a benchmark run.

Created on a server next to the user's databases, used, then dropped with whatever is still
connected to them, so a failed run leaves nothing behind and never touches real data.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import create_engine, make_url, text

MAINTENANCE_DATABASE = "postgres"


def _admin_execute(url: str, statement: str) -> None:
    """Run `statement` outside a transaction on the maintenance database of `url`'s server."""
    admin = create_engine(make_url(url).set(database=MAINTENANCE_DATABASE), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(statement))
    finally:
        admin.dispose()


def create_database(server_url: str, prefix: str, *, migrate: bool = True) -> str:
    """A new database `<prefix>_<random>` on the server of `server_url` (migrated to head); its URL."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    _admin_execute(server_url, f'CREATE DATABASE "{name}"')
    url = make_url(server_url).set(database=name).render_as_string(hide_password=False)
    if migrate:
        from service.db.migrate import upgrade

        upgrade(url)
    return url


def drop_database(url: str) -> None:
    """Drop `url`'s database, closing the connections still open to it (`WITH (FORCE)`)."""
    from service.db.session import get_engine

    get_engine.cache_clear()  # pooled engines of this process would only hold dead connections
    _admin_execute(url, f'DROP DATABASE IF EXISTS "{make_url(url).database}" WITH (FORCE)')


@contextmanager
def scratch_database(server_url: str, prefix: str, *, migrate: bool = True) -> Iterator[str]:
    """`create_database` for the length of a `with` block, dropped at its end."""
    url = create_database(server_url, prefix, migrate=migrate)
    try:
        yield url
    finally:
        drop_database(url)
