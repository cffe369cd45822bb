"""The curation CLI as a teammate uses it: against a shared service by URL + token, no database here."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from fastapi.testclient import TestClient

from service.cli import main as cli
from service.filters.specs import FILTER_TYPES, FilterSpec
from service.settings import get_settings
from tests.service.conftest import Caller, accepted_version, insert_samples, make_job, sample_row


def hardlabel(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


def one_line_error(result: Result) -> str:
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert "Traceback" not in result.output
    return lines[0]


@pytest.fixture
def teammate(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, live_api: str, viewer: Caller
) -> Iterator[Path]:
    """A teammate's shell: the service's URL and a token, no database URL; returns HARDLABEL_HOME."""
    home = tmp_path / "home"
    monkeypatch.delenv("HARDLABEL_DATABASE_URL", raising=False)
    monkeypatch.setenv("HARDLABEL_HOME", str(home))
    monkeypatch.setenv("HARDLABEL_API_URL", live_api)
    monkeypatch.setenv("HARDLABEL_TOKEN", viewer.headers["Authorization"].removeprefix("Bearer "))
    get_settings.cache_clear()
    yield home
    get_settings.cache_clear()


@pytest.fixture(scope="module")
def version(client: TestClient, admin: Caller, reviewer: Caller, curation_db_url: str) -> dict[str, Any]:
    job_id = make_job(curation_db_url)
    rows = [sample_row(job_id, i, f"What is {i} + 1?", f"{i + 1}") for i in range(10)]
    return accepted_version(
        client, admin, reviewer, rows, job_id, name="teammate-export", split={"test_fraction": 0.2}
    )


@pytest.mark.parametrize("container", ["jsonl", "hf"])
def test_export_goes_over_the_api_and_starts_no_database(
    teammate: Path, version: dict[str, Any], tmp_path: Path, container: str
) -> None:
    from datasets import load_dataset, load_from_disk

    out = tmp_path / "out"
    result = hardlabel("export", str(version["id"]), "--container", container, "--out", str(out))
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == str(out)
    # A fresh cache: `datasets` caches a local folder by its path, and other tests export to "out" too.
    loaded: Any = (
        load_dataset(str(out), cache_dir=str(tmp_path / "cache"))
        if container == "jsonl"
        else load_from_disk(str(out))
    )
    counts = version["row_counts"]
    assert {split: len(loaded[split]) for split in loaded} == {
        "train": counts["train"],
        "test": counts["test"],
    }
    assert (out / "README.md").read_text().startswith("---\n"), "the card comes with the splits"
    assert not (teammate / "postgres").exists(), "no embedded database was started or created"

    again = hardlabel("export", str(version["id"]), "--container", container, "--out", str(out), "--force")
    assert again.exit_code == 0, again.output
    pairs = hardlabel("export", str(version["id"]), "--format", "preference", "--out", str(tmp_path / "p"))
    assert pairs.exit_code == 2, "no rejected answers here: no preference pairs, and it says so"
    assert "preference" in pairs.stderr
    missing = one_line_error(hardlabel("export", "987654321", "--out", str(tmp_path / "x")))
    assert "dataset version 987654321 does not exist" in missing


def test_commands_that_read_the_database_say_so_instead_of_starting_an_empty_one(
    teammate: Path, version: dict[str, Any], tmp_path: Path
) -> None:
    for args in (
        ["export", str(version["id"]), "--database", "--out", str(tmp_path / "x")],
        ["token", "list"],
        ["token", "create", "--role", "viewer"],
    ):
        line = one_line_error(hardlabel(*args))
        assert "reads the database directly: set HARDLABEL_DATABASE_URL" in line, args
        assert "HARDLABEL_API_URL is set" in line
    assert not (teammate / "postgres").exists()


def test_review_refuses_contradictory_or_empty_requests_and_stores_nothing(
    teammate: Path,
    monkeypatch: pytest.MonkeyPatch,
    reviewer: Caller,
    client: TestClient,
    curation_db_url: str,
) -> None:
    monkeypatch.setenv("HARDLABEL_TOKEN", reviewer.headers["Authorization"].removeprefix("Bearer "))
    job_id = make_job(curation_db_url)
    (sample_id,) = insert_samples(curation_db_url, [sample_row(job_id, 0, "q", "a")])

    assert "--accept and --reject cannot be combined" in one_line_error(
        hardlabel("review", str(sample_id), "--accept", "--reject")
    )
    assert "--reject and --reset cannot be combined" in one_line_error(
        hardlabel("review", str(sample_id), "--reject", "--reset", "--note", "n")
    )
    assert "--tag and --untag both name x" in one_line_error(
        hardlabel("review", str(sample_id), "--tag", "x", "--untag", "x")
    )
    nothing = one_line_error(hardlabel("review", str(sample_id)))
    assert nothing.startswith("error: nothing to do: give --accept, --reject or --reset")
    stored = client.get(f"/v1/samples/{sample_id}", headers=reviewer.headers).json()
    assert (stored["review_status"], stored["note"], stored["tags"]) == ("pending", None, [])

    accepted = hardlabel("review", str(sample_id), "--accept")
    assert accepted.exit_code == 0, accepted.output
    assert accepted.stdout.startswith(f"sample {sample_id}: accepted")


def test_the_api_gives_a_validators_own_words(
    client: TestClient, reviewer: Caller, curation_db_url: str
) -> None:
    job_id = make_job(curation_db_url)
    (sample_id,) = insert_samples(curation_db_url, [sample_row(job_id, 0, "q", "a")])
    response = client.patch(f"/v1/samples/{sample_id}", json={}, headers=reviewer.headers)
    assert response.status_code == 422
    problem = response.json()
    assert problem["detail"].startswith("request: nothing to do: give an action"), problem
    assert "Value error" not in json.dumps(problem)


def test_filter_help_lists_every_type_with_its_parameters() -> None:
    from typing import get_args

    text = hardlabel("filter", "--help").output
    for spec_model in get_args(get_args(FilterSpec)[0]):
        kind = get_args(spec_model.model_fields["type"].annotation)[0]
        assert f"\n  {kind}: " in text, kind
        for name, field in spec_model.model_fields["params"].annotation.model_fields.items():
            assert f"    {field.alias or name} (" in text, (kind, name)
    assert {kind for kind in FILTER_TYPES if f"\n  {kind}: " in text} == set(FILTER_TYPES)
    assert "mode (exact|normalized|numeric|regex; default 'normalized')" in text

    create = " ".join(hardlabel("dataset", "create", "--help").output.split())
    for words in (
        "--job INTEGER RANGE A generation job whose samples",
        "--limit INTEGER RANGE At most this many samples",
        "--test-fraction FLOAT RANGE Share of samples held out as the test split",
        "--stratify-by-job Hold out --test-fraction of each job's rows",
        "--ground-truth-from-seed FIELD Take ground truth from the samples' own seed data",
        "--ratio FLOAT RANGE With --ground-truth or",
    ):
        assert words in create, words


def test_export_options_reach_the_server_and_the_database_path(
    teammate: Path,
    version: dict[str, Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    curation_db_url: str,
) -> None:
    out = tmp_path / "with-provenance"
    result = hardlabel(
        "export", str(version["id"]), "--container", "jsonl", "--provenance", "--out", str(out)
    )
    assert result.exit_code == 0, result.output
    first = json.loads((out / "train.jsonl").read_text().splitlines()[0])
    assert {"source", "sample_id", "job_id", "teacher", "item_index"} <= set(first)
    assert first["source"] == "teacher"

    # Read directly, the same refusals are one line too (no pairs without rejected answers).
    monkeypatch.setenv("HARDLABEL_DATABASE_URL", curation_db_url)
    monkeypatch.delenv("HARDLABEL_API_URL")
    monkeypatch.delenv("HARDLABEL_TOKEN")
    get_settings.cache_clear()
    refused = hardlabel("export", str(version["id"]), "--format", "preference", "--out", str(tmp_path / "p"))
    assert refused.exit_code == 2, refused.output
    last = refused.stderr.strip().splitlines()[-1]  # after the progress bar
    assert last.startswith("error: dataset version ")
    assert "no preference pairs" in last
    assert "Traceback" not in refused.output
