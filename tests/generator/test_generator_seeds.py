"""Seed rows: every source format, cartesian products, deterministic shuffle/sample, limit."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from generator.recipe import RecipeError, load_recipe
from generator.seeds import load_seed_rows, seed_columns

ROWS = [{"q": f"question {i}", "reference": str(i)} for i in range(6)]


def recipe_with(seeds: dict[str, Any], seed: int = 0) -> Any:
    return load_recipe(
        {
            "name": "r",
            "seed": seed,
            "seeds": seeds,
            "stages": [{"name": "answer", "messages": [{"role": "user", "content": "hi"}]}],
        }
    )


def rows(seeds: dict[str, Any], seed: int = 0, base_dir: Path | None = None) -> list[dict[str, Any]]:
    return load_seed_rows(recipe_with(seeds, seed), base_dir)


def test_values_are_a_cartesian_product_in_declaration_order() -> None:
    assert rows({"values": {"a": [1, 2], "b": ["x", "y", "z"]}}) == [
        {"a": 1, "b": "x"},
        {"a": 1, "b": "y"},
        {"a": 1, "b": "z"},
        {"a": 2, "b": "x"},
        {"a": 2, "b": "y"},
        {"a": 2, "b": "z"},
    ]


def test_records_combine_with_values() -> None:
    result = rows({"records": [{"t": "rain"}, {"t": "snow"}], "values": {"level": ["easy", "hard"]}})
    assert result == [
        {"t": "rain", "level": "easy"},
        {"t": "rain", "level": "hard"},
        {"t": "snow", "level": "easy"},
        {"t": "snow", "level": "hard"},
    ]


def write_rows(folder: Path, kind: str) -> str:
    if kind == "jsonl":
        (folder / "rows.jsonl").write_text("\n".join(json.dumps(r) for r in ROWS) + "\n\n")
        return "rows.jsonl"
    if kind == "json":
        (folder / "rows.json").write_text(json.dumps(ROWS))
        return "rows.json"
    if kind == "csv":
        lines = ["q,reference"] + [f"{r['q']},{r['reference']}" for r in ROWS]
        (folder / "rows.csv").write_text("\n".join(lines) + "\n")
        return "rows.csv"
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(ROWS), folder / "rows.parquet")
    return "rows.parquet"


@pytest.mark.parametrize("kind", ["jsonl", "json", "csv", "parquet"])
def test_files_resolve_against_the_recipe_folder(tmp_path: Path, kind: str) -> None:
    name = write_rows(tmp_path, kind)
    assert rows({"path": name}, base_dir=tmp_path) == ROWS
    assert seed_columns(recipe_with({"path": name}).seeds, tmp_path) == ["q", "reference"]


def test_format_can_be_given_for_odd_suffixes(tmp_path: Path) -> None:
    (tmp_path / "rows.txt").write_text(json.dumps(ROWS[0]) + "\n")
    assert rows({"path": "rows.txt", "format": "jsonl"}, base_dir=tmp_path) == ROWS[:1]
    with pytest.raises(RecipeError, match="cannot tell the format"):
        rows({"path": "rows.txt"}, base_dir=tmp_path)


def test_hf_dataset_from_disk_with_splits(tmp_path: Path) -> None:
    import datasets

    datasets.Dataset.from_list(ROWS).save_to_disk(str(tmp_path / "single"))
    assert rows({"hf_dataset": "single"}, base_dir=tmp_path) == ROWS
    datasets.DatasetDict(
        {"train": datasets.Dataset.from_list(ROWS[:4]), "test": datasets.Dataset.from_list(ROWS[4:])}
    ).save_to_disk(str(tmp_path / "dict"))
    assert rows({"hf_dataset": "dict"}, base_dir=tmp_path) == ROWS[:4]
    assert rows({"hf_dataset": "dict", "split": "test"}, base_dir=tmp_path) == ROWS[4:]
    with pytest.raises(RecipeError, match="no split 'dev'"):
        rows({"hf_dataset": "dict", "split": "dev"}, base_dir=tmp_path)
    assert seed_columns(recipe_with({"hf_dataset": "dict"}).seeds, tmp_path) == ["q", "reference"]


def test_hub_id_without_a_hub_is_a_clear_error() -> None:
    with pytest.raises(RecipeError, match=r"seeds\.hf_dataset: cannot load 'nobody/no-such-dataset'"):
        rows({"hf_dataset": "nobody/no-such-dataset"})


def test_shuffle_and_sample_are_deterministic_per_recipe_seed() -> None:
    spec = {"values": {"i": list(range(50))}, "shuffle": True}
    first, again, other = rows(spec, seed=1), rows(spec, seed=1), rows(spec, seed=2)
    assert first == again
    assert first != other
    assert sorted(r["i"] for r in first) == list(range(50))

    sampled = rows({"values": {"i": list(range(50))}, "sample": 10}, seed=3)
    assert sampled == rows({"values": {"i": list(range(50))}, "sample": 10}, seed=3)
    assert len(sampled) == 10
    assert [r["i"] for r in sampled] == sorted(r["i"] for r in sampled)  # source order kept without shuffle
    assert sampled != rows({"values": {"i": list(range(50))}, "sample": 10}, seed=4)


def test_limit_applies_last() -> None:
    spec = {"values": {"i": list(range(20))}, "shuffle": True, "limit": 5}
    limited = rows(spec, seed=7)
    assert limited == rows({**spec, "limit": None}, seed=7)[:5]
    assert rows({"values": {"i": [1, 2]}, "limit": 0}) == []


def test_values_become_json_compatible(tmp_path: Path) -> None:
    import datetime

    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist([{"day": datetime.date(2024, 1, 2), "n": 3}]), tmp_path / "d.parquet")
    result = rows({"path": "d.parquet"}, base_dir=tmp_path)
    assert result == [{"day": "2024-01-02", "n": 3}]
    json.dumps(result)


def test_bad_seed_files_are_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(RecipeError, match=r"seeds\.path: file not found"):
        rows({"path": "missing.jsonl"}, base_dir=tmp_path)
    (tmp_path / "bad.jsonl").write_text('{"a": 1}\n{"a": \n')
    with pytest.raises(RecipeError, match=r"bad\.jsonl line 2: invalid JSON"):
        rows({"path": "bad.jsonl"}, base_dir=tmp_path)
    (tmp_path / "list.jsonl").write_text("[1, 2]\n")
    with pytest.raises(RecipeError, match="line 1: expected a JSON object"):
        rows({"path": "list.jsonl"}, base_dir=tmp_path)
    (tmp_path / "broken.parquet").write_text("not parquet")
    with pytest.raises(RecipeError, match=r"cannot read broken\.parquet as parquet"):
        rows({"path": "broken.parquet"}, base_dir=tmp_path)


def test_only_one_row_source() -> None:
    with pytest.raises(RecipeError, match="seeds: give one of records, path, hf_dataset"):
        recipe_with({"records": [{"a": 1}], "path": "x.jsonl"})
