"""`hardlabel dataset create` without --review-status: a filter run alone is enough to freeze a version."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import httpx
import pytest
from click.testing import CliRunner, Result

from service.cli import main
from service.db.models import FilterRun, FilterVerdict
from service.db.session import transaction
from service.settings import Settings
from service.workers.runner import run_worker
from tests.service.api.factories import insert_samples, make_job, sample_row


@pytest.fixture(autouse=True)
def freeze_worker(cli_env: dict[str, str]) -> Iterator[None]:
    """A worker that freezes the versions these tests create (`dataset create` waits for it)."""
    settings = Settings(database_url=cli_env["HARDLABEL_DATABASE_URL"], poll_seconds=0.05)
    stop = threading.Event()
    worker = threading.Thread(target=run_worker, args=(settings, ["freeze"]), kwargs={"stop": stop})
    worker.start()
    yield
    stop.set()
    worker.join(timeout=30)


def hardlabel(*args: str) -> Result:
    return CliRunner().invoke(main, list(args))


def filtered_job(url: str, *, judged: bool, filter_name: str = "cli_default_check") -> tuple[int, list[int]]:
    """A job of 6 unreviewed samples; when `judged`, one filter passed 0–3 and failed 4–5."""
    with transaction(url) as session:
        job_id = make_job(session, status="succeeded").id
    ids = insert_samples(url, [sample_row(job_id, i) for i in range(6)])
    if judged:
        with transaction(url) as session:
            run = FilterRun(status="succeeded", spec={"filters": [{"type": "length", "name": filter_name}]})
            session.add(run)
            session.flush()
            session.add_all(
                FilterVerdict(
                    sample_id=sample_id,
                    filter_name=filter_name,
                    filter_run_id=run.id,
                    passed=i < 4,
                    reason="r",
                )
                for i, sample_id in enumerate(ids)
            )
    return job_id, ids


def test_dataset_create_defaults_to_accepted_or_unreviewed_passed_all(cli_env: dict[str, str]) -> None:
    url = cli_env["HARDLABEL_DATABASE_URL"]
    job_id, _ = filtered_job(url, judged=True)
    created = hardlabel("dataset", "create", "cli-default", "--job", str(job_id))
    assert created.exit_code == 0, created.output
    version_id = created.stdout.strip()
    version = httpx.get(
        f"{cli_env['HARDLABEL_API_URL']}/v1/datasets/{version_id}",
        headers={"Authorization": f"Bearer {cli_env['HARDLABEL_TOKEN']}"},
    ).json()
    assert version["row_counts"]["teacher"] == 4, "the unreviewed samples that passed, not the failed ones"
    assert version["query"]["query"]["review_status"] == "accepted_or_unreviewed_passed_all"

    # Reviewed-only still works when asked for, and says what it found instead.
    accepted_only = hardlabel(
        "dataset", "create", "cli-default", "--job", str(job_id), "--review-status", "accepted"
    )
    assert accepted_only.exit_code == 2
    lines = accepted_only.stderr.strip().splitlines()
    assert len(lines) == 1, accepted_only.stderr
    assert "the other conditions match 6 pending sample(s)" in lines[0]
    assert "--review-status accepted --review-status pending" in lines[0]


def test_an_unfiltered_unreviewed_job_names_the_option_to_pass(cli_env: dict[str, str]) -> None:
    job_id, _ = filtered_job(cli_env["HARDLABEL_DATABASE_URL"], judged=False)
    result = hardlabel("dataset", "create", "cli-unfiltered", "--job", str(job_id))
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: query: no samples match")
    assert "6 pending ones judged by no filter: run a filter first" in lines[0]
    assert '["accepted", "pending"]' in lines[0]
    assert "Traceback" not in result.output
    included = hardlabel(
        "dataset",
        "create",
        "cli-unfiltered",
        "--job",
        str(job_id),
        "--review-status",
        "accepted",
        "--review-status",
        "pending",
    )
    assert included.exit_code == 0, included.output


def test_rest_default_with_require_passed_freezes_the_passed_rows(cli_env: dict[str, str]) -> None:
    job_id, _ = filtered_job(cli_env["HARDLABEL_DATABASE_URL"], judged=True, filter_name="rest_default_check")
    response = httpx.post(
        f"{cli_env['HARDLABEL_API_URL']}/v1/datasets",
        headers={"Authorization": f"Bearer {cli_env['HARDLABEL_TOKEN']}"},
        json={
            "name": "rest-default",
            "query": {"job_ids": [job_id], "require_passed": ["rest_default_check"]},
        },
    )
    assert response.status_code == 202, response.text
    version = response.json()
    deadline = time.monotonic() + 30
    while version["status"] != "succeeded" and time.monotonic() < deadline:  # the worker freezes it
        time.sleep(0.1)
        version = httpx.get(
            f"{cli_env['HARDLABEL_API_URL']}/v1/datasets/{version['id']}",
            headers={"Authorization": f"Bearer {cli_env['HARDLABEL_TOKEN']}"},
        ).json()
    assert version["row_counts"]["teacher"] == 4
