"""`hardlabel submit` with several teachers (repeated --teacher, or --teachers-file) and `status`."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner
from sqlalchemy import update

from service.cli import main
from service.db.models import Job
from service.db.session import transaction
from tests.service.api.factories import unique_name
from tests.service.cli.test_cli_jobs import write_recipe


def test_repeated_teachers_make_one_job_with_shards_per_teacher(
    cli_env: dict[str, str], tmp_path: Path
) -> None:
    runner = CliRunner()
    submitted = runner.invoke(
        main,
        ["submit", str(write_recipe(tmp_path, name=unique_name())), "--teacher", "m-a", "--teacher", "m-b"],
        terminal_width=200,
    )
    assert submitted.exit_code == 0, submitted.output
    job_id = int(submitted.stdout)
    assert "12 items in 4 shards" in submitted.stderr  # 6 items once per teacher, in shards per teacher
    with transaction(cli_env["HARDLABEL_DATABASE_URL"]) as session:
        session.execute(
            update(Job)
            .where(Job.id == job_id)
            .values(
                status="running",
                items_done=7,
                samples_written=7,
                tokens_in=70,
                tokens_out=14,
                teacher_usage={
                    "0": {"items_done": 6, "samples": 6, "tokens_in": 60, "tokens_out": 12},
                    "1": {"items_done": 1, "samples": 1, "tokens_in": 10, "tokens_out": 2},
                },
            )
        )
    detail = runner.invoke(main, ["status", str(job_id)], terminal_width=200)
    assert detail.exit_code == 0, detail.output
    assert "teachers m-a (vllm), m-b (vllm)" in detail.stdout
    assert "teacher 0 m-a: items 6 · samples 6 · tokens in 60 / out 12" in detail.stdout
    assert "teacher 1 m-b: items 1 · samples 1 · tokens in 10 / out 2" in detail.stdout


def test_a_teachers_file_gives_each_teacher_its_own_engine(cli_env: dict[str, str], tmp_path: Path) -> None:
    teachers = tmp_path / "teachers.yaml"
    teachers.write_text(
        json.dumps(
            [{"model": "m-a"}, {"model": "served", "engine": "openai", "base_url": "http://127.0.0.1:9/v1"}]
        )
    )
    runner = CliRunner()
    recipe = str(write_recipe(tmp_path, name=unique_name()))
    submitted = runner.invoke(main, ["submit", recipe, "--teachers-file", str(teachers)])
    assert submitted.exit_code == 0, submitted.output
    job = runner.invoke(main, ["status", submitted.stdout.strip()], terminal_width=200)
    assert "teachers m-a (vllm), served (openai)" in job.stdout

    both = runner.invoke(main, ["submit", recipe, "--teacher", "m", "--teachers-file", str(teachers)])
    assert (both.exit_code, both.stderr) == (2, "error: give --teacher or --teachers-file, not both\n")
    neither = runner.invoke(main, ["submit", recipe])
    assert neither.exit_code == 2
    assert "give --teacher MODEL (repeat it for several teachers) or --teachers-file" in neither.stderr
    teachers.write_text("model: m")
    not_a_list = runner.invoke(main, ["submit", recipe, "--teachers-file", str(teachers)])
    assert not_a_list.exit_code == 2
    assert "expected a list of teacher configs" in not_a_list.stderr
