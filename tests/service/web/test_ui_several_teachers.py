"""A job with several teachers: its page names each teacher and shows their answers side by side."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import Page, expect
from sqlalchemy import delete

from service.db.models import Job, Recipe, Sample
from service.db.session import transaction
from tests.factories import add_job, add_recipe
from tests.service.web.conftest import screenshot
from tests.service.web.factories import Seeded

TEACHERS = [{"model": "/models/teacher-a", "engine": "vllm"}, {"model": "served-b", "engine": "openai"}]
# Per item: question, teacher a's answer, teacher b's answer.
ITEMS = [("What is 2+2?", "4", "4"), ("What is 2+3?", "5", "6"), ("What is 3+4?", "7", "7.")]


@pytest.fixture
def two_teacher_job(seeded: Seeded, ui_database_url: str) -> Iterator[int]:
    """A finished job whose two teachers agree on items 0 and 2 (removed after: other tests count jobs)."""
    with transaction(ui_database_url) as session:
        recipe = add_recipe(session, {"stages": [{"name": "answer"}]})
        job = add_job(
            session,
            recipe,
            status="succeeded",
            teachers=TEACHERS,
            answer_stage="answer",
            items_total=2 * len(ITEMS),
            items_done=2 * len(ITEMS),
            samples_written=2 * len(ITEMS),
            teacher_usage={
                str(t): {"items_done": 3, "samples": 3, "tokens_in": 30, "tokens_out": 6} for t in (0, 1)
            },
        )
        for index, (question, *answers) in enumerate(ITEMS):
            for teacher, answer in enumerate(answers):
                session.add(
                    Sample(
                        job_id=job.id,
                        item_index=index,
                        stage="answer",
                        sample_index=0,
                        teacher_index=teacher,
                        question=question,
                        answer=answer,
                        raw_text=answer,
                        parse_status="ok",
                    )
                )
        job_id, recipe_id = job.id, recipe.id
    try:
        yield job_id
    finally:
        with transaction(ui_database_url) as session:
            session.execute(delete(Job).where(Job.id == job_id))
            session.execute(delete(Recipe).where(Recipe.id == recipe_id))


def test_job_page_shows_teachers_side_by_side(admin_page: Page, two_teacher_job: int) -> None:
    page = admin_page
    page.goto(f"/ui/jobs/{two_teacher_job}")
    expect(page.locator("#teacher-heading")).to_have_text("Teachers (2)")
    expect(page.locator("#teacher")).to_contain_text("/models/teacher-a")
    expect(page.locator("#teacher")).to_contain_text("served-b")
    card = page.locator("#side-by-side")
    expect(card).to_be_visible()
    expect(card.locator("thead th")).to_have_text(
        ["Item", "Question", "0: /models/teacher-a", "1: served-b", "Teachers"]
    )
    rows = card.locator("tbody tr")
    expect(rows).to_have_count(3)
    expect(rows.nth(1)).to_contain_text("What is 2+3?")
    expect(rows.nth(1).locator("td").nth(2)).to_have_text("5")
    expect(rows.nth(1).locator("td").nth(3)).to_have_text("6")
    expect(card.locator("td.agree")).to_have_text(["agree", "differ", "agree"])
    expect(page.locator("#side-by-side-note")).to_have_text("3 of 3 items · 2 agree (normalised)")
    expect(page.locator("#side-by-side-more")).to_be_hidden()
    expect(page.locator("#usage-teachers tbody tr")).to_have_count(2)
    expect(page.locator("#usage-teachers tbody tr").nth(1)).to_contain_text("1: served-b (openai)")
    screenshot(page, "job-side-by-side")


def test_a_one_teacher_job_has_no_side_by_side(admin_page: Page, seeded: Seeded) -> None:
    page = admin_page
    page.goto(f"/ui/jobs/{seeded.self_instruct_job}")
    expect(page.locator("#teacher-heading")).to_have_text("Teacher")
    expect(page.locator("#recipe")).to_contain_text("self-instruct v1")
    expect(page.locator("#side-by-side")).to_be_hidden()
