"""The job page's usage card: tokens, samples/s, cost from the teacher's price, the estimate, the budget."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import Page, expect
from sqlalchemy import select, update

from service.db.models import Job
from service.db.session import transaction
from tests.service.web.factories import Seeded

PRICE = {"input": 2.0, "output": 10.0}
ESTIMATE = {
    "items": 500,
    "requests": 500,
    "prompt_tokens": 10_000,
    "completion_tokens": 128_000,
    "completion_tokens_bounded": True,
}


@pytest.fixture
def priced_job(seeded: Seeded, ui_database_url: str) -> Iterator[int]:
    """The seeded running job with a price, a budget, an estimate and token counts (restored after)."""
    job_id = seeded.running_job
    columns = (Job.teachers, Job.params, Job.tokens_in, Job.tokens_out)
    with transaction(ui_database_url) as session:
        row = session.execute(select(*columns).where(Job.id == job_id)).one()
        before: dict[str, Any] = dict(row._mapping)
        session.execute(
            update(Job)
            .where(Job.id == job_id)
            .values(
                teachers=[{**before["teachers"][0], "price_per_million_tokens": PRICE}],
                params={**before["params"], "budget": {"max_cost": 2.0}, "estimate": ESTIMATE},
                tokens_in=300_000,
                tokens_out=45_000,
            )
        )
    try:
        yield job_id
    finally:
        with transaction(ui_database_url) as session:
            session.execute(update(Job).where(Job.id == job_id).values(**before))


def test_job_page_shows_cost_estimate_and_budget(admin_page: Page, priced_job: int) -> None:
    page = admin_page
    page.goto(f"/ui/jobs/{priced_job}")
    usage = page.locator("#job-usage")
    # 300,000 x 2 / 1e6 + 45,000 x 10 / 1e6
    expect(usage).to_contain_text("Cost1.05")
    expect(usage).to_contain_text("300,000 / 45,000")
    expect(usage).to_contain_text("≤ 128.0k completion")
    expect(usage).to_contain_text("cost ~1.3")  # 10,000 x 2 / 1e6 + 128,000 x 10 / 1e6
    expect(usage).to_contain_text("max cost 2")
    row = page.locator("#usage-teachers tbody tr")
    expect(row).to_have_count(1)
    expect(row).to_contain_text("2 / 10")
    expect(row.locator("td").last).to_have_text("1.05")


def test_an_unpriced_job_says_so(admin_page: Page, seeded: Seeded) -> None:
    page = admin_page
    page.goto(f"/ui/jobs/{seeded.self_instruct_job}")
    expect(page.locator("#job-usage")).to_contain_text("no price set")
    expect(page.locator("#usage-teachers tbody tr td").last).to_have_text("–")
