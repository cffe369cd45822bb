"""Dataset versions and their rows in Postgres: set-based copies, digests, lineage aggregates."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import (
    ColumnElement,
    String,
    Subquery,
    Text,
    case,
    cast,
    column,
    exists,
    func,
    insert,
    literal,
    select,
    table,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Session

from service.db.models import DatasetRow, DatasetVersion, FilterRun, FilterVerdict, Job, Recipe, Sample
from service.samples.selection import current_answer, current_question

# Rows per block of the content digest (see content_digest).
DIGEST_BLOCK_ROWS = 10_000
INSERT_BATCH = 10_000
# Rows per INSERT of a freeze: progress is reported after each.
COPY_CHUNK_ROWS = 100_000


def lock_name(session: Session, name: str) -> None:
    """Serialise version creation per name until commit (versions are numbered 1, 2, …)."""
    session.execute(
        text("SELECT pg_advisory_xact_lock(hashtext(:key))"), {"key": f"hardlabel-dataset:{name}"}
    )


def next_version(session: Session, name: str) -> int:
    latest = session.scalar(select(func.max(DatasetVersion.version)).where(DatasetVersion.name == name))
    return int(latest or 0) + 1


def add_version(
    session: Session, *, name: str, version: int, query: dict[str, Any], created_by: int | None
) -> DatasetVersion:
    row = DatasetVersion(
        name=name, version=version, query=query, digest="", status="queued", created_by=created_by
    )
    session.add(row)
    session.flush()
    return row


def any_sample_matches(session: Session, conditions: Sequence[ColumnElement[bool]]) -> bool:
    return session.scalar(select(exists(select(Sample.id).where(*conditions)))) is True


def split_samples(
    conditions: Sequence[ColumnElement[bool]],
    *,
    limit: int | None,
    test_fraction: float,
    split_seed: int,
    stratify_by_job: bool,
) -> Subquery:
    """(row_index, sample_id, job_id, split) of the samples a version freezes (see choose_teacher_rows);
    the dataset preview counts the same statement, so its split sizes are the freeze's."""
    chosen_query = select(Sample.id, Sample.job_id, Sample.item_index).where(*conditions).order_by(Sample.id)
    if limit is not None:
        chosen_query = chosen_query.limit(limit)
    chosen = chosen_query.cte("chosen")
    split: ColumnElement[str]
    if test_fraction > 0:
        # Items, not samples, are split: an item's samples (several teachers, n > 1) ask the same
        # question, so one of them in train and another in test would leak the test set.
        items = select(chosen.c.job_id, chosen.c.item_index).distinct().cte("chosen_items")
        key = func.md5(
            literal(f"{split_seed}:", String)
            + cast(items.c.job_id, String)
            + literal(":", String)
            + cast(items.c.item_index, String)
        )
        partition = [items.c.job_id] if stratify_by_job else None
        rank = func.row_number().over(
            partition_by=partition, order_by=(key, items.c.job_id, items.c.item_index)
        )
        size = func.count().over(partition_by=partition)
        item_split = select(
            items.c.job_id,
            items.c.item_index,
            case((rank <= func.round(size * test_fraction), "test"), else_="train").label("split"),
        ).cte("item_split")
        split = (
            select(item_split.c.split)
            .where(item_split.c.job_id == chosen.c.job_id, item_split.c.item_index == chosen.c.item_index)
            .scalar_subquery()
        )
    else:
        split = literal("train", String)
    return select(
        (func.row_number().over(order_by=chosen.c.id) - 1).label("row_index"),
        chosen.c.id.label("sample_id"),
        chosen.c.job_id,
        split.label("split"),
    ).subquery("split_samples")


def choose_teacher_rows(
    session: Session,
    conditions: Sequence[ColumnElement[bool]],
    *,
    limit: int | None,
    test_fraction: float,
    split_seed: int,
    stratify_by_job: bool,
) -> int:
    """Number and split the matching samples into the temporary table `freeze_choice`; returns how many.

    One statement over sample ids only, so which samples, their order (rows 0..n-1 by sample id)
    and their split are decided on one snapshot; copy_chosen_rows then copies them in chunks. The
    split ranks the chosen samples' items by md5("<seed>:<job id>:<item index>") (per job when
    stratified) and puts every sample of the round(test_fraction × items) first-ranked items in
    `test`. The table is dropped at commit.
    """
    # Sorting a million ids fits in memory with this; the default (4 MB) spills to disk.
    session.execute(text("SET LOCAL work_mem = '128MB'"))
    session.execute(
        text(
            "CREATE TEMPORARY TABLE freeze_choice (row_index bigint PRIMARY KEY, sample_id bigint NOT NULL, "
            "split varchar(10) NOT NULL) ON COMMIT DROP"
        )
    )
    chosen = split_samples(
        conditions,
        limit=limit,
        test_fraction=test_fraction,
        split_seed=split_seed,
        stratify_by_job=stratify_by_job,
    )
    ranked = select(chosen.c.row_index, chosen.c.sample_id, chosen.c.split)
    choice = table("freeze_choice", column("row_index"), column("sample_id"), column("split"))
    statement = (
        insert(choice)
        .from_select(["row_index", "sample_id", "split"], ranked)
        .execution_options(preserve_rowcount=True)
    )
    result = session.connection().execute(statement)  # Core: an INSERT's row count needs preserve_rowcount
    session.execute(text("ANALYZE freeze_choice"))
    return int(result.rowcount)


def copy_chosen_rows(session: Session, dataset_id: int, start: int, end: int, *, system: str | None) -> None:
    """INSERT … SELECT rows [start, end) of `freeze_choice` with their samples' current text."""
    choice = table("freeze_choice", column("row_index"), column("sample_id"), column("split"))
    rows = (
        select(
            literal(dataset_id),
            choice.c.row_index,
            choice.c.split,
            literal("teacher", String),
            Sample.id,
            current_question(),
            current_answer(),
            literal(system, String),
            func.jsonb_build_object("job_id", Sample.job_id),
        )
        .join_from(choice, Sample, Sample.id == choice.c.sample_id)
        .where(choice.c.row_index >= start, choice.c.row_index < end)
    )
    columns = [
        "dataset_id",
        "row_index",
        "split",
        "source",
        "sample_id",
        "question",
        "answer",
        "system",
        "extra",
    ]
    session.execute(insert(DatasetRow).from_select(columns, rows))


def insert_ground_truth_rows(
    session: Session, dataset_id: int, first_index: int, records: Sequence[tuple[int, str, str, str | None]]
) -> None:
    """Append (record index, question, answer, system) rows to the train split, in batches."""
    for start in range(0, len(records), INSERT_BATCH):
        batch = records[start : start + INSERT_BATCH]
        session.execute(
            text(
                """
                INSERT INTO dataset_row
                    (dataset_id, row_index, split, source, sample_id, question, answer, system, extra)
                SELECT :dataset_id, :first + g.ord - 1, 'train', 'ground_truth', NULL,
                       g.question, g.answer, g.system, jsonb_build_object('ground_truth_index', g.idx)
                FROM unnest(CAST(:idx AS bigint[]), CAST(:questions AS text[]), CAST(:answers AS text[]),
                            CAST(:systems AS text[])) WITH ORDINALITY AS g(idx, question, answer, system, ord)
                """
            ),
            {
                "dataset_id": dataset_id,
                "first": first_index + start,
                "idx": [r[0] for r in batch],
                "questions": [r[1] for r in batch],
                "answers": [r[2] for r in batch],
                "systems": [r[3] for r in batch],
            },
        )


def seed_reference(field: str, path: Sequence[str]) -> ColumnElement[Any]:
    """A sample's seed reference as JSONB: `inputs -> field`, else `inputs #> path` (SQL NULL when absent)."""
    return func.coalesce(Sample.inputs.op("->")(field), Sample.inputs.op("#>")(cast(list(path), ARRAY(Text))))


def any_sample_has_seed_field(
    session: Session, conditions: Sequence[ColumnElement[bool]], field: str, path: Sequence[str]
) -> bool:
    """Whether some matching sample's seed carries a non-null `field`."""
    reference = seed_reference(field, path)
    found = select(Sample.id).where(
        *conditions, reference.is_not(None), func.jsonb_typeof(reference) != "null"
    )
    return session.scalar(select(exists(found))) is True


def stage_seed_truth(
    session: Session, dataset_id: int, field: str, path: Sequence[str], split_seed: int
) -> tuple[int, int]:
    """Rank the version's items whose seed carries a reference into the temporary table
    `freeze_seed_truth`; returns (items available to train, items held out).

    One row per (job, item index) of the version's teacher rows with a non-empty reference: the
    question of the item's first row and the reference's text (a JSON string as is, anything else
    as JSON). An item with a row in the test split, or whose question some test row asks (the same
    seed in another job), is held out, so no test question becomes train ground truth. The others
    are ranked by sha256("<split seed>:<job id>:<item index>"). The table is dropped at commit.
    """
    session.execute(
        text(
            """
            CREATE TEMPORARY TABLE freeze_seed_truth ON COMMIT DROP AS
            WITH teacher AS (
                SELECT r.row_index, r.split, r.question, s.job_id, s.item_index,
                       coalesce(s.inputs -> CAST(:field AS text), s.inputs #> CAST(:path AS text[])) AS ref
                FROM dataset_row r JOIN sample s ON s.id = r.sample_id
                WHERE r.dataset_id = :id AND r.source = 'teacher'
            ),
            items AS (
                SELECT DISTINCT ON (job_id, item_index) job_id, item_index, question,
                       CASE jsonb_typeof(ref) WHEN 'string' THEN ref #>> '{}' ELSE ref::text END AS answer
                FROM teacher WHERE ref IS NOT NULL AND jsonb_typeof(ref) <> 'null'
                ORDER BY job_id, item_index, row_index
            ),
            judged AS (
                SELECT i.*, (EXISTS (SELECT 1 FROM teacher t WHERE t.split = 'test'
                                     AND t.job_id = i.job_id AND t.item_index = i.item_index)
                             OR EXISTS (SELECT 1 FROM teacher t WHERE t.split = 'test'
                                        AND t.question = i.question)) AS held_out
                FROM items i WHERE i.answer <> ''
            )
            SELECT job_id, item_index, question, answer, held_out,
                   CASE WHEN NOT held_out THEN row_number() OVER (
                       PARTITION BY held_out
                       ORDER BY sha256(convert_to(CAST(:seed AS text) || ':' || job_id || ':' || item_index,
                                                  'UTF8')),
                                job_id, item_index) END AS rank
            FROM judged
            """
        ),
        {"id": dataset_id, "field": field, "path": list(path), "seed": str(split_seed)},
    )
    available, held_out = session.execute(
        text(
            "SELECT count(*) FILTER (WHERE NOT held_out), count(*) FILTER (WHERE held_out) "
            "FROM freeze_seed_truth"
        )
    ).one()
    return int(available), int(held_out)


def insert_seed_truth_rows(
    session: Session, dataset_id: int, first_index: int, count: int, *, field: str, system: str | None
) -> None:
    """Append the `count` first-ranked items of `freeze_seed_truth` to the train split, in (job, item) order.

    Their `extra` names the job and item index the reference came from (no sample: the row is
    not a teacher's answer).
    """
    session.execute(
        text(
            """
            INSERT INTO dataset_row
                (dataset_id, row_index, split, source, sample_id, question, answer, system, extra)
            SELECT :dataset_id, :first + row_number() OVER (ORDER BY job_id, item_index) - 1, 'train',
                   'ground_truth', NULL, question, answer, CAST(:system AS text),
                   jsonb_build_object('job_id', job_id, 'item_index', item_index,
                                      'seed_field', CAST(:field AS text))
            FROM freeze_seed_truth WHERE rank <= :count
            """
        ),
        {"dataset_id": dataset_id, "first": first_index, "count": count, "field": field, "system": system},
    )


def row_counts(session: Session, dataset_id: int) -> dict[str, int]:
    rows = session.execute(
        select(DatasetRow.split, DatasetRow.source, func.count())
        .where(DatasetRow.dataset_id == dataset_id)
        .group_by(DatasetRow.split, DatasetRow.source)
    ).all()
    counts = {"total": 0, "train": 0, "test": 0, "teacher": 0, "ground_truth": 0}
    for split, source, n in rows:
        counts[split] += n
        counts[source] += n
        counts["total"] += n
    return counts


def content_digest(session: Session, dataset_id: int) -> str:
    """sha256 hex of the block digests, one per DIGEST_BLOCK_ROWS rows in row order, joined by "\\n".

    A block digest is the sha256 hex of its rows' canonical text joined by "\\n"; a row's canonical
    text is Postgres' `json_build_array(split, source, question, answer, system)::text`. Computed in
    Postgres block by block, so a million rows never travel to the API.
    """
    import hashlib

    blocks = session.scalars(
        text(
            """
            SELECT encode(sha256(convert_to(
                       string_agg(json_build_array(split, source, question, answer, system)::text, E'\\n'
                                  ORDER BY row_index),
                       'UTF8')), 'hex')
            FROM dataset_row WHERE dataset_id = :id
            GROUP BY row_index / :block ORDER BY row_index / :block
            """
        ),
        {"id": dataset_id, "block": DIGEST_BLOCK_ROWS},
    ).all()
    return hashlib.sha256("\n".join(blocks).encode("ascii")).hexdigest()


def existing_filter_names(session: Session, names: Sequence[str]) -> set[str]:
    found = set()
    for name in names:  # one index probe each on (filter_name, passed, sample_id)
        if session.scalar(select(FilterVerdict.sample_id).where(FilterVerdict.filter_name == name).limit(1)):
            found.add(name)
    return found


def public_teacher(teacher: dict[str, Any]) -> dict[str, Any]:
    """What a version's lineage records of a teacher: its identity, never its options or key."""
    return {k: teacher.get(k) for k in ("model", "revision", "engine", "base_url") if teacher.get(k)}


def jobs_of_rows(session: Session, dataset_id: int) -> list[dict[str, Any]]:
    job_id = cast(DatasetRow.extra["job_id"].astext, Job.id.type)
    counts = (
        select(job_id.label("job_id"), func.count().label("rows"))
        .where(DatasetRow.dataset_id == dataset_id, DatasetRow.source == "teacher")
        .group_by(job_id)
        .subquery()
    )
    rows = session.execute(
        select(Job, Recipe, counts.c.rows)
        .join(counts, counts.c.job_id == Job.id)
        .join(Recipe, Recipe.id == Job.recipe_id)
        .order_by(Job.id)
    ).all()
    return [
        {
            "id": job.id,
            "rows": int(n),
            "status": job.status,
            "seed": job.seed,
            "teacher": public_teacher(job.teacher),
            "teachers": [public_teacher(teacher) for teacher in job.teachers],
            "recipe": {
                "id": recipe.id,
                "name": recipe.name,
                "version": recipe.version,
                "digest": recipe.digest,
            },
        }
        for job, recipe, n in rows
    ]


def verdicts_of_rows(session: Session, dataset_id: int) -> list[tuple[str, int, bool, int]]:
    """(filter name, filter run id, passed, rows) over the version's teacher rows."""
    rows = session.execute(
        select(FilterVerdict.filter_name, FilterVerdict.filter_run_id, FilterVerdict.passed, func.count())
        .join(DatasetRow, DatasetRow.sample_id == FilterVerdict.sample_id)
        .where(DatasetRow.dataset_id == dataset_id)
        .group_by(FilterVerdict.filter_name, FilterVerdict.filter_run_id, FilterVerdict.passed)
    ).all()
    return [(name, int(run), bool(passed), int(n)) for name, run, passed, n in rows]


def filter_runs(session: Session, run_ids: Sequence[int]) -> list[FilterRun]:
    return list(
        session.scalars(select(FilterRun).where(FilterRun.id.in_(list(run_ids))).order_by(FilterRun.id))
    )


def review_state_of_rows(session: Session, dataset_id: int) -> tuple[dict[str, int], int]:
    """Review statuses of the samples behind the rows, and how many rows carry a reviewer's edit."""
    rows = session.execute(
        select(
            Sample.review_status,
            func.count(),
            func.count().filter((Sample.edited_question.is_not(None)) | (Sample.edited_answer.is_not(None))),
        )
        .join(DatasetRow, DatasetRow.sample_id == Sample.id)
        .where(DatasetRow.dataset_id == dataset_id)
        .group_by(Sample.review_status)
    ).all()
    return {status: int(n) for status, n, _ in rows}, sum(int(e) for _, _, e in rows)


def get_version(session: Session, dataset_id: int) -> DatasetVersion | None:
    return session.get(DatasetVersion, dataset_id)


def list_versions(
    session: Session, *, name: str | None, limit: int, offset: int
) -> tuple[list[DatasetVersion], int]:
    query = select(DatasetVersion)
    if name is not None:
        query = query.where(DatasetVersion.name == name)
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    rows = session.scalars(query.order_by(DatasetVersion.id.desc()).limit(limit).offset(offset))
    return list(rows), int(total)


def review_counts(session: Session, conditions: Sequence[ColumnElement[bool]]) -> tuple[dict[str, int], int]:
    """Samples matching `conditions` by review status, and how many pending ones no filter judged."""
    judged = exists(select(FilterVerdict.sample_id).where(FilterVerdict.sample_id == Sample.id))
    rows = session.execute(
        select(
            Sample.review_status,
            func.count(),
            func.count().filter((Sample.review_status == "pending") & ~judged),
        )
        .where(*conditions)
        .group_by(Sample.review_status)
    ).all()
    return {status: int(n) for status, n, _ in rows}, sum(int(u) for _, _, u in rows)
