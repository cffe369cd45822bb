"""Reading user evaluation sets (JSONL, Parquet, HF `save_to_disk` folders) as labelled texts.

HF folders are read with pyarrow directly (their shards are Arrow IPC streams listed in
state.json), so neither the API nor a worker needs the `datasets` library for this.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from service.filters.specs import EvalSetSpec


class EvalSetError(ValueError):
    """An evaluation set that cannot be read as asked (missing file, column, or bad format)."""


@dataclass(frozen=True)
class EvalItem:
    label: str
    text: str


def resolve_format(spec: EvalSetSpec) -> str:
    """The set's format: as given, or by suffix/folder layout for "auto"."""
    if spec.format != "auto":
        return spec.format
    path = Path(spec.path)
    if path.is_dir():
        return "hf"
    suffix = path.suffix.lower()
    if suffix in {".jsonl", ".json", ".ndjson"}:
        return "jsonl"
    if suffix in {".parquet", ".pq"}:
        return "parquet"
    raise EvalSetError(f"cannot tell the format of {spec.path} (use format: jsonl | parquet | hf)")


def check_eval_set(spec: EvalSetSpec) -> str | None:
    """Why the set cannot be used (a missing path or unknown format), or None when it looks fine."""
    path = Path(spec.path)
    if not path.exists():
        return f"no such file or folder: {spec.path}"
    try:
        fmt = resolve_format(spec)
    except EvalSetError as exc:
        return str(exc)
    if fmt == "hf" and not ((path / "state.json").is_file() or (path / "dataset_dict.json").is_file()):
        return f"{spec.path} is not a `save_to_disk` folder (no state.json or dataset_dict.json)"
    if fmt in {"jsonl", "parquet"} and not path.is_file():
        return f"{spec.path} is not a file"
    return None


def _text_of(row: dict[str, Any], fields: Sequence[str], where: str) -> str:
    parts = []
    for field in fields:
        if field not in row:
            raise EvalSetError(f"{where} has no field {field!r} (fields: {', '.join(sorted(row))})")
        value = row[field]
        if value is not None:
            parts.append(value if isinstance(value, str) else json.dumps(value, ensure_ascii=False))
    return "\n".join(parts)


def _jsonl_rows(path: Path) -> Iterator[dict[str, Any]]:
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise EvalSetError(f"{path}:{number}: not JSON ({exc.msg})") from exc
            if not isinstance(row, dict):
                raise EvalSetError(f"{path}:{number}: expected a JSON object")
            yield row


def _table_rows(batches: Iterator[pa.RecordBatch]) -> Iterator[dict[str, Any]]:
    for batch in batches:
        yield from batch.to_pylist()


def _hf_split_dirs(path: Path, split: str | None) -> list[Path]:
    if (path / "dataset_dict.json").is_file():
        splits = json.loads((path / "dataset_dict.json").read_text())["splits"]
        if split is not None:
            if split not in splits:
                raise EvalSetError(f"{path} has no split {split!r} (splits: {', '.join(splits)})")
            splits = [split]
        return [path / name for name in splits]
    return [path]


def _hf_rows(path: Path, split: str | None) -> Iterator[dict[str, Any]]:
    for folder in _hf_split_dirs(path, split):
        state = json.loads((folder / "state.json").read_text())
        for data_file in state["_data_files"]:
            with pa.memory_map(str(folder / data_file["filename"])) as source:
                yield from _table_rows(iter(pa.ipc.open_stream(source)))


def read_eval_set(spec: EvalSetSpec) -> Iterator[EvalItem]:
    """The set's items: label "<name>#<id or row number>" and the text of `spec.fields` joined."""
    problem = check_eval_set(spec)
    if problem:
        raise EvalSetError(problem)
    path = Path(spec.path)
    fmt = resolve_format(spec)
    name = spec.name or path.name
    if fmt == "jsonl":
        rows = _jsonl_rows(path)
    elif fmt == "parquet":
        rows = _table_rows(pq.ParquetFile(path).iter_batches(batch_size=4096))
    else:
        rows = _hf_rows(path, spec.split)
    for number, row in enumerate(rows):
        where = f"eval set {name} row {number}"
        key = row.get(spec.id_field, number) if spec.id_field else number
        yield EvalItem(label=f"{name}#{key}", text=_text_of(row, spec.fields, where))
