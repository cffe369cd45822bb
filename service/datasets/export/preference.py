"""Preference pairs (prompt / chosen / rejected) of a frozen version, for DPO-style trainers.

A version freezes the curated answers only (rejected samples never get in by default), so the
rejected side also comes from the version's lineage: the samples of its jobs, at its stage, that a
reviewer rejected. The pairing rule, per prompt — a (job, item index, question text) group:

- **chosen**: one of the version's teacher rows (its frozen text) whose sample is not rejected:
  an accepted one first, then the highest judge score (unscored last), then the first row.
- **rejected**: another answer to the same prompt, with a different text, that is worse for a
  stated reason: a sample a reviewer rejected (frozen in the version, or only in its jobs), or a
  row of the version that is not accepted and whose judge score is below the chosen one's. Rejected
  by review first, then the lowest score, then the lowest sample id. Rows of the version are only
  taken from the chosen row's split; rejected samples outside the version from either.
- A prompt without such a pair is skipped (counted in the card); a pair lands in its chosen row's
  split, in row order. Ground-truth rows have no sample, so no pair.

The scores and review decisions are read when the export runs (the rows' text is the frozen one).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
from psycopg import sql
from sqlalchemy import Engine

from service.datasets.export.formats import source_schema
from service.datasets.export.rows import DEFAULT_BATCH_BYTES, LONGEST_TEACHER_MODEL, copy_batches

PAIRING_RULE = (
    "Per prompt (job, item index, question): **chosen** is one of this version's teacher rows that is "
    "not rejected (accepted first, then the highest judge score, then the first row); **rejected** is "
    "another answer to the same prompt with a different text that a reviewer rejected (in this version "
    "or only in its jobs, at its stage) or, failing that, a row of this version that is not accepted and "
    "scored below the chosen one (rejected by review first, then the lowest score). Prompts without "
    "such a pair are skipped; scores and review decisions are read at export time."
)

# Every prompt of the version with its chosen row and (where there is one) its rejected answer.
_PROMPTS = """
WITH frozen AS (
    SELECT r.row_index, r.split, r.question, r.answer, r.system,
           s.id AS sample_id, s.job_id, s.item_index, s.score, s.review_status
    FROM dataset_row r JOIN sample s ON s.id = r.sample_id
    WHERE r.dataset_id = {dataset_id} AND r.source = 'teacher'
),
chosen AS (
    SELECT DISTINCT ON (job_id, item_index, question) *
    FROM frozen WHERE review_status <> 'rejected'
    ORDER BY job_id, item_index, question, (review_status = 'accepted') DESC, score DESC NULLS LAST,
             row_index
),
candidates AS (
    SELECT split, sample_id, job_id, item_index, question, answer, score, review_status FROM frozen
    UNION ALL
    SELECT NULL, s.id, s.job_id, s.item_index, coalesce(s.edited_question, s.question),
           coalesce(s.edited_answer, s.answer), s.score, s.review_status
    FROM sample s
    WHERE s.job_id = ANY({job_ids}) AND s.stage = {stage} AND s.review_status = 'rejected'
      AND coalesce(s.edited_answer, s.answer) IS NOT NULL
      AND NOT EXISTS (SELECT 1 FROM frozen f WHERE f.sample_id = s.id)
),
pairs AS (
    SELECT DISTINCT ON (ch.sample_id) ch.sample_id, c.sample_id AS rejected_sample_id,
           c.answer AS rejected, c.review_status = 'rejected' AS by_review
    FROM chosen ch
    JOIN candidates c ON c.job_id = ch.job_id AND c.item_index = ch.item_index AND c.question = ch.question
    WHERE c.sample_id <> ch.sample_id AND c.answer <> ch.answer
      AND (c.split IS NULL OR c.split = ch.split)
      AND (c.review_status = 'rejected'
           OR (c.review_status = 'pending' AND c.score < ch.score))
    ORDER BY ch.sample_id, (c.review_status = 'rejected') DESC, c.score ASC NULLS LAST, c.sample_id
)
SELECT ch.row_index, ch.split, ch.question, ch.answer AS chosen, p.rejected, ch.system,
       ch.sample_id, ch.job_id, ch.item_index, p.rejected_sample_id, p.by_review
FROM chosen ch LEFT JOIN pairs p ON p.sample_id = ch.sample_id
"""
_TABLE = "hardlabel_preference_pairs"


@dataclass(frozen=True)
class PreferenceStats:
    """Per split: prompts with a chosen row, pairs made, and pairs whose rejected side is a review's."""

    prompts: dict[str, int] = field(default_factory=dict)
    pairs: dict[str, int] = field(default_factory=dict)
    by_review: dict[str, int] = field(default_factory=dict)

    @property
    def total_pairs(self) -> int:
        return sum(self.pairs.values())


def _prompts_query(dataset_id: int, lineage: dict[str, Any], query: dict[str, Any]) -> sql.Composed:
    source = query.get("query") or {}
    job_ids = [int(j) for j in source.get("job_ids") or []] or [int(j["id"]) for j in lineage.get("jobs", [])]
    stage = lineage.get("stage") or source.get("stage") or ""
    return sql.SQL(_PROMPTS).format(
        dataset_id=sql.Literal(dataset_id),
        job_ids=sql.SQL("CAST({} AS bigint[])").format(sql.Literal(job_ids)),
        stage=sql.Literal(stage),
    )


def preference_stats(
    engine: Engine, dataset_id: int, lineage: dict[str, Any], query: dict[str, Any]
) -> PreferenceStats:
    """How many prompts and pairs each split has (splits without a prompt are left out)."""
    statement = sql.SQL(
        "SELECT split, count(*), count(rejected_sample_id), count(*) FILTER (WHERE by_review) "
        "FROM ({}) prompts GROUP BY split"
    ).format(_prompts_query(dataset_id, lineage, query))
    pooled = engine.raw_connection()
    try:
        connection = pooled.driver_connection
        assert connection is not None
        with connection.cursor() as cursor:
            cursor.execute(statement)
            rows = cursor.fetchall()
        connection.rollback()
    finally:
        pooled.close()
    found = {split: (int(p), int(n), int(r)) for split, p, n, r in rows}
    order = [split for split in ("train", "test") if split in found]
    return PreferenceStats(
        prompts={s: found[s][0] for s in order},
        pairs={s: found[s][1] for s in order},
        by_review={s: found[s][2] for s in order},
    )


def pair_batches(
    engine: Engine,
    dataset_id: int,
    lineage: dict[str, Any],
    query: dict[str, Any],
    split: str,
    batch_bytes: int = DEFAULT_BATCH_BYTES,
    *,
    provenance: bool = False,
) -> Iterator[pa.RecordBatch]:
    """The split's pairs in row order, as source_schema("preference") batches.

    The pairs are computed once into a temporary table (dropped with the read's transaction), then
    streamed out with COPY like the rows of the other formats.
    """
    table = sql.Identifier(_TABLE)
    setup = [
        sql.SQL(
            "CREATE TEMPORARY TABLE {} ON COMMIT DROP AS SELECT * FROM ({}) prompts "
            "WHERE split = {} AND rejected_sample_id IS NOT NULL"
        ).format(table, _prompts_query(dataset_id, lineage, query), sql.Literal(split))
    ]
    longest = sql.SQL(
        "SELECT max(octet_length(question) + octet_length(chosen) + octet_length(rejected) "
        "+ coalesce(octet_length(system), 0)) FROM {}"
    ).format(table)
    columns = "p.question, p.chosen, p.rejected, p.system"
    if provenance:
        columns += (
            ", 'teacher', p.sample_id, p.job_id, j.teachers -> coalesce(s.teacher_index, 0) ->> 'model', "
            "p.item_index, p.rejected_sample_id"
        )
        longest = sql.SQL("SELECT ({}) + {}").format(longest, sql.SQL(LONGEST_TEACHER_MODEL))
    statement = sql.SQL(
        "SELECT {} FROM {} p LEFT JOIN job j ON j.id = p.job_id LEFT JOIN sample s ON s.id = p.sample_id "
        "ORDER BY p.row_index"
    ).format(sql.SQL(columns), table)
    schema = source_schema("preference", provenance=provenance)
    return copy_batches(engine, statement, schema, longest=longest, setup=setup, batch_bytes=batch_bytes)
