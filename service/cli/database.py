"""The database a CLI command uses: HARDLABEL_DATABASE_URL, or the embedded Postgres under `home`."""

from __future__ import annotations

import os

from service.cli import CliError
from service.settings import Settings


def resolve_database(settings: Settings, *, command: str | None) -> Settings:
    """`settings` with `database_url` set to a migrated database; one-line CliError if impossible.

    With HARDLABEL_API_URL set and no HARDLABEL_DATABASE_URL, the user works against a shared
    service: starting (or creating) an embedded database here would read or write the wrong data,
    so `hardlabel {command}` says that it needs the database instead. `command` None: the command
    runs the service itself (`serve`, `up`), for which the embedded database is the point.
    """
    from service.embedded_db import ensure_database

    if command is not None and not settings.database_url and os.environ.get("HARDLABEL_API_URL"):
        raise CliError(
            f"`hardlabel {command}` reads the database directly: set HARDLABEL_DATABASE_URL to the "
            "service's database (HARDLABEL_API_URL is set, so no embedded database is started here)"
        )
    try:
        url = ensure_database(settings)
    except Exception as exc:  # unreachable server, bad URL, embedded server refusing to start
        first_line = (str(exc) or exc.__class__.__name__).strip().splitlines()[0]
        raise CliError(f"cannot open the database: {first_line}") from exc
    return settings.model_copy(update={"database_url": url})
