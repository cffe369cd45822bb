"""Loading prompt–completion datasets: exported folders, split files, single files; clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.trainer.trainer_factories import addition_rows, write_jsonl
from trainer.data import DatasetError, dataset_digest, load_prompt_completion


def test_loads_an_exported_dataset_dict_folder(addition_export: Path) -> None:
    splits = load_prompt_completion(addition_export)
    assert set(splits) == {"train", "test"}
    assert len(splits["train"]) == 96
    assert len(splits["test"]) == 16
    assert splits["train"][0]["completion"][0]["role"] == "assistant"
    # Rows are held in memory: TRL's tokenization must not write cache files into the export.
    before = sorted(p.name for p in addition_export.rglob("*"))
    splits["train"].map(lambda row: {"n": len(row["prompt"])})
    assert sorted(p.name for p in addition_export.rglob("*")) == before


def test_loads_jsonl_parquet_and_a_folder_of_split_files(tmp_path: Path) -> None:
    from datasets import Dataset

    rows = addition_rows(5)
    jsonl = write_jsonl(tmp_path / "one.jsonl", rows)
    assert len(load_prompt_completion(jsonl)["train"]) == 5

    parquet = tmp_path / "rows.parquet"
    Dataset.from_list(rows).to_parquet(str(parquet))
    assert load_prompt_completion(parquet)["train"][2] == rows[2]

    folder = tmp_path / "splits"
    write_jsonl(folder / "train.jsonl", rows)
    write_jsonl(folder / "test.jsonl", rows[:2])
    assert {name: len(split) for name, split in load_prompt_completion(folder).items()} == {
        "train": 5,
        "test": 2,
    }


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "has no rows"),
        (json.dumps({"messages": []}) + "\n", "missing column"),
        ('{"prompt": [{"role": "user", "content": "q"}], "completion": "a"}\n', "completion must be"),
        (
            '{"prompt": [{"role": "user", "content": "q"}], '
            '"completion": [{"role": "user", "content": "a"}]}\n',
            "only 'assistant' messages",
        ),
        (
            '{"prompt": [{"role": "oracle", "content": "q"}], '
            '"completion": [{"role": "assistant", "content": "a"}]}\n',
            "unknown role 'oracle'",
        ),
        ('{"prompt": [\n', r"bad\.jsonl:1: invalid JSON"),
    ],
)
def test_refuses_rows_that_are_not_conversational_prompt_completion(
    tmp_path: Path, content: str, message: str
) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(content)
    with pytest.raises(DatasetError, match=message):
        load_prompt_completion(path)


def test_refuses_missing_paths_and_folders_without_data(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="not found"):
        load_prompt_completion(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no saved dataset"):
        load_prompt_completion(tmp_path / "empty")
    write_jsonl(tmp_path / "only-test" / "test.jsonl", addition_rows(2))
    with pytest.raises(DatasetError, match="no 'train' split"):
        load_prompt_completion(tmp_path / "only-test")


def test_dataset_digest_follows_the_content(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "a.jsonl", addition_rows(3))
    first = dataset_digest(path)
    assert first == dataset_digest(path)
    assert first.startswith("sha256:")
    write_jsonl(path, addition_rows(4))
    assert dataset_digest(path) != first
