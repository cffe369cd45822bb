"""Filter runs, their selections and verdicts in Postgres."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from psycopg.types.json import Jsonb
from sqlalchemy import ColumnElement, Float, and_, func, literal, or_, select, text
from sqlalchemy.orm import Session

from service.db.models import DatasetRow, DatasetVersion, Event, FilterRun, FilterVerdict, Job, Sample
from service.filters.records import SampleRecord, TeacherAnswer, Verdict, item_key
from service.queue.owners import cancel_owner
from service.samples.selection import current_answer, current_question


def score_key() -> ColumnElement[float]:
    """The score samples are ordered by when the highest is kept first (unscored sort last)."""
    return func.coalesce(Sample.score, literal(float("-inf"), Float))


UPSERT_VERDICTS_SQL = text(
    """
    INSERT INTO filter_verdict (sample_id, filter_name, filter_run_id, passed, score, reason)
    SELECT v.sample_id, v.filter_name, :run_id, v.passed, v.score, v.reason
    FROM unnest(CAST(:sample_ids AS bigint[]), CAST(:names AS text[]), CAST(:passed AS boolean[]),
                CAST(:scores AS double precision[]), CAST(:reasons AS text[]))
         AS v(sample_id, filter_name, passed, score, reason)
    ON CONFLICT (sample_id, filter_name) DO UPDATE
    SET filter_run_id = excluded.filter_run_id, passed = excluded.passed, score = excluded.score,
        reason = excluded.reason, created_at = now()
    """
)


def selection_bounds(session: Session, conditions: Sequence[ColumnElement[bool]]) -> tuple[int, int | None]:
    """(number of samples, largest id) matching the conditions."""
    count, max_id = session.execute(select(func.count(), func.max(Sample.id)).where(*conditions)).one()
    return int(count), max_id


def add_filter_run(
    session: Session, spec: dict[str, Any], items_total: int, created_by: int | None
) -> FilterRun:
    run = FilterRun(spec=spec, items_total=items_total, created_by=created_by, counts={})
    session.add(run)
    session.flush()
    return run


def get_filter_run(session: Session, run_id: int) -> FilterRun | None:
    return session.get(FilterRun, run_id)


def list_filter_runs(session: Session, *, limit: int, offset: int) -> tuple[list[FilterRun], int]:
    rows = session.scalars(select(FilterRun).order_by(FilterRun.id.desc()).limit(limit).offset(offset))
    total = session.scalar(select(func.count()).select_from(FilterRun)) or 0
    return list(rows), int(total)


@dataclass(frozen=True)
class ChunkKey:
    """Where a chunk ended: the last sample's id (and score key when ordered by score)."""

    sample_id: int
    score: float = float("-inf")


def read_chunk(
    session: Session,
    conditions: Sequence[ColumnElement[bool]],
    order: str,
    after: ChunkKey | None,
    limit: int,
) -> tuple[list[SampleRecord], ChunkKey | None]:
    """The next `limit` samples of the selection in `order` after `after` (keyset), and the new key."""
    key = score_key()
    job_teachers = (
        select(func.jsonb_array_length(Job.teachers)).where(Job.id == Sample.job_id).scalar_subquery()
    )
    columns = (
        Sample.id,
        Sample.job_id,
        current_question(),
        current_answer(),
        Sample.raw_text,
        Sample.parsed,
        Sample.score,
        Sample.inputs,
        key,
        Sample.item_index,
        Sample.stage,
        Sample.sample_index,
        Sample.teacher_index,
        job_teachers,
        Sample.answer,
    )
    query = select(*columns).where(*conditions).limit(limit)
    if order == "highest_score":
        query = query.order_by(key.desc(), Sample.id)
        if after is not None:
            query = query.where(or_(key < after.score, and_(key == after.score, Sample.id > after.sample_id)))
    else:
        query = query.order_by(Sample.id)
        if after is not None:
            query = query.where(Sample.id > after.sample_id)
    rows = session.execute(query).all()
    records = [
        SampleRecord(
            id=r[0],
            job_id=r[1],
            question=r[2],
            answer=r[3],
            raw_text=r[4],
            parsed=r[5],
            score=r[6],
            inputs=r[7],
            item_index=r[9],
            stage=r[10],
            sample_index=r[11],
            teacher_index=r[12],
            job_teachers=int(r[13] or 1),
            teacher_answer=r[14],
        )
        for r in rows
    ]
    last = ChunkKey(rows[-1][0], float(rows[-1][8])) if rows else None
    return records, last


SIBLING_ANSWERS_SQL = text(
    """
    SELECT s.job_id, s.item_index, s.stage, s.sample_index, s.teacher_index, s.id, s.answer
    FROM unnest(CAST(:jobs AS bigint[]), CAST(:items AS integer[]), CAST(:stages AS text[]),
                CAST(:indices AS integer[])) AS k(job_id, item_index, stage, sample_index)
    JOIN sample s ON s.job_id = k.job_id AND s.item_index = k.item_index AND s.stage = k.stage
        AND s.sample_index = k.sample_index
    ORDER BY s.job_id, s.item_index, s.stage, s.sample_index, s.teacher_index
    """
)


def sibling_answers(session: Session, samples: Sequence[SampleRecord]) -> list[TeacherAnswer]:
    """Every teacher's answer (as written) to the items of `samples`: same job, item, stage and index."""
    keys = sorted({item_key(sample) for sample in samples})
    if not keys:
        return []
    rows = session.execute(
        SIBLING_ANSWERS_SQL,
        {
            "jobs": [k[0] for k in keys],
            "items": [k[1] for k in keys],
            "stages": [k[2] for k in keys],
            "indices": [k[3] for k in keys],
        },
    )
    return [TeacherAnswer((r[0], r[1], r[2], r[3]), r[4], r[5], r[6]) for r in rows]


def upsert_verdicts(session: Session, run_id: int, verdicts: Sequence[tuple[str, Verdict]]) -> None:
    """Store (filter name, verdict) pairs; a verdict of the same sample and name is replaced."""
    if not verdicts:
        return
    session.execute(
        UPSERT_VERDICTS_SQL,
        {
            "run_id": run_id,
            "sample_ids": [v.sample_id for _, v in verdicts],
            "names": [name for name, _ in verdicts],
            "passed": [v.passed for _, v in verdicts],
            "scores": [v.score for _, v in verdicts],
            "reasons": [v.reason.replace("\x00", "\ufffd") for _, v in verdicts],
        },
    )


def save_progress(
    session: Session, run_id: int, task_id: int, cursor: int, counts: dict[str, dict[str, int]]
) -> None:
    """Checkpoint: the task's cursor and the run's progress and counts, in the caller's transaction."""
    session.execute(
        text("UPDATE task SET cursor = :cursor WHERE id = :id"), {"cursor": cursor, "id": task_id}
    )
    session.execute(
        text("UPDATE filter_run SET items_done = :done, counts = :counts WHERE id = :id"),
        {"done": cursor, "counts": Jsonb(counts), "id": run_id},
    )


def verdicts_of_sample(session: Session, sample_id: int) -> list[FilterVerdict]:
    return list(
        session.scalars(
            select(FilterVerdict)
            .where(FilterVerdict.sample_id == sample_id)
            .order_by(FilterVerdict.filter_name)
        )
    )


def existing_dataset_ids(session: Session, dataset_ids: Sequence[int]) -> set[int]:
    """The given versions that exist and are frozen (a version still freezing has no rows to compare)."""
    return set(
        session.scalars(
            select(DatasetVersion.id).where(
                DatasetVersion.id.in_(list(dataset_ids)), DatasetVersion.status == "succeeded"
            )
        )
    )


def dataset_row_texts(
    session: Session, dataset_ids: Sequence[int], field: str, batch: int = 10_000
) -> Iterator[tuple[str, str]]:
    """(label, text) of every row of the given dataset versions, streamed in id/row order."""
    versions = {
        v.id: (v.name, v.version)
        for v in session.scalars(select(DatasetVersion).where(DatasetVersion.id.in_(list(dataset_ids))))
    }
    for dataset_id in sorted(versions):
        name, version = versions[dataset_id]
        after = -1
        while True:
            rows = session.execute(
                select(DatasetRow.row_index, DatasetRow.question, DatasetRow.answer)
                .where(DatasetRow.dataset_id == dataset_id, DatasetRow.row_index > after)
                .order_by(DatasetRow.row_index)
                .limit(batch)
            ).all()
            if not rows:
                break
            for row_index, question, answer in rows:
                text_ = (
                    question
                    if field == "question"
                    else answer
                    if field == "answer"
                    else f"{question}\n{answer}"
                )
                yield f"dataset {name!r} v{version} row {row_index}", text_
            after = rows[-1][0]


def cancel_filter_run_rows(session: Session, run: FilterRun) -> int | None:
    """Cancel the run and its unfinished task; how many tasks were cancelled, None if it had finished.

    Task first, then the run (see service.queue.owners.cancel_owner): a worker's chunk in flight
    commits first, then its next fence finds the task cancelled and stops.
    """
    session.flush()
    cancelled = cancel_owner(session, "filter_run_id", run.id)
    session.refresh(run)
    return cancelled


def list_events(
    session: Session, run_id: int, *, after_id: int | None, limit: int, offset: int
) -> tuple[list[Event], int]:
    query = select(Event).where(Event.filter_run_id == run_id)
    if after_id is not None:
        query = query.where(Event.id > after_id)
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    return list(session.scalars(query.order_by(Event.id).limit(limit).offset(offset))), int(total)
