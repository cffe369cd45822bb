"""Curate: accept by query, freeze a version from the current query (count and split shown first),
see its lineage and digest, download an export."""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx
from playwright.sync_api import Page, expect

from tests.service.web.conftest import api_ids, run_freeze_worker, samples_url, screenshot
from tests.service.web.factories import Seeded


def test_create_a_version_from_the_current_query_and_export_it(
    admin_page: Page, seeded: Seeded, api: httpx.Client, tmp_path: Path, ui_database_url: str
) -> None:
    page = admin_page
    job = seeded.arithmetic_job
    # Accept what the verifier passed and nobody has reviewed yet, by query.
    to_accept = api_ids(api, job_id=job, passed="verifier", review_status="pending")
    page.goto(f"/ui/samples?job_id={job}&passed=verifier&review_status=pending")
    page.click("#bulk-accept")
    expect(page.locator("#confirm-title")).to_have_text(f"Accept {len(to_accept)} samples?")
    page.click("#confirm-ok")
    expect(page.locator(".toast")).to_contain_text(f"of {len(to_accept)} matching")
    # The page reloads the query (now matching nothing) before the filters are changed.
    expect(page.locator("#sample-list")).to_contain_text("No samples match this query.")

    # The query a version is made from: accepted samples that passed the verifier.
    page.uncheck("input[name=review_status][value=pending]")
    page.check("input[name=review_status][value=accepted]")
    page.click("#apply-filters")
    expect(page).to_have_url(samples_url(f"job_id={job}&review_status=accepted&passed=verifier"))
    expected_rows = len(api_ids(api, job_id=job, passed="verifier", review_status="accepted"))
    assert expected_rows >= len(to_accept) > 0
    page.click("#freeze-version")

    expect(page.locator("#new-version")).to_be_visible()
    expect(page.locator("#version-form [name=job_ids]")).to_have_value(str(job))
    expect(page.locator("#version-form [name=require_passed]")).to_have_value("verifier")
    expect(page.locator("#version-form [name=review_status]")).to_have_value("accepted")
    expect(page.locator("#dropped-conditions")).to_be_hidden()
    page.fill("#version-form [name=name]", "arithmetic-verified")
    page.fill("#version-form [name=test_fraction]", "0.2")
    page.fill("#version-form [name=seed]", "3")
    page.click("#preview-version")
    test_rows = round(expected_rows * 0.2)
    expect(page.locator("#preview-rows")).to_have_text(str(expected_rows))
    expect(page.locator("#preview-train")).to_have_text(str(expected_rows - test_rows))
    expect(page.locator("#preview-test")).to_have_text(str(test_rows))
    expect(page.locator("#preview-stage")).to_have_text("answer")
    assert (
        api.get("/v1/datasets", params={"name": "arithmetic-verified"}).json()["total"] == 0
    )  # nothing stored yet
    screenshot(page, "curate")

    page.click("#create-version")
    expect(page.locator("#confirm-title")).to_have_text(
        f"Create “arithmetic-verified” with {expected_rows} rows?"
    )
    expect(page.locator("#confirm-text")).to_contain_text(
        f"{expected_rows - test_rows} train and {test_rows} test"
    )
    page.click("#confirm-ok")
    expect(page).to_have_url(re.compile(r"/ui/datasets/\d+$"))
    expect(page.locator("#version-title")).to_have_text("arithmetic-verified v1")
    # A worker freezes it: the page shows it pending until then, and the version once it is done.
    expect(page.locator("#version-status")).to_have_text("queued")
    expect(page.locator("#version-progress-text")).to_contain_text("waiting for a worker")
    expect(page.locator("#export-download")).to_be_disabled()
    run_freeze_worker(ui_database_url)
    expect(page.locator("#version-freeze")).to_be_hidden()
    expect(page.locator("#export-download")).to_be_enabled()

    stored = api.get("/v1/datasets", params={"name": "arithmetic-verified"}).json()["items"]
    assert len(stored) == 1
    version = stored[0]
    assert version["row_counts"]["total"] == expected_rows
    assert version["row_counts"]["test"] == test_rows
    assert version["query"]["query"]["require_passed"] == ["verifier"]
    assert version["query"]["query"]["job_ids"] == [job]
    expect(page.locator("#version-digest")).to_have_text(version["digest"])
    expect(page.locator("#lineage")).to_contain_text(f"job #{job}")
    expect(page.locator("#lineage")).to_contain_text("verifier")

    with page.expect_download() as download_info:
        page.click("#export-download")
    target = tmp_path / "train.jsonl"
    download_info.value.save_as(target)
    lines = [json.loads(line) for line in target.read_text().splitlines()]
    assert len(lines) == expected_rows - test_rows
    assert set(lines[0]) >= {"prompt", "completion"}
    expect(page.locator("#export-status")).to_contain_text(
        "Downloaded arithmetic-verified-v1-prompt_completion-train.jsonl"
    )

    page.goto("/ui/datasets")
    expect(page.locator(f"#versions tr[data-dataset-id='{version['id']}']")).to_contain_text(
        version["digest"][:12]
    )


def test_conditions_a_version_cannot_take_are_named(admin_page: Page, seeded: Seeded) -> None:
    page = admin_page
    page.goto(f"/ui/datasets?job_id={seeded.self_instruct_job}&q=photosynthesis&score_min=6&new=1")
    expect(page.locator("#dropped-conditions")).to_contain_text(
        "text search (photosynthesis), minimum score (6)"
    )
    page.fill("#version-form [name=job_ids]", "abc")
    page.click("#preview-version")
    expect(page.locator("#problem")).to_contain_text("query.job_ids")
