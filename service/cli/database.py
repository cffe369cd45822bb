"""The database a CLI command uses: HARDLABEL_DATABASE_URL, or the embedded Postgres under `home`."""

from __future__ import annotations

from service.cli import CliError
from service.settings import Settings


def resolve_database(settings: Settings) -> Settings:
    """`settings` with `database_url` set to a migrated database; one-line CliError if impossible."""
    from service.embedded_db import ensure_database

    try:
        url = ensure_database(settings)
    except Exception as exc:  # unreachable server, bad URL, embedded server refusing to start
        first_line = (str(exc) or exc.__class__.__name__).strip().splitlines()[0]
        raise CliError(f"cannot open the database: {first_line}") from exc
    return settings.model_copy(update={"database_url": url})
