from playwright.sync_api import Page, expect

from ui.conftest import screenshot
from ui.factories import Seeded


def test_smoke(admin_page: Page, seeded: Seeded) -> None:
    page = admin_page
    for name, path in [("jobs", "/ui/jobs"), ("job", f"/ui/jobs/{seeded.self_instruct_job}"),
                       ("samples", f"/ui/samples?job_id={seeded.self_instruct_job}"),
                       ("sample", f"/ui/samples/{seeded.arithmetic_sample_ids[3]}")]:
        page.goto(path)
        page.wait_for_timeout(1500)
        screenshot(page, "tmp-" + name)
