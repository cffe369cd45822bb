"""Samples: filters in the URL, keyset pages, keyboard review checked through the API, bulk review."""

from __future__ import annotations

import httpx
from playwright.sync_api import Page, expect

from tests.service.web.conftest import api_ids, samples_url, screenshot
from tests.service.web.factories import Seeded


def listed_ids(page: Page) -> list[int]:
    return [
        int(v)
        for v in page.locator("#sample-list li[data-sample-id]").evaluate_all(
            "items => items.map(li => li.dataset.sampleId)"
        )
    ]


def test_filter_samples_the_url_carries_the_query(
    admin_page: Page, seeded: Seeded, api: httpx.Client
) -> None:
    page = admin_page
    job = seeded.self_instruct_job
    page.goto(f"/ui/samples?job_id={job}")
    expect(page.locator("#sample-list li.current")).to_have_count(1)

    page.fill("#search", "photosynthesis")
    page.check("input[name=review_status][value=rejected]")
    page.fill("input[name=score_max]", "5")
    page.click("#apply-filters")
    expect(page).to_have_url(samples_url(f"job_id={job}&q=photosynthesis&review_status=rejected&score_max=5"))
    expected = api_ids(api, job_id=job, q="photosynthesis", review_status="rejected", score_max=5)
    assert expected, "the seed has rejected low-score photosynthesis samples"
    expect(page.locator("#sample-list li[data-sample-id]")).to_have_count(len(expected))
    assert listed_ids(page) == expected
    expect(page.locator("#sample-detail")).to_contain_text("Photosynthesis")
    expect(page.locator("#sample-detail .verdicts li")).to_have_count(3)
    expect(page.locator("#sample-detail .verdicts")).to_contain_text("score 5 < min 6")

    # A shared or reloaded link shows the same query and the same samples.
    page.reload()
    expect(page.locator("#search")).to_have_value("photosynthesis")
    expect(page.locator("input[name=review_status][value=rejected]")).to_be_checked()
    expect(page.locator("#sample-list li[data-sample-id]")).to_have_count(len(expected))

    # Verdict conditions: everything near_dup failed, with the reason on the sample.
    page.goto(f"/ui/samples?job_id={job}&failed=near_dup")
    failed = api_ids(api, job_id=job, failed="near_dup")
    expect(page.locator("#sample-list li[data-sample-id]")).to_have_count(len(failed))
    assert listed_ids(page) == failed
    expect(page.locator("#sample-detail [data-filter=near_dup]")).to_contain_text("near-duplicate of sample")

    # Charts over the query, opened on demand.
    page.click("#stats-panel summary")
    expect(page.locator("#match-count")).to_have_text(f"{len(failed)} matching")
    expect(page.locator("#chart-filters rect.fail").nth(2)).to_have_attribute("data-count", str(len(failed)))


def test_bad_query_strings_read_as_messages(admin_page: Page, seeded: Seeded) -> None:
    page = admin_page
    page.goto(f"/ui/samples?job_id={seeded.self_instruct_job}&score_min=high")
    expect(page.locator("#problem")).to_contain_text("score_min")
    expect(page.locator("#sample-detail")).to_contain_text("fix the query above")
    page.goto(f"/ui/samples?job_id={seeded.self_instruct_job}&score_min=9&score_max=2")
    expect(page.locator("#problem")).to_contain_text("score_min (9.0) is larger than score_max (2.0)")
    page.goto("/ui/samples?cursor=not-ours")
    expect(page.locator("#problem")).to_contain_text("cursor: not a cursor returned by this API")
    page.goto("/ui/samples/424242424")
    expect(page.locator("#problem")).to_contain_text("sample 424242424 does not exist")
    expect(page.locator("body")).not_to_contain_text("Traceback")


def test_keyset_pages_next_and_previous(admin_page: Page, seeded: Seeded, api: httpx.Client) -> None:
    page = admin_page
    job = seeded.self_instruct_job
    everything = api_ids(api, job_id=job)
    page.goto(f"/ui/samples?job_id={job}")
    expect(page.locator("#page-label")).to_have_text("1–25")
    assert listed_ids(page) == everything[:25]
    page.click("#next-page")
    expect(page.locator("#page-label")).to_have_text(f"26–{len(everything)}")
    assert listed_ids(page) == everything[25:]
    assert "cursor=" in page.url
    page.reload()  # the page (cursor) survives a reload
    expect(page.locator("#page-label")).to_have_text(f"26–{len(everything)}")
    # k on the first sample of a page goes back to the previous page's last sample.
    page.keyboard.press("k")
    expect(page.locator("#page-label")).to_have_text("1–25")
    expect(page.locator("#sample-list li.current")).to_have_attribute("data-sample-id", str(everything[24]))
    page.keyboard.press("j")
    expect(page.locator("#sample-list li.current")).to_have_attribute("data-sample-id", str(everything[25]))


def test_keyboard_review_of_three_samples_reaches_the_api(
    reviewer_page: Page, seeded: Seeded, api: httpx.Client
) -> None:
    page = reviewer_page
    job = seeded.review_job  # a job no other test reviews
    first, second, third = api_ids(api, job_id=job, review_status="pending")[:3]
    page.goto(f"/ui/samples?job_id={job}&review_status=pending")
    expect(page.locator("#sample-list li.current")).to_have_attribute("data-sample-id", str(first))
    expect(page.locator("#legend")).to_contain_text("accept")

    page.keyboard.press("a")  # accept, move on
    expect(page.locator(f"#sample-list li[data-sample-id='{first}'] .badge")).to_have_text("accepted")
    expect(page.locator("#sample-list li.current")).to_have_attribute("data-sample-id", str(second))
    page.keyboard.press("r")  # reject, move on
    expect(page.locator(f"#sample-list li[data-sample-id='{second}'] .badge")).to_have_text("rejected")
    expect(page.locator("#sample-list li.current")).to_have_attribute("data-sample-id", str(third))

    teacher_answer = api.get(f"/v1/samples/{third}").json()["answer"]
    page.keyboard.press("e")  # edit inline
    editor = page.locator("#edit-answer")
    expect(editor).to_be_focused()
    expect(editor).to_have_value(teacher_answer)
    editor.fill(f"The answer is {teacher_answer}.")
    editor.press("Control+Enter")
    expect(page.locator("#sample-detail .compare .original")).to_contain_text(teacher_answer)
    expect(page.locator("#sample-detail .compare .edited")).to_contain_text(
        f"The answer is {teacher_answer}."
    )
    page.keyboard.press("t")
    page.locator("#tag-input").fill("checked arithmetic")
    page.locator("#tag-input").press("Enter")
    expect(page.locator("#sample-detail .tags")).to_contain_text("arithmetic")
    page.keyboard.press("n")
    page.locator("#note-input").fill("teacher phrased it as a bare number")
    page.locator("#note-input").press("Control+Enter")
    expect(page.locator("#sample-detail .note")).to_contain_text("bare number")
    screenshot(page, "samples-review")
    page.keyboard.press("?")
    expect(page.locator("#help-dialog")).to_be_visible()
    page.keyboard.press("Escape")
    expect(page.locator("#help-dialog")).to_be_hidden()

    accepted = api.get(f"/v1/samples/{first}").json()
    assert accepted["review_status"] == "accepted"
    assert accepted["reviewed_by"] == seeded.reviewer_id
    assert api.get(f"/v1/samples/{second}").json()["review_status"] == "rejected"
    edited = api.get(f"/v1/samples/{third}").json()
    assert edited["answer"] == f"The answer is {teacher_answer}."
    assert edited["teacher_answer"] == teacher_answer
    assert [(r["field"], r["old_text"], r["new_text"]) for r in edited["revisions"]] == [
        ("answer", teacher_answer, f"The answer is {teacher_answer}.")
    ]
    assert edited["tags"] == ["checked", "arithmetic"]
    assert edited["note"] == "teacher phrased it as a bare number"
    assert edited["review_status"] == "pending"

    page.keyboard.press("u")  # back to pending keeps the edit
    expect(page.locator("#sample-detail .review-status")).to_have_text("pending")


def test_bulk_reject_confirms_with_the_count(admin_page: Page, seeded: Seeded, api: httpx.Client) -> None:
    page = admin_page
    job = seeded.arithmetic_job
    wrong = api_ids(api, job_id=job, failed="verifier")
    assert len(wrong) == 4
    page.goto(f"/ui/samples?job_id={job}&failed=verifier")
    expect(page.locator("#sample-list li[data-sample-id]")).to_have_count(4)

    page.click("#bulk-reject")
    expect(page.locator("#confirm-dialog")).to_be_visible()
    expect(page.locator("#confirm-title")).to_have_text("Reject 4 samples?")
    expect(page.locator("#confirm-text")).to_contain_text(f"job {job}, failed verifier")
    before = [api.get(f"/v1/samples/{sid}").json()["review_status"] for sid in wrong]
    page.click("#confirm-cancel")
    expect(page.locator("#confirm-dialog")).to_be_hidden()
    assert [api.get(f"/v1/samples/{sid}").json()["review_status"] for sid in wrong] == before

    page.click("#bulk-reject")
    page.click("#confirm-ok")
    expect(page.locator(".toast")).to_contain_text("changed of 4 matching")
    for sid in wrong:
        expect(page.locator(f"#sample-list li[data-sample-id='{sid}'] .badge")).to_have_text("rejected")
        assert api.get(f"/v1/samples/{sid}").json()["review_status"] == "rejected"


def test_a_sample_reads_its_item_as_a_whole_number_and_its_reviewer_by_name(
    admin_page: Page, seeded: Seeded, api: httpx.Client, console_errors: list[str]
) -> None:
    listed = api.get(
        "/v1/samples",
        params={
            "job_id": seeded.self_instruct_job,
            "stage": "answer",
            "review_status": "accepted",
            "limit": 200,
        },
    ).json()["items"]
    sample = next(s for s in listed if s["item_index"] > 0 and s["sample_index"] == 0)
    assert sample["reviewed_by"] == seeded.reviewer_id
    page = admin_page
    page.goto(f"/ui/samples/{sample['id']}")
    head = page.locator("#sample-detail .sample-head")
    expect(head).to_contain_text(f"item {sample['item_index']}")
    expect(head).not_to_contain_text(f"item {sample['item_index']}.")
    expect(head).to_contain_text("reviewed by rui (reviewer)")
    expect(head).not_to_contain_text(f"#{seeded.reviewer_id}")
