"""A finished job → filters → review → a frozen version → a TRL-format export, all with the CLI."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from service.cli import CliError
from service.cli import main as cli
from service.cli.curation import parse_filter
from service.settings import Settings, get_settings
from service.workers.runner import run_worker
from tests.service.conftest import Caller, insert_samples, make_job, sample_row


@pytest.fixture
def env(
    monkeypatch: pytest.MonkeyPatch, curation_db_url: str, live_api: str, admin: Caller
) -> Iterator[None]:
    monkeypatch.setenv("HARDLABEL_DATABASE_URL", curation_db_url)
    monkeypatch.setenv("HARDLABEL_API_URL", live_api)
    monkeypatch.setenv("HARDLABEL_TOKEN", admin.headers["Authorization"].removeprefix("Bearer "))
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def hardlabel(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


def test_parse_filter() -> None:
    assert parse_filter("length:min=5,max=2000") == {"type": "length", "params": {"min": 5, "max": 2000}}
    assert parse_filter("regex:name=no_ai,pattern=as an AI,ignore_case=true") == {
        "type": "regex",
        "name": "no_ai",
        "params": {"pattern": "as an AI", "ignore_case": True},
    }
    assert parse_filter('{"type": "exact_dedup"}') == {"type": "exact_dedup"}
    with pytest.raises(CliError, match="is not key=value"):
        parse_filter("length:min")


def test_curation_workflow_through_the_cli(
    env: None, curation_db_url: str, curation_settings: Settings, tmp_path: Path
) -> None:
    job_id = make_job(curation_db_url)
    rows = [
        sample_row(job_id, i, f"What is {i} * 3?", f"It is {3 * i + (i == 4)}.", inputs={"reference": 3 * i})
        for i in range(8)
    ]
    ids = insert_samples(curation_db_url, rows)

    stop = threading.Event()
    worker = threading.Thread(target=run_worker, args=(curation_settings, ["filter"]), kwargs={"stop": stop})
    worker.start()
    try:
        result = hardlabel(
            "filter",
            str(job_id),
            "--filter",
            "verifier:mode=numeric",
            "--filter",
            "length:min=3",
            "--interval",
            "0.1",
        )
    finally:
        stop.set()
        worker.join(timeout=30)
    assert result.exit_code == 0, result.output
    assert "verifier" in result.output
    assert "7" in result.output

    reviewed = hardlabel("review", str(ids[4]), "--reject", "--tag", "wrong", "--note", "off by one")
    assert reviewed.exit_code == 0, reviewed.output
    assert f"sample {ids[4]}: rejected" in reviewed.output
    assert "verifier ✗" in reviewed.output
    bad = hardlabel("review", str(ids[4]), "--tag", "a,b")
    assert bad.exit_code == 2
    assert bad.output.startswith("error: ")

    accept = CliRunner().invoke(
        cli, ["review", str(ids[0]), "--accept", "--answer", "It is 0, since 0 * 3 = 0."]
    )
    assert accept.exit_code == 0, accept.output

    gt = tmp_path / "gt.jsonl"
    gt.write_text(json.dumps({"question": "What is 10 * 3?", "answer": "30"}) + "\n")
    stop.clear()  # `dataset create` waits for a worker to freeze the version
    worker = threading.Thread(target=run_worker, args=(curation_settings, ["freeze"]), kwargs={"stop": stop})
    worker.start()
    try:
        created = hardlabel(
            "dataset",
            "create",
            "cli-set",
            "--job",
            str(job_id),
            "--require-passed",
            "verifier",
            "--review-status",
            "accepted_or_unreviewed_passed_all",
            "--ground-truth",
            str(gt),
            "--interval",
            "0.1",
        )
    finally:
        stop.set()
        worker.join(timeout=30)
    assert created.exit_code == 0, created.output
    assert "rows (train" in created.output
    dataset_id = created.output.strip().splitlines()[-1]
    shown = json.loads(hardlabel("dataset", "show", dataset_id).output)
    assert shown["row_counts"]["teacher"] == 7
    assert shown["row_counts"]["ground_truth"] == 1
    assert "cli-set" in hardlabel("dataset", "list", "--name", "cli-set").output

    out = tmp_path / "export"
    exported = hardlabel("export", dataset_id, "--format", "prompt_completion", "--out", str(out))
    assert exported.exit_code == 0, exported.output
    from datasets import load_from_disk

    train = load_from_disk(str(out))["train"]
    assert len(train) == 8
    assert train[0]["completion"] == [{"role": "assistant", "content": "It is 0, since 0 * 3 = 0."}]

    missing = hardlabel("dataset", "create", "x", "--job", "987654321")
    assert missing.exit_code == 2
    assert "query.job_ids" in missing.output
