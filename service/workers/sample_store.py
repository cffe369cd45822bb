"""Writing teacher samples: GeneratedSample → sample rows, inserted exactly once.

A chunk's rows go in with one pipelined ``executemany`` (psycopg sends every row without waiting
for each answer: about twice the rate of one ``INSERT ... SELECT FROM unnest(arrays)`` here) and
``ON CONFLICT (job_id, item_index, stage, sample_index, teacher_index) DO NOTHING``: a redone chunk
(after a crash, or a commit whose answer was lost) inserts nothing twice, and the row count says
how many were new.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

from psycopg.types.json import Jsonb
from sqlalchemy import CursorResult, text
from sqlalchemy.orm import Session

from generator.samples import GeneratedSample
from service.stored_text import with_unstorable_replaced


@dataclass(frozen=True)
class SampleRow:
    """The stored columns of one sample (job-level identity plus the generator's output)."""

    job_id: int
    item_index: int
    stage: str
    sample_index: int
    parent_sample_index: int | None
    question: str
    answer: str | None
    raw_text: str
    parsed: Any
    parse_status: str
    parse_error: str | None
    score: float | None
    inputs: dict[str, Any]
    provenance: dict[str, Any]
    # Packed top-k log-probabilities (generator.soft_labels), where the stage asked for them.
    soft_labels: bytes | None = None
    # Which of the job's teachers wrote it.
    teacher_index: int = 0


# Stored columns, in insert order.
COLUMNS: tuple[str, ...] = (
    "job_id",
    "item_index",
    "stage",
    "sample_index",
    "parent_sample_index",
    "question",
    "answer",
    "raw_text",
    "parsed",
    "parse_status",
    "parse_error",
    "score",
    "inputs",
    "provenance",
    "soft_labels",
    "teacher_index",
)
JSON_COLUMNS = frozenset({"parsed", "inputs", "provenance"})

INSERT_SQL = text(
    f"INSERT INTO sample ({', '.join(COLUMNS)}) VALUES ({', '.join(f':{name}' for name in COLUMNS)}) "
    "ON CONFLICT (job_id, item_index, stage, sample_index, teacher_index) DO NOTHING"
)


def sample_rows(job_id: int, samples: Sequence[GeneratedSample], teacher_index: int = 0) -> list[SampleRow]:
    """The rows of a chunk's samples by one teacher (a failed parse keeps its raw text and reason)."""
    return [
        SampleRow(
            job_id=job_id,
            item_index=s.item_index,
            stage=s.stage,
            sample_index=s.sample_index,
            parent_sample_index=s.parent_sample_index,
            question=with_unstorable_replaced(s.question),
            answer=None if s.answer is None else with_unstorable_replaced(s.answer),
            raw_text=with_unstorable_replaced(s.raw_text),
            parsed=s.parsed if s.parse_ok else None,
            parse_status="ok" if s.parse_ok else "failed",
            parse_error=s.parse_error,
            score=s.score,
            inputs=s.inputs,
            provenance=s.provenance,
            soft_labels=s.soft_labels,
            teacher_index=teacher_index,
        )
        for s in samples
    ]


def insert_samples(session: Session, rows: Sequence[SampleRow]) -> int:
    """Insert the rows that are not stored yet; returns how many were new."""
    if not rows:
        return 0
    params = [row_parameters(row) for row in rows]
    result = cast(CursorResult[Any], session.execute(INSERT_SQL, params))
    return int(result.rowcount)


def row_parameters(row: SampleRow) -> dict[str, Any]:
    """A row as statement parameters (also what a COPY writes)."""
    values = {name: getattr(row, name) for name in COLUMNS}
    for name in JSON_COLUMNS:
        # SQL NULL for "no parsed value", JSON for everything else (including JSON null inside).
        value = values[name]
        values[name] = None if value is None else Jsonb(value, dumps=_json_dumps)
    return values


# An escaped NUL (\u0000) not preceded by an escaping backslash: Postgres jsonb refuses it.
_JSON_NUL = re.compile(r"(?<!\\)((?:\\\\)*)\\u0000")


def _json_dumps(value: Any) -> str:
    # ensure_ascii=False leaves a lone surrogate as the character itself, which UTF-8 cannot encode.
    dumped = with_unstorable_replaced(json.dumps(value, ensure_ascii=False))
    return _JSON_NUL.sub(r"\1\\ufffd", dumped) if "\\u0000" in dumped else dumped
