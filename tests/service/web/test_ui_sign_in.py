"""Signing in: the token goes to sessionStorage, the role decides what is shown, bad tokens read well."""

from __future__ import annotations

from playwright.sync_api import BrowserContext, Page, expect

from service.auth import issue_token, revoke_token
from service.db.session import transaction
from tests.service.web.conftest import screenshot, sign_in_as
from tests.service.web.factories import Seeded


def test_sign_in_rejects_a_bad_token_then_signs_in(
    page: Page, seeded: Seeded, page_errors: list[str]
) -> None:
    page.goto("/ui/jobs", wait_until="commit")  # the page sends us on before it has loaded
    expect(page).to_have_url("/ui/sign-in?reason=signed-out&next=%2Fui%2Fjobs")
    expect(page.locator("#sign-in-notice")).to_have_text("Sign in with an API token to continue.")
    screenshot(page, "sign-in")

    page.fill("#token", "hl_not-a-real-token")
    page.click("#sign-in-button")
    expect(page.locator("#problem")).to_contain_text("Sign-in failed: The token is not valid.")

    page.fill("#token", seeded.reviewer_token)
    page.click("#sign-in-button")
    expect(page).to_have_url("/ui/jobs")
    expect(page.locator("#who-role")).to_have_text("reviewer")
    assert page.evaluate("sessionStorage.getItem('hardlabel.token')") == seeded.reviewer_token
    # A reviewer cannot submit or cancel: admin-only controls stay hidden.
    page.goto(f"/ui/jobs/{seeded.running_job}")
    expect(page.locator("#job-facts")).to_contain_text("Samples written")
    expect(page.locator("#cancel-job")).to_be_hidden()

    page.click("#sign-out")
    expect(page).to_have_url(f"/ui/sign-in?reason=signed-out&next=%2Fui%2Fjobs%2F{seeded.running_job}")
    assert page.evaluate("sessionStorage.getItem('hardlabel.token')") is None


def test_a_revoked_or_unknown_token_sends_back_to_sign_in_with_a_reason(
    page: Page, context: BrowserContext, seeded: Seeded, ui_database_url: str, page_errors: list[str]
) -> None:
    with transaction(ui_database_url) as session:
        token, secret = issue_token(session, role="reviewer", name="soon revoked")
    sign_in_as(context, secret)
    page.goto("/ui/jobs")
    expect(page.locator("#who-name")).to_have_text("soon revoked")
    page.goto("about:blank")  # the jobs page polls: leave it, so only the next page meets the revoked token

    with transaction(ui_database_url) as session:
        revoke_token(session, token.id)
    page.goto(f"/ui/samples?job_id={seeded.arithmetic_job}", wait_until="commit")
    expect(page).to_have_url(
        f"/ui/sign-in?reason=expired&next=%2Fui%2Fsamples%3Fjob_id%3D{seeded.arithmetic_job}"
    )
    expect(page.locator("#sign-in-notice")).to_contain_text(
        "no longer accepted (unknown, revoked or expired)"
    )
    expect(page.locator("body")).not_to_contain_text("Traceback")


def test_a_viewer_browses_but_cannot_review(
    page: Page, context: BrowserContext, seeded: Seeded, page_errors: list[str]
) -> None:
    sign_in_as(context, seeded.viewer_token)
    page.goto(f"/ui/samples?job_id={seeded.self_instruct_job}")
    expect(page.locator("#sample-list li").first).to_have_class("current")
    for control in ("#bulk-accept", "#bulk-reject"):
        expect(page.locator(control)).to_be_hidden()
    expect(page.locator("#legend")).to_contain_text("next / previous")
    expect(page.locator("#legend").get_by_text("accept")).to_be_hidden()
    status_before = page.locator("#sample-detail .review-status").inner_text()
    page.keyboard.press("a")
    expect(page.locator("#problem")).to_contain_text("Reviewing needs a reviewer or admin token")
    expect(page.locator("#sample-detail .review-status")).to_have_text(status_before)


def test_a_wrong_token_shows_only_the_error(
    page: Page, page_errors: list[str], console_errors: list[str]
) -> None:
    page.goto("/ui/sign-in?reason=expired&next=%2Fui%2Fsamples")
    notice = page.locator("#sign-in-notice")
    expect(notice).to_be_visible()
    page.fill("#token", "hl_not-a-real-token")
    page.click("#sign-in-button")
    expect(page.locator("#problem")).to_contain_text("Sign-in failed: The token is not valid.")
    expect(notice).to_be_hidden()


def test_sign_out_stays_in_reach_on_a_narrow_screen(
    page: Page, context: BrowserContext, seeded: Seeded, page_errors: list[str], console_errors: list[str]
) -> None:
    page.set_viewport_size({"width": 420, "height": 800})
    sign_in_as(context, seeded.reviewer_token)
    page.goto("/ui/jobs")
    sign_out = page.locator("#sign-out")
    expect(sign_out).to_be_visible()
    expect(sign_out).to_be_in_viewport(ratio=1)
    for link in page.locator(".nav a").all():
        expect(link).to_be_in_viewport(ratio=1)
    width = page.evaluate("document.querySelector('.topbar').scrollWidth")
    assert width <= 420
    sign_out.click()
    expect(page).to_have_url("/ui/sign-in?reason=signed-out&next=%2Fui%2Fjobs")


def test_the_sign_in_page_promises_only_what_the_ui_does(page: Page, page_errors: list[str]) -> None:
    page.goto("/ui/sign-in")
    expect(page.locator(".sign-in")).not_to_contain_text("launch jobs")
    hint = page.locator("#roles")
    expect(hint).to_contain_text("reviewers also")
    expect(hint).to_contain_text("admins also")
    expect(hint).to_contain_text("hardlabel submit")
