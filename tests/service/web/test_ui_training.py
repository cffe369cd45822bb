"""Training: the runs list, a run's page with its loss curve (live), the student-vs-teacher table,
and launching a run on a version (admins only)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from playwright.sync_api import BrowserContext, Page, expect

from service.db.models import Event, TrainingMetric, TrainingRun
from service.db.session import transaction
from tests.service.web.conftest import screenshot, sign_in_as
from tests.service.web.factories import EVALUATION_ITEMS, Seeded, loss_curve, student_wrong, teacher_wrong


def path_points(page: Page, selector: str) -> int:
    """Points in an SVG path's d attribute (one M or L command each)."""
    d = page.locator(selector).get_attribute("d") or ""
    return len(re.findall(r"[ML]-?\d", d))


def test_run_page_draws_the_loss_curve_and_the_evaluation(admin_page: Page, seeded: Seeded) -> None:
    page = admin_page
    page.goto("/ui/training")
    page.click(f"#runs tr[data-run-id='{seeded.training_run}'] a.run-link")
    expect(page).to_have_url(f"/ui/training/{seeded.training_run}")
    expect(page.locator("#run-status")).to_have_text("succeeded")
    loss = page.locator("#loss-chart path.series-loss")
    expect(loss).to_have_attribute("data-points", "60")  # steps 2, 4, …, 120
    assert path_points(page, "#loss-chart path.series-loss") == 60
    expect(page.locator("#loss-chart path.series-eval_loss")).to_have_attribute("data-points", "12")
    expect(page.locator("#loss-chart circle.dot-loss")).to_have_count(60)
    expect(page.locator("#evaluation")).to_contain_text("95.5%")
    expect(page.locator("#evaluation")).to_contain_text("93.0%")
    expect(page.locator("#evaluation")).to_contain_text("Student reaches 97.4% of the teacher's accuracy")
    expect(page.locator("#checkpoints li")).to_have_count(2)
    expect(page.locator("#events li")).to_have_count(7)
    screenshot(page, "training-run", full_page=True)

    page.goto("/ui/training/99999999")
    expect(page.locator("#problem")).to_contain_text("training run 99999999 does not exist")
    page.goto("/ui/datasets/99999999")
    expect(page.locator("#problem")).to_contain_text("dataset version 99999999 does not exist")


def test_a_running_runs_loss_curve_grows_live(admin_page: Page, seeded: Seeded, ui_database_url: str) -> None:
    assert seeded.dataset_id is not None
    curve = loss_curve(40, 2, 10)
    with transaction(ui_database_url) as session:
        run = TrainingRun(
            dataset_id=seeded.dataset_id,
            status="running",
            student={"model": "/models/student-tiny"},
            method="lora",
            config={"method": "lora"},
            step=10,
            total_steps=40,
            started_at=datetime.now(UTC),
        )
        session.add(run)
        session.flush()
        run_id = run.id
        session.add_all(
            TrainingMetric(training_run_id=run_id, step=row["step"], data=row) for row in curve[:5]
        )
    page = admin_page
    page.goto(f"/ui/training/{run_id}")
    expect(page.locator("#run-status")).to_have_text("running")
    expect(page.locator("#loss-chart path.series-loss")).to_have_attribute("data-points", "5")
    with transaction(ui_database_url) as session:
        session.add_all(
            TrainingMetric(training_run_id=run_id, step=row["step"], data=row) for row in curve[5:12]
        )
        session.get_one(TrainingRun, run_id).step = 24
    expect(page.locator("#loss-chart path.series-loss")).to_have_attribute(
        "data-points", "12", timeout=10_000
    )
    expect(page.locator("#loss-chart path.series-eval_loss")).to_have_attribute("data-points", "2")
    expect(page.locator("#run-progress-text")).to_contain_text("step 24 / 40")
    with transaction(ui_database_url) as session:
        session.get_one(TrainingRun, run_id).status = "cancelled"


def test_admins_launch_a_run_and_bad_settings_read_as_messages(
    admin_page: Page, seeded: Seeded, api: httpx.Client
) -> None:
    page = admin_page
    page.goto(f"/ui/training?dataset_id={seeded.dataset_id}#launch")
    form = page.locator("#launch-form")
    expect(form.locator("[name=dataset_id]")).to_have_value(str(seeded.dataset_id))
    form.locator("[name=learning_rate]").fill("fast")
    page.click("#launch-run")
    expect(page.locator("#problem")).to_contain_text("hyperparameters.learning_rate")

    form.locator("[name=learning_rate]").fill("0.001")
    form.locator("[name=max_steps]").fill("5")
    page.click("#launch-run")
    # The version's teacher folder does not exist here: scoring against it is refused up front.
    expect(page.locator("#problem")).to_contain_text("evaluation.teacher.model")
    form.locator("[name=evaluate]").uncheck()
    page.click("#launch-run")
    expect(page).to_have_url(re.compile(r"/ui/training/\d+$"))
    run_id = int(page.url.rsplit("/", 1)[1])
    expect(page.locator("#run-status")).to_have_text("queued")
    stored = api.get(f"/v1/training-runs/{run_id}").json()
    assert stored["config"]["learning_rate"] == 0.001
    assert stored["config"]["max_steps"] == 5
    assert "model" not in stored["student"]
    assert stored["student"]["from_scratch"]["layers"] == 4

    page.once("dialog", lambda dialog: dialog.accept())
    page.click("#cancel-run")
    expect(page.locator("#run-status")).to_have_text("cancelled")
    assert api.get(f"/v1/training-runs/{run_id}").json()["status"] == "cancelled"


def test_viewers_get_no_launch_form(
    page: Page, context: BrowserContext, seeded: Seeded, page_errors: list[str]
) -> None:
    sign_in_as(context, seeded.viewer_token)
    page.goto("/ui/training#launch")
    expect(page.locator(f"#runs tr[data-run-id='{seeded.training_run}']")).to_be_visible()
    expect(page.locator("#show-launch")).to_be_hidden()
    expect(page.locator("#launch")).to_be_hidden()


def test_run_page_lists_every_scored_item_with_filters_and_paging(admin_page: Page, seeded: Seeded) -> None:
    page = admin_page
    page.goto(f"/ui/training/{seeded.training_run}")
    rows = page.locator("#eval-items tr")
    expect(page.locator("#eval-items-range")).to_have_text(f"1–20 of {EVALUATION_ITEMS}")
    expect(rows).to_have_count(20)
    first = rows.nth(0).locator("td")
    expect(first.nth(1)).to_have_text("What is 0+10?")
    expect(first.nth(2)).to_have_text("10")
    expect(first.nth(3)).to_have_attribute("data-correct", "true")
    expect(first.nth(3)).to_contain_text("10")
    expect(first.nth(5)).to_have_attribute("data-correct", "false")  # the student's every 7th item
    expect(first.nth(5)).to_contain_text("1")
    expect(page.locator("#eval-items-previous")).to_be_disabled()

    page.click("#eval-items-next")
    expect(page.locator("#eval-items-range")).to_have_text(f"21–40 of {EVALUATION_ITEMS}")
    expect(rows.nth(0)).to_have_attribute("data-index", "20")
    page.click("#eval-items-next")
    expect(page.locator("#eval-items-range")).to_have_text(f"41–45 of {EVALUATION_ITEMS}")
    expect(rows).to_have_count(5)
    expect(page.locator("#eval-items-next")).to_be_disabled()

    page.select_option("#eval-items-filter", "disagreements")
    disagreements = [i for i in range(EVALUATION_ITEMS) if teacher_wrong(i) or student_wrong(i)]
    expect(page.locator("#eval-items-range")).to_have_text(f"1–{len(disagreements)} of {len(disagreements)}")
    assert [int(i) for i in rows.evaluate_all("rows => rows.map(r => r.dataset.index)")] == disagreements
    expect(page.locator("#eval-items tr.disagreement")).to_have_count(len(disagreements))
    screenshot(page, "training-run-items", full_page=True)

    page.select_option("#eval-items-filter", "teacher_wrong")
    expect(rows).to_have_count(sum(teacher_wrong(i) for i in range(EVALUATION_ITEMS)))
    expect(page.locator("#eval-items td:nth-child(4)[data-correct=false]")).to_have_count(rows.count())

    # The filter is in the URL: a reload (or a shared link) shows the same view.
    page.goto(f"/ui/training/{seeded.training_run}?items=student_wrong")
    expect(page.locator("#eval-items-filter")).to_have_value("student_wrong")
    expect(rows).to_have_count(sum(student_wrong(i) for i in range(EVALUATION_ITEMS)))


def test_a_run_without_scored_items_says_so(admin_page: Page, seeded: Seeded, ui_database_url: str) -> None:
    assert seeded.dataset_id is not None
    with transaction(ui_database_url) as session:
        run = TrainingRun(
            dataset_id=seeded.dataset_id,
            status="cancelled",
            student={"model": "/models/student-tiny"},
            method="full",
            config={"method": "full"},
        )
        session.add(run)
        session.flush()
        run_id = run.id
    admin_page.goto(f"/ui/training/{run_id}?items=disagreements")
    expect(admin_page.locator("#eval-items")).to_contain_text(
        "Teacher and trained student agree on every item."
    )
    expect(admin_page.locator("#eval-items-next")).to_be_disabled()


def _run(ui_database_url: str, dataset_id: int | None, status: str, results: dict[str, Any] | None) -> int:
    assert dataset_id is not None
    with transaction(ui_database_url) as session:
        run = TrainingRun(
            dataset_id=dataset_id,
            status=status,
            student={"model": "/models/student-tiny"},
            method="full",
            config={"method": "full"},
            results=results,
            started_at=datetime.now(UTC),
        )
        session.add(run)
        session.flush()
        return run.id


def _score(model: str, correct: int) -> dict[str, Any]:
    return {"model": model, "items": 20, "correct": correct, "accuracy": correct / 20}


def test_a_finished_run_whose_teacher_scored_0_has_no_ratio_and_says_why(
    admin_page: Page, seeded: Seeded, ui_database_url: str, console_errors: list[str]
) -> None:
    results = {
        "items": 20,
        "scorer": "numeric",
        "source": "test split",
        "teacher": _score("/models/teacher", 0),
        "student_before": _score("/models/student-tiny", 0),
        "student_after": _score("/runs/final", 2),
        "ratio": None,
        "examples": [],
    }
    finished = _run(ui_database_url, seeded.dataset_id, "succeeded", results)
    page = admin_page
    page.goto(f"/ui/training/{finished}")
    expect(page.locator("#evaluation")).to_contain_text("Ratio: n/a (teacher scored 0)")
    expect(page.locator("#evaluation")).not_to_contain_text("pending")

    # Still being scored: the ratio is pending indeed.
    unfinished = _run(
        ui_database_url, seeded.dataset_id, "running", {**results, "teacher": _score("/models/teacher", 9)}
    )
    try:
        page.goto(f"/ui/training/{unfinished}")
        expect(page.locator("#evaluation")).to_contain_text("Ratio: pending")
    finally:
        with transaction(ui_database_url) as session:
            session.get_one(TrainingRun, unfinished).status = "cancelled"


def test_the_newest_run_events_are_in_sight(
    admin_page: Page, seeded: Seeded, ui_database_url: str, console_errors: list[str]
) -> None:
    run_id = _run(ui_database_url, seeded.dataset_id, "succeeded", None)
    now = datetime.now(UTC)
    with transaction(ui_database_url) as session:
        session.add_all(
            Event(
                training_run_id=run_id,
                kind="checkpoint",
                message=f"checkpoint-{i} saved",
                created_at=now - timedelta(seconds=60 - i),
            )
            for i in range(40)
        )
        session.add(Event(training_run_id=run_id, kind="finished", message="the very last event"))
    page = admin_page
    page.goto(f"/ui/training/{run_id}")
    events = page.locator("#events")
    expect(events.locator("li")).to_have_count(41)
    latest = events.locator("li", has_text="the very last event")
    events.scroll_into_view_if_needed()
    expect(latest).to_be_in_viewport(ratio=1)
    box, item = events.bounding_box(), latest.bounding_box()
    assert box is not None
    assert item is not None
    assert box["y"] <= item["y"]
    assert item["y"] + item["height"] <= box["y"] + box["height"] + 1
