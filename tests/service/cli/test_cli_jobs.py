"""`hardlabel submit` and `hardlabel status` against a live API (uvicorn in a thread)."""

from __future__ import annotations

import json
import shutil
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from click.testing import CliRunner
from sqlalchemy import select, text, update

from service.cli import main
from service.db.models import Job, Recipe
from service.db.session import transaction
from service.statuses import ALL_STATUSES
from tests.service.api.factories import make_token, unique_name


def write_recipe(
    folder: Path, *, name: str, rows: int = 8, content: str = "What is {{ a }}+{{ b }}?"
) -> Path:
    """A recipe file whose seeds are a JSONL file in a sub-folder (a relative path)."""
    (folder / "data").mkdir(parents=True, exist_ok=True)
    with (folder / "data" / "seeds.jsonl").open("w") as handle:
        for i in range(rows):
            handle.write(json.dumps({"a": i, "b": 2 * i, "reference": str(3 * i)}) + "\n")
    recipe = {
        "name": name,
        "seed": 1,
        "seeds": {"path": "data/seeds.jsonl", "limit": 6},
        "stages": [
            {
                "name": "answer",
                "messages": [{"role": "user", "content": content}],
                "sampling": {"max_tokens": 8},
            }
        ],
    }
    path = folder / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def api_get(env: dict[str, str], path: str) -> Any:
    response = httpx.get(
        env["HARDLABEL_API_URL"] + path, headers={"Authorization": f"Bearer {env['HARDLABEL_TOKEN']}"}
    )
    assert response.status_code == 200, response.text
    return response.json()


def test_submit_inlines_file_seeds_and_sends_absolute_model_paths(
    cli_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_model_dir: Path
) -> None:
    recipe_file = write_recipe(tmp_path / "recipes", name=unique_name("arith"))
    # A copy of a real model folder: the API checks a local teacher's files at submission.
    shutil.copytree(tiny_model_dir, tmp_path / "models" / "tiny")
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(
        main,
        [
            "submit",
            "recipes/recipe.yaml",
            "--teacher",
            "models/tiny",
            "-o",
            "enforce_eager=true",
            "-o",
            "dtype=float32",
            "--limit",
            "5",
            "--seed",
            "11",
            "--priority",
            "3",
        ],
    )
    assert result.exit_code == 0, result.output
    job_id = int(result.stdout.strip())
    assert f"job {job_id} queued: 5 items" in result.stderr
    job = api_get(cli_env, f"/v1/jobs/{job_id}")
    assert job["teacher"]["model"] == str(tmp_path / "models" / "tiny")
    assert job["teacher"]["enforce_eager"] is True
    assert job["teacher"]["dtype"] == "float32"
    assert (job["seed"], job["priority"], job["progress"]["items_total"]) == (11, 3, 5)
    spec = api_get(cli_env, f"/v1/recipes/{job['recipe']['id']}")["spec"]
    # The job no longer depends on the file: its 8 rows travel inline; `limit` still applies server-side.
    assert "path" not in spec["seeds"]
    assert spec["seeds"]["limit"] == 6
    assert spec["seeds"]["records"][7] == {"a": 7, "b": 14, "reference": "21"}
    assert recipe_file.exists()


def test_a_hub_style_model_id_is_sent_as_given(cli_env: dict[str, str], tmp_path: Path) -> None:
    recipe_file = write_recipe(tmp_path, name=unique_name())
    result = CliRunner().invoke(
        main, ["submit", str(recipe_file), "--teacher", "org/some-model", "--base-url", "http://x/v1"]
    )
    assert result.exit_code == 0, result.output
    job = api_get(cli_env, f"/v1/jobs/{int(result.stdout)}")
    assert (job["teacher"]["model"], job["teacher"]["engine"], job["teacher"]["base_url"]) == (
        "org/some-model",
        "openai",
        "http://x/v1",
    )


def one_error_line(result: Any) -> str:
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert "Traceback" not in result.output
    return str(lines[0])


def test_submit_errors_are_one_line_with_exit_code_2(
    cli_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, database_url: str
) -> None:
    runner = CliRunner()
    good = write_recipe(tmp_path / "good", name=unique_name())
    bad_template = write_recipe(tmp_path / "bad", name=unique_name(), content="x\n{{ c }}")

    def submit(*args: str, **env: str) -> str:
        return one_error_line(runner.invoke(main, ["submit", *args], env=env or None))

    assert "not found" in submit(str(tmp_path / "missing.yaml"), "--teacher", "m")
    line = submit(str(bad_template), "--teacher", "m")
    assert "stages[0].messages[0], line 2" in line
    assert "'c'" in line
    typo = tmp_path / "typo.yaml"
    typo.write_text(good.read_text().replace("messages:", "mesages:"))
    line = submit(str(typo), "--teacher", "m")
    # Every problem, the unknown key first with its likely meaning (it is why "messages" is missing).
    assert "stages[0].mesages: unknown key (did you mean 'messages'?); stages[0].messages: required" in line
    assert "more problem" not in line
    assert "KEY=VALUE" in submit(str(good), "--teacher", "m", "-o", "enforce_eager")
    # The server's 422 names the field.
    assert "teacher.bogus" in submit(str(good), "--teacher", "m", "-o", "bogus=1")
    assert "cannot reach the API at http://127.0.0.1:1" in submit(
        str(good), "--teacher", "m", "--api-url", "http://127.0.0.1:1"
    )
    assert "refused the token" in submit(str(good), "--teacher", "m", "--token", "hl_wrong")
    viewer = make_token(database_url, "viewer")[1]
    assert "'admin' role" in submit(str(good), "--teacher", "m", "--token", viewer)
    monkeypatch.delenv("HARDLABEL_TOKEN")
    assert "no API token" in submit(str(good), "--teacher", "m")


def test_status_lists_jobs_and_shows_one(cli_env: dict[str, str], tmp_path: Path) -> None:
    runner = CliRunner()
    job_id = int(
        runner.invoke(
            main, ["submit", str(write_recipe(tmp_path, name=unique_name())), "--teacher", "m"]
        ).stdout
    )
    listing = runner.invoke(main, ["status", "--limit", "50"], terminal_width=160)
    assert listing.exit_code == 0, listing.output
    row = next(line.split() for line in listing.stdout.splitlines() if line.split()[:1] == [str(job_id)])
    assert row[1:4] == ["queued", row[2], "0/6"]
    # At 80 columns a status is never cut ("succee…"), and a failed job has no ETA.
    with transaction(cli_env["HARDLABEL_DATABASE_URL"]) as session:
        session.execute(
            update(Job).where(Job.id == job_id).values(status="failed", finished_at=text("now()"))
        )
    narrow = runner.invoke(main, ["status", "--limit", "50"], terminal_width=80)
    failed = next(line.split() for line in narrow.stdout.splitlines() if line.split()[:1] == [str(job_id)])
    assert failed[1] == "failed", narrow.stdout
    assert "0:00" not in failed, narrow.stdout  # no ETA (it was 0:00)
    rows = [
        line.split()
        for line in narrow.stdout.splitlines()
        if line.split()[:1] != [] and line.split()[0].isdigit()
    ]
    assert all(row[1] in ALL_STATUSES for row in rows if len(row) > 1), narrow.stdout
    detail = runner.invoke(main, ["status", str(job_id)], terminal_width=160)
    assert detail.exit_code == 0, detail.output
    assert f"job {job_id} failed" in detail.stdout
    assert "items 0/6" in detail.stdout
    assert "0–4" in detail.stdout
    assert "4–6" in detail.stdout
    missing = one_error_line(runner.invoke(main, ["status", "999999999"]))
    assert missing == "error: job 999999999 does not exist"


def _play_worker(database_url: str, recipe_name: str, outcome: str, stop: threading.Event) -> None:
    """Moves the job of `recipe_name` the way workers do, so --follow has something to follow."""
    job_id = None
    while job_id is None and not stop.is_set():
        with transaction(database_url) as session:
            job_id = session.scalar(
                select(Job.id).join(Recipe, Recipe.id == Job.recipe_id).where(Recipe.name == recipe_name)
            )
        time.sleep(0.05)
    with transaction(database_url) as session:
        session.execute(
            update(Job).where(Job.id == job_id).values(status="running", started_at=text("now()"))
        )
    for done in (2, 4):
        time.sleep(0.3)
        with transaction(database_url) as session:
            session.execute(
                update(Job)
                .where(Job.id == job_id)
                .values(items_done=done, samples_written=done, tokens_out=10 * done)
            )
    time.sleep(0.3)
    with transaction(database_url) as session:
        values: dict[str, Any] = {"status": outcome, "finished_at": text("now()")}
        if outcome == "succeeded":
            values |= {"items_done": 6, "samples_written": 6, "tokens_out": 60}
        else:
            values["error"] = "teacher model not found: /nowhere"
        session.execute(update(Job).where(Job.id == job_id).values(**values))


@pytest.mark.parametrize(("outcome", "exit_code"), [("succeeded", 0), ("failed", 1)])
def test_follow_shows_progress_until_the_job_ends(
    cli_env: dict[str, str], tmp_path: Path, database_url: str, outcome: str, exit_code: int
) -> None:
    name = unique_name()
    stop = threading.Event()
    worker = threading.Thread(target=_play_worker, args=(database_url, name, outcome, stop), daemon=True)
    worker.start()
    try:
        result = CliRunner().invoke(
            main,
            [
                "submit",
                str(write_recipe(tmp_path, name=name)),
                "--teacher",
                "m",
                "--follow",
                "--interval",
                "0.1",
            ],
        )
    finally:
        stop.set()
        worker.join(timeout=10)
    assert result.exit_code == exit_code, result.output
    job_id = int(result.stdout.strip())
    if outcome == "succeeded":
        assert f"job {job_id} succeeded: 6 items, 6 samples, 60 tokens out" in result.stderr
    else:
        assert f"job {job_id} failed: teacher model not found: /nowhere" in result.stderr
    assert "6/6" in result.stderr or outcome == "failed"
