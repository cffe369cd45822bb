"""`hardlabel token create|list|revoke` against the real database, checked through the API."""

from __future__ import annotations

import httpx
from click.testing import CliRunner

from service.cli import main


def table_row(output: str, needle: str) -> list[str]:
    """The cells of the rich table row that contains `needle`."""
    line = next(line for line in output.splitlines() if needle in line)
    return [cell.strip() for cell in line.strip("│ ").split("│")]


def test_create_list_and_revoke(cli_env: dict[str, str]) -> None:
    runner = CliRunner()
    created = runner.invoke(main, ["token", "create", "--role", "viewer", "--name", "dashboards"])
    assert created.exit_code == 0, created.output
    secret = created.stdout.strip()
    assert secret.startswith("hl_")
    assert "\n" not in secret
    assert "shown once" in created.stderr
    api = cli_env["HARDLABEL_API_URL"]
    headers = {"Authorization": f"Bearer {secret}"}
    assert httpx.get(f"{api}/v1/jobs", headers=headers).status_code == 200
    assert httpx.post(f"{api}/v1/jobs/1/cancel", headers=headers).status_code == 403  # a viewer

    listed = runner.invoke(main, ["token", "list"])
    assert listed.exit_code == 0, listed.output
    token_id, _, role, prefix, state, *_ = table_row(listed.stdout, "dashboards")
    assert (role, state) == ("viewer", "active")
    assert secret.startswith(prefix.rstrip("…"))
    assert secret not in listed.stdout

    revoked = runner.invoke(main, ["token", "revoke", token_id])
    assert revoked.exit_code == 0, revoked.output
    assert httpx.get(f"{api}/v1/jobs", headers=headers).status_code == 401
    assert table_row(runner.invoke(main, ["token", "list"]).stdout, "dashboards")[4] == "revoked"


def test_bad_input_is_one_line_and_exit_2(cli_env: dict[str, str]) -> None:
    runner = CliRunner()
    missing = runner.invoke(main, ["token", "revoke", "999999"])
    assert missing.exit_code == 2
    assert missing.stderr.strip() == "error: token 999999 does not exist"
    bad_role = runner.invoke(main, ["token", "create", "--role", "root"])
    assert bad_role.exit_code == 2
    assert "root" in bad_role.stderr


def test_unreachable_database_is_one_line(cli_env: dict[str, str], monkeypatch: object) -> None:
    import pytest

    assert isinstance(monkeypatch, pytest.MonkeyPatch)
    from service.settings import get_settings

    monkeypatch.setenv("HARDLABEL_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:1/nowhere")
    get_settings.cache_clear()
    result = CliRunner().invoke(main, ["token", "list"])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("error: cannot open the database")
