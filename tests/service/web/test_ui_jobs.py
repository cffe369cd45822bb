"""Jobs: the live list, a job's page (recipe, teacher, counts, charts, events), unknown ids."""

from __future__ import annotations

import re

from playwright.sync_api import Page, expect
from sqlalchemy import update

from service.db.models import Job
from service.db.session import transaction
from tests.service.web.conftest import samples_url, screenshot
from tests.service.web.factories import Seeded


def test_jobs_list_shows_status_progress_and_updates_live(
    admin_page: Page, seeded: Seeded, ui_database_url: str
) -> None:
    page = admin_page
    page.goto("/ui/jobs")
    rows = page.locator("#jobs-table tbody tr")
    expect(rows).to_have_count(4)
    running = page.locator(f"#jobs-table tr[data-job-id='{seeded.running_job}']")
    expect(running.locator(".badge")).to_have_text("running")
    expect(running).to_contain_text("185 / 500 items · 37%")
    expect(running.locator("td").nth(6)).to_contain_text("items/s")
    expect(running.locator("td").nth(7)).to_have_text(re.compile(r"\d+ (s|min)"))  # an ETA
    expect(page.locator("#live")).to_be_visible()
    screenshot(page, "jobs")

    # The worker moves on: the page polls and shows it without a reload.
    with transaction(ui_database_url) as session:
        session.execute(
            update(Job).where(Job.id == seeded.running_job).values(items_done=250, samples_written=250)
        )
    try:
        expect(running).to_contain_text("250 / 500 items · 50%", timeout=10_000)
    finally:
        with transaction(ui_database_url) as session:
            session.execute(
                update(Job).where(Job.id == seeded.running_job).values(items_done=185, samples_written=185)
            )

    page.select_option("#status-filter", "succeeded")
    expect(page).to_have_url("/ui/jobs?status=succeeded")
    expect(rows).to_have_count(3)


def test_job_page_shows_recipe_teacher_counts_charts_and_events(admin_page: Page, seeded: Seeded) -> None:
    page = admin_page
    page.goto("/ui/jobs")
    page.click(f"#jobs-table tr[data-job-id='{seeded.self_instruct_job}'] a.job-link")
    expect(page).to_have_url(f"/ui/jobs/{seeded.self_instruct_job}")
    expect(page.locator("#job-status")).to_have_text("succeeded")
    expect(page.locator("#recipe")).to_contain_text("self-instruct v1")
    expect(page.locator("#recipe tbody tr")).to_have_count(2)  # answer and judge stages
    expect(page.locator("#teacher")).to_contain_text("/models/qwen-teacher")
    expect(page.locator("#counts-stage")).to_contain_text("answer")
    expect(page.locator("#counts-stage")).to_contain_text("48")
    # Review progress: 19 accepted + 11 rejected of 48 (the seed reviewed the first 30).
    expect(page.locator("#chart-review")).to_contain_text("accepted 19")
    expect(page.locator("#chart-review")).to_contain_text("pending 18")
    for name in ("judge_score", "length", "near_dup"):
        expect(page.locator("#chart-filters")).to_contain_text(name)
    near_dup_failed = page.locator("#chart-filters rect.fail").nth(2)
    expect(near_dup_failed).to_have_attribute("data-count", "4")
    bars = page.locator("#chart-length rect.bar-rect")
    assert bars.count() > 3
    assert sum(int(bars.nth(i).get_attribute("data-count") or 0) for i in range(bars.count())) == 48
    expect(page.locator("#chart-score rect.bar-rect").first).to_be_visible()
    expect(page.locator("#events li")).to_have_count(6)
    expect(page.locator("#shards tbody tr")).to_have_count(2)
    screenshot(page, "job", full_page=True)

    page.click("#exact-counts")
    summary = page.locator("#exact-summary")
    expect(summary).to_contain_text("passed near_dup")
    expect(summary.locator("tbody tr").first).to_contain_text("48")

    page.click("#browse-samples")
    expect(page).to_have_url(samples_url(f"job_id={seeded.self_instruct_job}"))


def test_unknown_or_malformed_job_ids_read_as_messages(admin_page: Page) -> None:
    page = admin_page
    page.goto("/ui/jobs/987654321")
    expect(page.locator("#problem")).to_contain_text("job 987654321")
    expect(page.locator("#problem")).to_contain_text("Not Found")

    response = page.goto("/ui/jobs/not-a-number")
    assert response is not None
    assert response.status == 404
    expect(page.locator("#not-found-message")).to_contain_text("is not a job id")

    response = page.goto("/ui/no-such-page")
    assert response is not None
    assert response.status == 404
    expect(page.locator("#not-found-message")).to_contain_text("There is no page at /ui/no-such-page")
    expect(page.locator("body")).not_to_contain_text("Traceback")


def test_an_unknown_job_shows_only_its_error(admin_page: Page, console_errors: list[str]) -> None:
    page = admin_page
    page.goto("/ui/jobs/999999")
    expect(page.locator("#problem")).to_be_visible()
    expect(page.locator("#problem")).to_contain_text("job 999999 does not exist")
    # No empty cards, and nothing to click that would lead to more errors.
    expect(page.locator("main .card:visible")).to_have_count(0)
    expect(page.locator("main button:visible, main a.button:visible")).to_have_count(0)
    expect(page.locator("#browse-samples")).to_be_hidden()
