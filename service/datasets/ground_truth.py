"""Ground truth mixed into a version's train split: parsing an uploaded JSONL file, how many rows
to mix in at a ratio, which ones, and the rules a version's lineage and card state.

Ground truth comes from records (inline or an uploaded file) or from the version's own seed data
(`from_seed_field`: the reference each item's seed row carries); the copy of seed references is
set-based, in service/datasets/repository.py.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence

from pydantic import ValidationError

from service.datasets.schemas import GroundTruthRecord

MAX_ERRORS_SHOWN = 3
# How the rows were chosen, as the lineage (and so the card) states it.
RECORDS_CHOICE = "first n by sha256('<split seed>:<record index>'), in upload order"
SEED_CHOICE = (
    "one row per (job, item index) of this version's teacher rows whose seed carries the field (the "
    "question of the item's first row, the reference as the answer); items with a row in the test "
    "split, or whose question a test row asks, are held out; first n by "
    "sha256('<split seed>:<job id>:<item index>'), in (job, item index) order"
)


class GroundTruthError(ValueError):
    """An upload that is not JSONL of {question, answer, system?} objects (the message names lines)."""


def parse_jsonl(data: bytes) -> list[GroundTruthRecord]:
    records: list[GroundTruthRecord] = []
    problems: list[str] = []
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise GroundTruthError(f"not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            records.append(GroundTruthRecord.model_validate(json.loads(line)))
        except json.JSONDecodeError as exc:
            problems.append(f"line {number}: not JSON ({exc.msg})")
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(part) for part in first["loc"]) or "record"
            problems.append(f"line {number}: {where}: {first['msg']}")
        if len(problems) >= MAX_ERRORS_SHOWN:
            break
    if problems:
        raise GroundTruthError("; ".join(problems))
    if not records:
        raise GroundTruthError("no records")
    return records


def ground_truth_count(available: int, teacher_train_rows: int, ratio: float | None) -> int:
    """Records to mix in: all without a ratio, else min(available, round(n_teacher × r / (1 − r)))."""
    if ratio is None:
        return available
    return min(available, round(teacher_train_rows * ratio / (1 - ratio)))


def seed_field_path(field: str) -> list[str]:
    """The JSON path of a seed field: `inputs[field]` first, else the dotted path into nested objects
    (the verifier filter and the training evaluation read references the same way)."""
    return field.split(".")


def choose_records(
    records: Sequence[GroundTruthRecord], count: int, seed: int
) -> list[tuple[int, GroundTruthRecord]]:
    """The `count` records first by sha256("<seed>:<index>"), kept in upload order."""
    ranked = sorted(range(len(records)), key=lambda i: hashlib.sha256(f"{seed}:{i}".encode()).digest())
    chosen = sorted(ranked[:count])
    return [(i, records[i]) for i in chosen]


def records_digest(records: Sequence[GroundTruthRecord]) -> str:
    """sha256 of the records' canonical JSON lines (recorded in the lineage)."""
    digest = hashlib.sha256()
    for record in records:
        digest.update(json.dumps(record.model_dump(), sort_keys=True, ensure_ascii=False).encode() + b"\n")
    return digest.hexdigest()
