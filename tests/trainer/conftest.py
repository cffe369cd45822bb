"""Fixtures for the trainer library: small synthetic prompt–completion datasets (2-digit addition)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.trainer.trainer_factories import addition_rows, write_jsonl


@pytest.fixture(scope="session")
def addition_jsonl(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """96 addition rows as a JSON-lines file."""
    return write_jsonl(tmp_path_factory.mktemp("data") / "addition.jsonl", addition_rows(96))


@pytest.fixture(scope="session")
def addition_export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An exported dataset folder (DatasetDict.save_to_disk) with train and test splits."""
    from datasets import Dataset, DatasetDict

    out = tmp_path_factory.mktemp("export") / "version-1"
    DatasetDict(
        {"train": Dataset.from_list(addition_rows(96)), "test": Dataset.from_list(addition_rows(16, seed=99))}
    ).save_to_disk(str(out))
    return out


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_model_dir: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tiny_model_dir))


@pytest.fixture(autouse=True)
def one_torch_thread() -> Iterator[None]:
    """One intra-op thread: on a shared 2-core machine two OpenMP threads per process wait on each other
    (measured here under load: 7 s/step with 2 threads vs 0.5 s with 1); restored after each test."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
