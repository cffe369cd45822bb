"""The review UI's pages under `/ui`: server-rendered shells, no database access.

Each page is a template that loads one script from /ui/static; the script reads the token from the
browser's sessionStorage and calls the same /v1 API as every other client, so the UI has no data
path of its own. Ids in page paths are checked here so a bad link shows a readable page.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from starlette.types import Scope

from service.limits import BIGINT_MAX

WEB_DIR = Path(__file__).resolve().parent
UI_PREFIX = "/ui"
STATIC_PATH = f"{UI_PREFIX}/static"

templates = Jinja2Templates(directory=WEB_DIR / "templates")
# Part of every asset URL: a new release's files are never served from an old cache.
STATIC_VERSION = hashlib.sha256(
    b"".join(path.read_bytes() for path in sorted((WEB_DIR / "static").iterdir()) if path.is_file())
).hexdigest()[:12]
router = APIRouter(include_in_schema=False)

NAV = (
    ("jobs", "Jobs", f"{UI_PREFIX}/jobs"),
    ("samples", "Samples", f"{UI_PREFIX}/samples"),
    ("datasets", "Curate", f"{UI_PREFIX}/datasets"),
    ("training", "Training", f"{UI_PREFIX}/training"),
)


def _page(
    request: Request, template: str, *, section: str, title: str, status_code: int = 200, **context: Any
) -> HTMLResponse:
    return templates.TemplateResponse(
        request,
        template,
        {
            "section": section,
            "title": title,
            "nav": NAV,
            "static": STATIC_PATH,
            "version": STATIC_VERSION,
            **context,
        },
        status_code=status_code,
    )


def _not_found(request: Request, message: str) -> HTMLResponse:
    return _page(request, "not_found.html", section="", title="Not found", status_code=404, message=message)


def _parse_id(raw: str) -> int | None:
    """A positive id that fits the database's BIGINT, or None."""
    if not raw.isascii() or not raw.isdigit():
        return None
    value = int(raw)
    return value if 1 <= value <= BIGINT_MAX else None


@router.get("/")
def root() -> RedirectResponse:
    return RedirectResponse(f"{UI_PREFIX}/jobs")


@router.get(UI_PREFIX)
@router.get(f"{UI_PREFIX}/")
def ui_root() -> RedirectResponse:
    return RedirectResponse(f"{UI_PREFIX}/jobs")


@router.get(f"{UI_PREFIX}/sign-in", response_class=HTMLResponse)
def sign_in(request: Request) -> HTMLResponse:
    return _page(request, "sign_in.html", section="sign-in", title="Sign in", script="page-sign-in.js")


@router.get(f"{UI_PREFIX}/jobs", response_class=HTMLResponse)
def jobs(request: Request) -> HTMLResponse:
    return _page(request, "jobs.html", section="jobs", title="Jobs", script="page-jobs.js")


@router.get(f"{UI_PREFIX}/jobs/{{job_id}}", response_class=HTMLResponse)
def job(request: Request, job_id: str) -> HTMLResponse:
    parsed = _parse_id(job_id)
    if parsed is None:
        return _not_found(request, f"“{job_id}” is not a job id: job ids are positive whole numbers.")
    return _page(
        request, "job.html", section="jobs", title=f"Job {parsed}", script="page-job.js", object_id=parsed
    )


@router.get(f"{UI_PREFIX}/samples", response_class=HTMLResponse)
def samples(request: Request) -> HTMLResponse:
    return _page(request, "samples.html", section="samples", title="Samples", script="page-samples.js")


@router.get(f"{UI_PREFIX}/samples/{{sample_id}}", response_class=HTMLResponse)
def sample(request: Request, sample_id: str) -> HTMLResponse:
    parsed = _parse_id(sample_id)
    if parsed is None:
        return _not_found(
            request, f"“{sample_id}” is not a sample id: sample ids are positive whole numbers."
        )
    return _page(
        request,
        "sample.html",
        section="samples",
        title=f"Sample {parsed}",
        script="page-sample.js",
        object_id=parsed,
    )


@router.get(f"{UI_PREFIX}/datasets", response_class=HTMLResponse)
def datasets(request: Request) -> HTMLResponse:
    return _page(request, "datasets.html", section="datasets", title="Curate", script="page-datasets.js")


@router.get(f"{UI_PREFIX}/datasets/{{dataset_id}}", response_class=HTMLResponse)
def dataset(request: Request, dataset_id: str) -> HTMLResponse:
    parsed = _parse_id(dataset_id)
    if parsed is None:
        return _not_found(
            request, f"“{dataset_id}” is not a dataset version id: ids are positive whole numbers."
        )
    return _page(
        request,
        "dataset.html",
        section="datasets",
        title=f"Dataset version {parsed}",
        script="page-dataset.js",
        object_id=parsed,
    )


@router.get(f"{UI_PREFIX}/training", response_class=HTMLResponse)
def training(request: Request) -> HTMLResponse:
    return _page(request, "training.html", section="training", title="Training", script="page-training.js")


@router.get(f"{UI_PREFIX}/training/{{run_id}}", response_class=HTMLResponse)
def training_run(request: Request, run_id: str) -> HTMLResponse:
    parsed = _parse_id(run_id)
    if parsed is None:
        return _not_found(request, f"“{run_id}” is not a training run id: ids are positive whole numbers.")
    return _page(
        request,
        "run.html",
        section="training",
        title=f"Training run {parsed}",
        script="page-run.js",
        object_id=parsed,
    )


@router.get(f"{UI_PREFIX}/{{rest:path}}", response_class=HTMLResponse)
def unknown_page(request: Request, rest: str) -> Response:
    if rest.startswith("static/"):
        return _not_found(request, "That file is not part of the UI.")
    return _not_found(request, f"There is no page at /ui/{rest}.")


class RevalidatedStaticFiles(StaticFiles):
    """Static files the browser revalidates on every use (a 304 when unchanged): the page scripts
    import each other by plain URLs, so an upgrade must never mix old and new modules."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        response.headers["Cache-Control"] = "no-cache"
        return response


def install_ui(app: FastAPI) -> None:
    """Mount the static files and the page routes on `app` (after the API routers)."""
    app.mount(STATIC_PATH, RevalidatedStaticFiles(directory=WEB_DIR / "static"), name="ui-static")
    app.include_router(router)
