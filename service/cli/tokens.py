"""`hardlabel token create|list|revoke`: API tokens, managed directly in the database.

Direct database access (not the API): the first admin token cannot be created over an API that
needs a token.
"""

from __future__ import annotations

import click
from rich.console import Console
from rich.table import Table

from service.cli import CliError
from service.cli.database import resolve_database
from service.db.models import ROLES
from service.settings import get_settings


def _database_url() -> str:
    url = resolve_database(get_settings(), command="token").database_url
    assert url is not None
    return url


@click.group("token")
def token() -> None:
    """Create, list and revoke API tokens."""


@token.command("create")
@click.option("--role", type=click.Choice(ROLES), required=True, help="admin ⊃ reviewer ⊃ viewer.")
@click.option("--name", default=None, help="A label for people (default: '<role> token').")
def create(role: str, name: str | None) -> None:
    """Create a token and print its secret (shown this once only)."""
    from service.auth import issue_token
    from service.db.session import transaction

    with transaction(_database_url()) as session:
        row, secret = issue_token(session, role=role, name=name or f"{role} token")
        token_id = row.id
    click.echo(
        f"created {role} token {token_id} ({name or f'{role} token'}); the secret is shown once:", err=True
    )
    click.echo(secret)


@token.command("list")
def list_() -> None:
    """List tokens (prefixes only; secrets are never stored)."""
    from service.auth import list_tokens
    from service.db.session import transaction

    with transaction(_database_url()) as session:
        rows = list_tokens(session)
    table = Table("id", "name", "role", "prefix", "state", "created", "last used", "revoked")
    for row in rows:
        table.add_row(
            str(row.id),
            row.name,
            row.role,
            row.prefix + "…",
            "revoked" if row.revoked_at else "active",
            f"{row.created_at:%Y-%m-%d %H:%M}",
            f"{row.last_used_at:%Y-%m-%d %H:%M}" if row.last_used_at else "-",
            f"{row.revoked_at:%Y-%m-%d %H:%M}" if row.revoked_at else "-",
        )
    Console(width=120).print(table)


@token.command("revoke")
@click.argument("token_id", type=click.IntRange(min=1, max=2**31 - 1))
def revoke(token_id: int) -> None:
    """Revoke a token: requests with it are refused from now on."""
    from service.auth import revoke_token
    from service.db.session import transaction
    from service.errors import NotFoundError

    try:
        with transaction(_database_url()) as session:
            row = revoke_token(session, token_id)
            name = row.name
    except NotFoundError as exc:
        raise CliError(exc.detail) from exc
    click.echo(f"revoked token {token_id} ({name})")


commands: list[click.Command] = [token]
