"""Writing teacher samples: GeneratedSample → sample rows, inserted exactly once.

A chunk's rows go in as ONE statement (``INSERT ... SELECT FROM unnest(column arrays)``) with
``ON CONFLICT (job_id, item_index, stage, sample_index) DO NOTHING``: a redone chunk (after a crash,
or a commit whose answer was lost) inserts nothing twice, and the row count says how many were new.
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


# (column, SQL array type) in insert order.
COLUMNS: tuple[tuple[str, str], ...] = (
    ("job_id", "bigint[]"),
    ("item_index", "integer[]"),
    ("stage", "text[]"),
    ("sample_index", "integer[]"),
    ("parent_sample_index", "integer[]"),
    ("question", "text[]"),
    ("answer", "text[]"),
    ("raw_text", "text[]"),
    ("parsed", "jsonb[]"),
    ("parse_status", "text[]"),
    ("parse_error", "text[]"),
    ("score", "double precision[]"),
    ("inputs", "jsonb[]"),
    ("provenance", "jsonb[]"),
)
JSON_COLUMNS = frozenset({"parsed", "inputs", "provenance"})

_names = ", ".join(name for name, _ in COLUMNS)
_arrays = ", ".join(f"CAST(:{name} AS {sql_type})" for name, sql_type in COLUMNS)
INSERT_SQL = text(
    f"INSERT INTO sample ({_names}) SELECT * FROM unnest({_arrays}) "
    "ON CONFLICT (job_id, item_index, stage, sample_index) DO NOTHING"
)


def sample_rows(job_id: int, samples: Sequence[GeneratedSample]) -> list[SampleRow]:
    """The rows to store for a chunk's samples (a failed parse keeps its raw text and reason)."""
    return [
        SampleRow(
            job_id=job_id,
            item_index=s.item_index,
            stage=s.stage,
            sample_index=s.sample_index,
            parent_sample_index=s.parent_sample_index,
            question=_no_nul(s.question),
            answer=None if s.answer is None else _no_nul(s.answer),
            raw_text=_no_nul(s.raw_text),
            parsed=s.parsed if s.parse_ok else None,
            parse_status="ok" if s.parse_ok else "failed",
            parse_error=s.parse_error,
            score=s.score,
            inputs=s.inputs,
            provenance=s.provenance,
        )
        for s in samples
    ]


def insert_samples(session: Session, rows: Sequence[SampleRow]) -> int:
    """Insert the rows that are not stored yet; returns how many were new."""
    if not rows:
        return 0
    params: dict[str, list[Any]] = {}
    for name, _ in COLUMNS:
        values = [getattr(row, name) for row in rows]
        if name in JSON_COLUMNS:
            # SQL NULL for "no parsed value", JSON for everything else (including JSON null inside).
            values = [None if v is None else Jsonb(v, dumps=_json_dumps) for v in values]
        params[name] = values
    result = cast(CursorResult[Any], session.execute(INSERT_SQL, params))
    return int(result.rowcount)


def _no_nul(value: str) -> str:
    # Postgres text cannot hold NUL; a teacher can emit one. Keep everything else byte for byte.
    return value.replace("\x00", "\ufffd") if "\x00" in value else value


# An escaped NUL (\u0000) not preceded by an escaping backslash: Postgres jsonb refuses it.
_JSON_NUL = re.compile(r"(?<!\\)((?:\\\\)*)\\u0000")


def _json_dumps(value: Any) -> str:
    dumped = json.dumps(value, ensure_ascii=False)
    return _JSON_NUL.sub(r"\1\\ufffd", dumped) if "\\u0000" in dumped else dumped
