"""`hardlabel submit` with a price and a budget, and `hardlabel status` showing tokens, cost and estimate."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner
from sqlalchemy import text, update

from service.cli import main
from service.db.models import Job
from service.db.session import transaction
from tests.service.api.factories import unique_name
from tests.service.cli.test_cli_jobs import write_recipe

PRICE = json.dumps({"input": 2, "output": 10})


def test_status_shows_tokens_cost_estimate_and_budget(cli_env: dict[str, str], tmp_path: Path) -> None:
    runner = CliRunner()
    submitted = runner.invoke(
        main,
        [
            "submit",
            str(write_recipe(tmp_path, name=unique_name())),
            "--teacher",
            "m",
            "-o",
            f"price_per_million_tokens={PRICE}",
            "--max-cost",
            "5",
            "--max-completion-tokens",
            "30000",
        ],
        terminal_width=200,
    )
    assert submitted.exit_code == 0, submitted.output
    job_id = int(submitted.stdout)
    # 6 items of one stage at max_tokens 8: at most 48 completion tokens.
    assert "estimate 6 requests · completion tokens ≤ 48 · prompt tokens ~" in submitted.stderr
    assert "· cost ~" in submitted.stderr
    assert "budget max_cost 5 · max_completion_tokens 30,000" in submitted.stderr

    with transaction(cli_env["HARDLABEL_DATABASE_URL"]) as session:
        session.execute(
            update(Job)
            .where(Job.id == job_id)
            .values(
                status="running",
                started_at=text("now() - interval '10 seconds'"),
                items_done=3,
                samples_written=20,
                tokens_in=300_000,
                tokens_out=40_000,
            )
        )
    detail = runner.invoke(main, ["status", str(job_id)], terminal_width=200)
    assert detail.exit_code == 0, detail.output
    assert "tokens in 300,000 / out 40,000" in detail.stdout
    assert "cost 1 (per million tokens: in 2.0 / out 10.0)" in detail.stdout  # 0.6 + 0.4
    assert "samples/s" in detail.stdout
    assert "- samples/s" not in detail.stdout
    assert "reached: completion tokens 40000 >= max_completion_tokens 30000" in detail.stdout


def test_an_unpriced_job_shows_no_cost(cli_env: dict[str, str], tmp_path: Path) -> None:
    runner = CliRunner()
    submitted = runner.invoke(
        main, ["submit", str(write_recipe(tmp_path, name=unique_name())), "--teacher", "m"]
    )
    assert submitted.exit_code == 0, submitted.output
    detail = runner.invoke(main, ["status", submitted.stdout.strip()], terminal_width=200)
    assert detail.exit_code == 0, detail.output
    assert "estimate 6 requests" in detail.stdout
    assert "cost" not in detail.stdout
    assert "budget" not in detail.stdout


def test_a_cost_budget_without_a_price_is_refused(cli_env: dict[str, str], tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main, ["submit", str(write_recipe(tmp_path, name=unique_name())), "--teacher", "m", "--max-cost", "1"]
    )
    assert result.exit_code != 0
    assert "budget.max_cost" in result.output
