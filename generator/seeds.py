"""Seed data: the rows a recipe's templates are rendered over.

Sources (a recipe's `seeds:` block):

- `records`: inline list of rows, or `path`: a JSONL / JSON (list of objects) / CSV / Parquet
  file, or `hf_dataset`: a Hugging Face dataset saved with `save_to_disk` (a folder) or a hub id
  (where a hub is reachable), with `split`.
- `values`: a mapping of variable → list; their cartesian product. With a row source too, every row
  is combined with every combination (rows × product).

Then, in this order: `shuffle` (seeded by the recipe's seed), `sample: k` (k rows drawn with the
recipe's seed, kept in source order unless shuffled), `limit: n` (the first n). A row's position in
the result is its `item_index`; the same recipe always yields the same rows in the same order.
CSV values are strings (CSV has no types). Values are converted to JSON-compatible Python types so
they can be stored with the samples.
"""

from __future__ import annotations

import base64
import csv
import datetime
import decimal
import itertools
import json
import random
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, model_validator

from generator.derived_seeds import derive_seed
from generator.errors import RecipeError

SeedFormat = Literal["jsonl", "json", "csv", "parquet"]
_SUFFIX_FORMATS: dict[str, SeedFormat] = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "json",
    ".csv": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
}


class SeedSpec(BaseModel):
    """Where a recipe's seed rows come from and how they are ordered (see the module docstring)."""

    model_config = ConfigDict(extra="forbid")

    values: dict[str, list[Any]] | None = Field(
        default=None, description="Variable → list of values; rows are their cartesian product."
    )
    records: list[dict[str, Any]] | None = Field(default=None, description="Inline rows.")
    path: str | None = Field(
        default=None, description="JSONL/JSON/CSV/Parquet file, relative to the recipe's folder."
    )
    format: SeedFormat | None = Field(default=None, description="File format; default: from the suffix.")
    hf_dataset: str | None = Field(
        default=None, description="Folder written by `Dataset.save_to_disk`, or a hub dataset id."
    )
    split: str | None = Field(default=None, description="Dataset split (default: train).")
    shuffle: bool = False
    sample: int | None = Field(default=None, ge=1, description="Draw this many rows (seeded).")
    limit: int | None = Field(default=None, ge=0, description="Keep only the first rows.")

    @model_validator(mode="after")
    def _one_source(self) -> SeedSpec:
        sources = [name for name in ("records", "path", "hf_dataset") if getattr(self, name) is not None]
        if len(sources) > 1:
            raise ValueError(f"give one of records, path, hf_dataset (got {', '.join(sources)})")
        if not sources and self.values is None:
            raise ValueError("give at least one of values, records, path, hf_dataset")
        for variable, options in (self.values or {}).items():
            if not options:
                raise ValueError(f"values.{variable}: must list at least one value")
        if self.format is not None and self.path is None:
            raise ValueError("format: only applies with path")
        if self.split is not None and self.hf_dataset is None:
            raise ValueError("split: only applies with hf_dataset")
        return self


class Seeded(Protocol):
    """What seed rows depend on: a recipe's `seeds` block and its `seed` (generator.recipe.Recipe).

    A protocol, so this module needs nothing of the recipe module, which builds on it."""

    @property
    def seeds(self) -> SeedSpec: ...

    @property
    def seed(self) -> int: ...


def load_seed_rows(recipe: Seeded, base_dir: Path | None = None) -> list[dict[str, Any]]:
    """The recipe's seed rows in item order (position == item_index); deterministic per recipe.

    Args:
        recipe: the recipe; its `seeds` block and `seed` decide the rows and their order.
        base_dir: folder relative paths resolve against (the recipe file's folder); default: cwd.

    Raises:
        RecipeError: unreadable or malformed seed data.
    """
    return rows_from_spec(recipe.seeds, seed=recipe.seed, base_dir=base_dir)


def rows_from_spec(spec: SeedSpec, *, seed: int, base_dir: Path | None = None) -> list[dict[str, Any]]:
    """`load_seed_rows` for a bare SeedSpec and seed."""
    source = _source_rows(spec, base_dir)
    rows = _combine(source, spec.values) if spec.values is not None else source or []
    if spec.shuffle:
        random.Random(derive_seed("seeds.shuffle", seed)).shuffle(rows)
    if spec.sample is not None and spec.sample < len(rows):
        picked = random.Random(derive_seed("seeds.sample", seed)).sample(range(len(rows)), spec.sample)
        if not spec.shuffle:
            picked.sort()
        rows = [rows[i] for i in picked]
    if spec.limit is not None:
        rows = rows[: spec.limit]
    return rows


def seed_columns(spec: SeedSpec, base_dir: Path | None = None) -> list[str]:
    """The variable names seed rows provide, read cheaply (first rows / schema, not the whole file)."""
    columns: dict[str, None] = {}
    if spec.records is not None:
        for record in spec.records:
            columns.update(dict.fromkeys(record))
    elif spec.path is not None:
        columns.update(dict.fromkeys(_file_columns(spec, base_dir)))
    elif spec.hf_dataset is not None:
        columns.update(dict.fromkeys(_hf_dataset(spec, base_dir).column_names))
    columns.update(dict.fromkeys(spec.values or {}))
    return list(columns)


def _combine(rows: list[dict[str, Any]] | None, values: Mapping[str, list[Any]]) -> list[dict[str, Any]]:
    names = list(values)
    combinations = [dict(zip(names, combo, strict=True)) for combo in itertools.product(*values.values())]
    combinations = [{name: to_plain(value) for name, value in combo.items()} for combo in combinations]
    if rows is None:
        return combinations
    return [{**row, **combo} for row in rows for combo in combinations]


def _source_rows(spec: SeedSpec, base_dir: Path | None) -> list[dict[str, Any]] | None:
    if spec.records is not None:
        return [_plain_row(record) for record in spec.records]
    if spec.path is not None:
        return [_plain_row(record) for record in _read_file(spec, base_dir)]
    if spec.hf_dataset is not None:
        return [_plain_row(record) for record in _hf_dataset(spec, base_dir).to_list()]
    return None


def _resolve(path: str, base_dir: Path | None) -> Path:
    candidate = Path(path).expanduser()
    if not candidate.is_absolute() and base_dir is not None:
        candidate = base_dir / candidate
    return candidate


def _file_format(spec: SeedSpec, file: Path) -> SeedFormat:
    if spec.format is not None:
        return spec.format
    try:
        return _SUFFIX_FORMATS[file.suffix.lower()]
    except KeyError:
        raise RecipeError(
            f"seeds.path: cannot tell the format of '{file.name}'; "
            f"set seeds.format to one of jsonl, json, csv, parquet"
        ) from None


def _existing_file(spec: SeedSpec, base_dir: Path | None) -> Path:
    assert spec.path is not None
    file = _resolve(spec.path, base_dir)
    if not file.is_file():
        raise RecipeError(f"seeds.path: file not found: {file}")
    return file


def _read_file(spec: SeedSpec, base_dir: Path | None) -> list[Mapping[str, Any]]:
    file = _existing_file(spec, base_dir)
    kind = _file_format(spec, file)
    try:
        if kind == "jsonl":
            return list(_read_jsonl(file))
        if kind == "json":
            return _read_json(file)
        if kind == "csv":
            with file.open(newline="", encoding="utf-8-sig") as handle:
                return list(csv.DictReader(handle))
        import pyarrow.parquet as pq

        return list(pq.read_table(file).to_pylist())
    except RecipeError:
        raise
    except (OSError, ValueError) as error:
        raise RecipeError(f"seeds.path: cannot read {file.name} as {kind}: {error}") from None
    except Exception as error:  # pyarrow raises its own error types for corrupt files
        raise RecipeError(f"seeds.path: cannot read {file.name} as {kind}: {error}") from None


def _read_jsonl(file: Path) -> Iterable[Mapping[str, Any]]:
    with file.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise RecipeError(
                    f"seeds.path: {file.name} line {number}: invalid JSON ({error.msg})"
                ) from None
            if not isinstance(record, dict):
                raise RecipeError(f"seeds.path: {file.name} line {number}: expected a JSON object")
            yield record


def _read_json(file: Path) -> list[Mapping[str, Any]]:
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise RecipeError(
            f"seeds.path: {file.name} line {error.lineno}: invalid JSON ({error.msg})"
        ) from None
    if not isinstance(data, list) or not all(isinstance(record, dict) for record in data):
        raise RecipeError(f"seeds.path: {file.name}: expected a JSON list of objects")
    return data


def _file_columns(spec: SeedSpec, base_dir: Path | None) -> list[str]:
    file = _existing_file(spec, base_dir)
    kind = _file_format(spec, file)
    if kind == "parquet":
        import pyarrow.parquet as pq

        try:
            return list(pq.read_schema(file).names)
        except Exception as error:
            raise RecipeError(f"seeds.path: cannot read {file.name} as parquet: {error}") from None
    if kind == "csv":
        with file.open(newline="", encoding="utf-8-sig") as handle:
            return list(csv.DictReader(handle).fieldnames or [])
    columns: dict[str, None] = {}
    if kind == "jsonl":
        for record in itertools.islice(_read_jsonl(file), 100):
            columns.update(dict.fromkeys(record))
    else:
        for record in _read_json(file)[:100]:
            columns.update(dict.fromkeys(record))
    return list(columns)


def _hf_dataset(spec: SeedSpec, base_dir: Path | None) -> Any:
    assert spec.hf_dataset is not None
    import datasets

    local = _resolve(spec.hf_dataset, base_dir)
    try:
        if local.exists():
            loaded = datasets.load_from_disk(str(local))
            if isinstance(loaded, datasets.DatasetDict):
                return _pick_split(loaded, spec.split)
            if spec.split is not None:
                raise RecipeError(
                    f"seeds.split: {local} holds a single dataset, not splits; remove seeds.split"
                )
            return loaded
        return datasets.load_dataset(spec.hf_dataset, split=spec.split or "train")
    except RecipeError:
        raise
    except Exception as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise RecipeError(f"seeds.hf_dataset: cannot load '{spec.hf_dataset}': {first_line}") from None


def _pick_split(loaded: Any, split: str | None) -> Any:
    names = list(loaded.keys())
    if split is None:
        if "train" in names:
            return loaded["train"]
        if len(names) == 1:
            return loaded[names[0]]
        raise RecipeError(f"seeds.split: required, the dataset has splits {', '.join(names)}")
    if split not in names:
        raise RecipeError(f"seeds.split: no split '{split}' (have {', '.join(names)})")
    return loaded[split]


def _plain_row(record: Mapping[str, Any]) -> dict[str, Any]:
    return {str(key): to_plain(value) for key, value in record.items()}


def to_plain(value: Any) -> Any:
    """A JSON-compatible copy of `value` (dates → ISO text, bytes → base64, numpy → Python)."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, Mapping):
        return {str(key): to_plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [to_plain(item) for item in value]
    if isinstance(value, datetime.date | datetime.time):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    if hasattr(value, "tolist"):  # numpy scalars and arrays
        return to_plain(value.tolist())
    return str(value)
