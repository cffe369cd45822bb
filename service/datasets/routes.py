"""`/v1/datasets`: freeze curated versions (immutable: no route changes a version), read them, and
download exports (JSONL and Parquet streamed; an HF `save_to_disk` folder as a tar)."""

from __future__ import annotations

import json
import shutil
import tarfile
import tempfile
import time
from pathlib import Path as FilePath
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, PlainTextResponse, StreamingResponse
from pydantic import ValidationError
from sqlalchemy import Engine
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from service.datasets import service
from service.datasets.export.card import DatasetManifest
from service.datasets.export.containers import jsonl_stream, parquet_stream
from service.datasets.export.folder import (
    NoPreferencePairs,
    export_batches,
    export_plan,
    export_to_folder,
    plan_card,
)
from service.datasets.export.formats import SoftLabelsUnsupported, check_soft_labels, format_schema
from service.datasets.export.preference import PreferenceStats
from service.datasets.ground_truth import GroundTruthError, parse_jsonl
from service.datasets.schemas import (
    DatasetCreate,
    DatasetDetail,
    DatasetOut,
    ExportContainer,
    ExportFormat,
    ExportSplit,
)
from service.db.session import get_engine
from service.dependencies import Admin, PageDep, SessionDep, SettingsDep, Viewer
from service.errors import ConflictError, NotFoundError, ValidationProblem, problem_responses
from service.limits import BIGINT_MAX
from service.pagination import Page

router = APIRouter(prefix="/datasets", tags=["datasets"])

DatasetId = Annotated[int, Path(ge=1, le=BIGINT_MAX)]
MEDIA_TYPES = {"jsonl": "application/x-ndjson", "parquet": "application/vnd.apache.parquet"}

_CREATE_BODY = {
    "required": True,
    "content": {
        "application/json": {"schema": DatasetCreate.model_json_schema()},
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "required": ["spec"],
                "properties": {
                    "spec": {"type": "string", "description": "The DatasetCreate document as JSON."},
                    "ground_truth": {
                        "type": "string",
                        "format": "binary",
                        "description": "JSONL of {question, answer, system?} records.",
                    },
                },
            }
        },
    },
}


def _validation_error(exc: ValidationError, prefix: tuple[str, ...]) -> RequestValidationError:
    return RequestValidationError(
        [{"loc": (*prefix, *e["loc"]), "msg": e["msg"], "type": e["type"]} for e in exc.errors()]
    )


async def _read_create_request(request: Request) -> tuple[DatasetCreate, bytes | None]:
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("multipart/form-data"):
        form = await request.form()
        spec = form.get("spec")
        if spec is None:
            raise ValidationProblem.at(("body", "spec"), "the multipart body needs a `spec` part (JSON)")
        raw_spec = await spec.read() if isinstance(spec, UploadFile) else spec.encode("utf-8")
        try:
            payload = DatasetCreate.model_validate_json(raw_spec)
        except ValidationError as exc:
            raise _validation_error(exc, ("body", "spec")) from exc
        upload = form.get("ground_truth")
        data = await upload.read() if isinstance(upload, UploadFile) else None
        return payload, data
    if content_type and not content_type.startswith("application/json"):
        raise ValidationProblem.at(("header", "content-type"), "send application/json or multipart/form-data")
    try:
        return DatasetCreate.model_validate_json(await request.body()), None
    except ValidationError as exc:
        raise _validation_error(exc, ("body",)) from exc


@router.post(
    "",
    response_model=DatasetDetail,
    status_code=status.HTTP_202_ACCEPTED,
    openapi_extra={"requestBody": _CREATE_BODY},
)
async def create_dataset(
    request: Request, principal: Admin, session: SessionDep, settings: SettingsDep
) -> DatasetDetail:
    """Queue the freeze of a new dataset version (JSON, or multipart with a ground-truth JSONL upload)."""
    payload, upload = await _read_create_request(request)
    records = None
    if upload is not None:
        try:
            records = parse_jsonl(upload)
        except GroundTruthError as exc:
            raise ValidationProblem.at(("body", "ground_truth"), str(exc)) from exc
    version = await run_in_threadpool(
        service.queue_freeze,
        session,
        payload,
        principal=principal,
        settings=settings,
        uploaded_ground_truth=records,
    )
    return DatasetDetail.model_validate(version)


@router.get("", response_model=Page[DatasetOut])
def list_datasets(
    _: Viewer,
    session: SessionDep,
    page: PageDep,
    name: Annotated[
        str | None, Query(min_length=1, max_length=200, description="Only versions of this name.")
    ] = None,
) -> Page[DatasetOut]:
    """List dataset versions, newest first."""
    rows, total = service.list_datasets(session, name=name, limit=page.limit, offset=page.offset)
    return Page[DatasetOut](
        items=[DatasetOut.model_validate(r) for r in rows], total=total, limit=page.limit, offset=page.offset
    )


@router.get("/{dataset_id}", response_model=DatasetDetail)
def get_dataset(_: Viewer, session: SessionDep, dataset_id: DatasetId) -> DatasetDetail:
    """One dataset version with its row counts, digest and lineage."""
    return DatasetDetail.model_validate(service.get_dataset(session, dataset_id))


FormatQuery = Annotated[
    ExportFormat,
    Query(
        description="prompt_completion (TRL SFT), messages, alpaca, or preference (prompt / chosen / "
        "rejected pairs for DPO-style trainers)."
    ),
]
ContainerQuery = Annotated[
    ExportContainer, Query(description="jsonl, parquet, or hf (a save_to_disk folder, as tar).")
]
ProvenanceQuery = Annotated[
    bool,
    Query(
        description="Add the columns source (teacher | ground_truth), sample_id, job_id, teacher and "
        "item_index to every row (a ground-truth row has no sample or teacher; one from seed data names its "
        "job and item; preference pairs name the chosen answer's and add rejected_sample_id)."
    ),
]


def _export_plan(
    engine: Engine, manifest: DatasetManifest, fmt: str
) -> tuple[dict[str, int], bool, PreferenceStats | None]:
    try:
        return export_plan(engine, manifest, fmt)
    except NoPreferencePairs as exc:
        raise ConflictError(str(exc), title="No Preference Pairs", slug="no-preference-pairs") from exc


class MarkdownResponse(PlainTextResponse):
    media_type = "text/markdown"


@router.get("/{dataset_id}/card", response_class=MarkdownResponse, responses=problem_responses(409))
def dataset_card_markdown(
    _: Viewer,
    session: SessionDep,
    settings: SettingsDep,
    dataset_id: DatasetId,
    format: FormatQuery = "prompt_completion",
    container: ContainerQuery = "jsonl",
    provenance: ProvenanceQuery = False,
    soft_labels: SoftLabelsQuery = False,
) -> MarkdownResponse:
    """The dataset card (README.md with lineage) an export of this version carries."""
    _checked_soft_labels(format, soft_labels)
    version = service.get_frozen_dataset(session, dataset_id)
    manifest = service.manifest_of(version)
    assert settings.database_url is not None
    plan = _export_plan(get_engine(settings.database_url), manifest, format)
    card = plan_card(manifest, format, container, plan, provenance=provenance, soft_labels=soft_labels)
    return MarkdownResponse(card)


SoftLabelsQuery = Annotated[
    bool,
    Query(
        description="Add the teacher's top-k log-probabilities: completion_token_ids, teacher_topk_ids and "
        "teacher_topk_logprobs, aligned to the teacher's completion tokens (null where a row has none). Not "
        "for the preference format."
    ),
]


def _checked_soft_labels(fmt: str, soft_labels: bool) -> None:
    try:
        check_soft_labels(fmt, soft_labels)
    except SoftLabelsUnsupported as exc:
        raise ValidationProblem.at(("query", "soft_labels"), str(exc)) from exc


def _tar_folder(folder: FilePath, archive: FilePath) -> None:
    """`folder` as a tar of one top folder holding only folders and regular files (what `hardlabel
    export` unpacks). Each file is deleted once archived, so the export is on disk about once."""
    mtime = time.time()
    with tarfile.open(archive, "w", format=tarfile.PAX_FORMAT) as tar:
        for path in [folder, *sorted(folder.rglob("*"))]:
            relative = path.relative_to(folder).as_posix()
            info = tarfile.TarInfo(folder.name if relative == "." else f"{folder.name}/{relative}")
            info.mtime = mtime
            if path.is_dir():
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            elif path.is_file():
                info.size, info.mode = path.stat().st_size, 0o644
                with path.open("rb") as data:
                    tar.addfile(info, data)
                path.unlink()


def _bundle_response(
    engine: Engine,
    manifest: DatasetManifest,
    fmt: str,
    container: str,
    stem: str,
    *,
    provenance: bool,
    soft_labels: bool = False,
) -> FileResponse:
    """Every split and the card, as export_to_folder writes them, in a tar of the folder `stem`."""
    workdir = FilePath(tempfile.mkdtemp(prefix="hardlabel-export-"))
    try:
        folder = workdir / stem
        try:
            splits = export_to_folder(
                engine, manifest, fmt, container, folder, provenance=provenance, soft_labels=soft_labels
            )
        except NoPreferencePairs as exc:
            raise ConflictError(str(exc), title="No Preference Pairs", slug="no-preference-pairs") from exc
        archive = workdir / f"{stem}.tar"
        _tar_folder(folder, archive)
    except BaseException:
        shutil.rmtree(workdir, ignore_errors=True)
        raise
    return FileResponse(
        archive,
        media_type="application/x-tar",
        filename=f"{stem}-{fmt}-{container}.tar",
        headers={"X-Dataset-Digest": manifest.digest, "X-Row-Counts": json.dumps(splits)},
        background=BackgroundTask(shutil.rmtree, workdir, ignore_errors=True),
    )


@router.get(
    "/{dataset_id}/export",
    responses={
        **problem_responses(409),
        200: {
            "description": "A split as JSONL or Parquet (streamed), or every split and the card (README.md) "
            "as a tar of one folder `{name}-v{version}/` (split=all, or container hf).",
            "content": {
                "application/x-ndjson": {},
                "application/vnd.apache.parquet": {},
                "application/x-tar": {},
            },
        },
    },
)
def export_dataset(
    _: Viewer,
    session: SessionDep,
    settings: SettingsDep,
    dataset_id: DatasetId,
    format: FormatQuery = "prompt_completion",
    container: ContainerQuery = "jsonl",
    split: Annotated[
        ExportSplit,
        Query(
            description="jsonl/parquet: the split to download, or all: every split and the card as a tar "
            "(the folder `hardlabel export` writes). hf always sends every split."
        ),
    ] = "train",
    provenance: ProvenanceQuery = False,
    soft_labels: SoftLabelsQuery = False,
) -> Any:
    """Download an export of a version in a training format."""
    _checked_soft_labels(format, soft_labels)
    version = service.get_frozen_dataset(session, dataset_id)
    manifest = service.manifest_of(version)
    assert settings.database_url is not None
    engine = get_engine(settings.database_url)
    stem = f"{version.name}-v{version.version}"
    if container == "hf" or split == "all":
        return _bundle_response(
            engine, manifest, format, container, stem, provenance=provenance, soft_labels=soft_labels
        )
    sizes, with_system, _stats = _export_plan(engine, manifest, format)
    if split not in sizes:
        rows = "pairs" if format == "preference" else "rows"
        raise NotFoundError(
            f"dataset version {dataset_id} has no {split} {rows} (splits: {', '.join(sizes)})"
        )
    batches = export_batches(
        engine,
        manifest,
        format,
        split,
        has_system=with_system,
        provenance=provenance,
        soft_labels=soft_labels,
    )
    schema = format_schema(format, has_system=with_system, provenance=provenance, soft_labels=soft_labels)
    body = jsonl_stream(batches) if container == "jsonl" else parquet_stream(batches, schema)
    filename = f"{stem}-{format}-{split}.{container}"
    return StreamingResponse(
        body,
        media_type=MEDIA_TYPES[container],
        headers={
            "Content-Disposition": f'attachment; filename="{filename}"',
            "X-Dataset-Digest": manifest.digest,
            "X-Row-Count": json.dumps(sizes[split]),
        },
    )
