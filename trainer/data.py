"""Training data: conversational prompt–completion rows, from an exported dataset or a file.

A row is `{"prompt": [{"role": "user", "content": ...}, ...], "completion": [{"role": "assistant",
"content": ...}]}`: TRL then computes the loss on the completion only. Rows are loaded into memory
so TRL's tokenization never writes cache files into an exported (frozen) dataset folder.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from datasets import Dataset, DatasetDict

ROLES = {"system", "user", "assistant", "tool"}
# Rows checked one by one on load (the schema of every row is checked by Arrow anyway).
ROWS_CHECKED = 1000
FILE_SUFFIXES = (".jsonl", ".json", ".parquet")


class DatasetError(ValueError):
    """The dataset cannot be trained on (missing, empty, or not conversational prompt–completion)."""


def load_prompt_completion(path: Path) -> DatasetDict:
    """Load a dataset of conversational prompt–completion rows, one `Dataset` per split.

    Accepts a folder written by `Dataset.save_to_disk` / `DatasetDict.save_to_disk`, a folder of
    split files (`train.jsonl`, `test.parquet`, ...), or a single `.jsonl`/`.json`/`.parquet` file
    (split "train").

    Raises:
        DatasetError: with the path, split and row that is wrong.
    """
    from datasets import DatasetDict

    path = Path(path)
    if not path.exists():
        raise DatasetError(f"dataset not found: {path}")
    if path.is_dir():
        splits = _load_folder(path)
    elif path.suffix in FILE_SUFFIXES:
        splits = {"train": _load_file(path)}
    else:
        raise DatasetError(f"{path}: expected a dataset folder or a {'/'.join(FILE_SUFFIXES)} file")
    if "train" not in splits:
        raise DatasetError(f"{path}: no 'train' split (found: {', '.join(sorted(splits)) or 'none'})")
    for name, split in splits.items():
        validate_rows(split, where=f"{path} [{name}]", allow_empty=name != "train")
    return DatasetDict(splits)


def _load_folder(path: Path) -> dict[str, Dataset]:
    from datasets import Dataset, DatasetDict, load_from_disk

    if (path / "dataset_dict.json").exists() or (path / "state.json").exists():
        try:
            loaded = load_from_disk(str(path), keep_in_memory=True)
        except Exception as exc:  # datasets raises many types for a damaged folder
            raise DatasetError(f"{path}: cannot load the saved dataset ({exc})") from exc
        if isinstance(loaded, DatasetDict):
            return dict(loaded)
        if isinstance(loaded, Dataset):
            return {"train": loaded}
        raise DatasetError(f"{path}: not a map-style dataset")
    files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix in FILE_SUFFIXES)
    if not files:
        raise DatasetError(f"{path}: no saved dataset and no {'/'.join(FILE_SUFFIXES)} split files")
    stems = [p.stem for p in files]
    if len(set(stems)) != len(stems):
        raise DatasetError(f"{path}: two files for the same split ({', '.join(p.name for p in files)})")
    return {p.stem: _load_file(p) for p in files}


def _load_file(path: Path) -> Dataset:
    from datasets import Dataset

    try:
        if path.suffix == ".parquet":
            import pyarrow.parquet as pq

            return Dataset(pq.read_table(path))
        return Dataset.from_list(list(_read_json_rows(path)))
    except DatasetError:
        raise
    except Exception as exc:  # pyarrow/datasets raise many types for a malformed file
        raise DatasetError(f"{path}: cannot read ({_first_line(exc)})") from exc


def _read_json_rows(path: Path) -> Iterator[dict[str, Any]]:
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json" and text.lstrip().startswith("["):
        rows = json.loads(text)
        if not isinstance(rows, list):
            raise DatasetError(f"{path}: expected a JSON list of rows")
        yield from rows
        return
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{path}:{number}: invalid JSON ({exc.msg})") from exc
        if not isinstance(row, dict):
            raise DatasetError(f"{path}:{number}: a row must be a JSON object")
        yield row


def validate_rows(dataset: Dataset, *, where: str, allow_empty: bool = False) -> None:
    """Check the columns and the first rows are conversational prompt–completion."""
    if len(dataset) == 0:
        if allow_empty:
            return
        raise DatasetError(f"{where}: the dataset has no rows")
    missing = [column for column in ("prompt", "completion") if column not in dataset.column_names]
    if missing:
        raise DatasetError(
            f"{where}: missing column(s) {', '.join(missing)} (found: {', '.join(dataset.column_names)}); "
            "expected conversational prompt-completion rows"
        )
    for index, row in enumerate(dataset.select(range(min(ROWS_CHECKED, len(dataset))))):
        _check_messages(row["prompt"], f"{where} row {index}: prompt", last_role=None)
        _check_messages(row["completion"], f"{where} row {index}: completion", last_role="assistant")


def _check_messages(messages: object, where: str, last_role: str | None) -> None:
    if not isinstance(messages, list) or not messages:
        raise DatasetError(f"{where} must be a non-empty list of chat messages")
    for message in messages:
        if not isinstance(message, Mapping) or not isinstance(message.get("content"), str):
            raise DatasetError(f"{where} must hold messages with a 'role' and a string 'content'")
        if message.get("role") not in ROLES:
            raise DatasetError(f"{where}: unknown role {message.get('role')!r}")
    if last_role and any(message["role"] != last_role for message in messages):
        raise DatasetError(f"{where} must hold only '{last_role}' messages")


def row_texts(dataset: Dataset, limit: int | None = None) -> Iterator[str]:
    """The message contents of the rows (a tokenizer corpus for a student trained from scratch)."""
    count = len(dataset) if limit is None else min(limit, len(dataset))
    for row in dataset.select(range(count)):
        for message in [*row["prompt"], *row["completion"]]:
            yield message["content"]


def dataset_digest(path: Path) -> str:
    """sha256 over the dataset's files (relative names and bytes), for lineage when no digest is given."""
    path = Path(path)
    files: Sequence[Path] = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    digest = hashlib.sha256()
    for file in files:
        digest.update(str(file.relative_to(path) if path.is_dir() else file.name).encode())
        with file.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return f"sha256:{digest.hexdigest()}"


@contextmanager
def quiet_datasets() -> Iterator[None]:
    """No `datasets` progress bars while TRL tokenizes (callers show their own progress)."""
    import datasets

    was_enabled = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        if was_enabled:
            datasets.enable_progress_bars()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
