"""Exports load unchanged with `datasets` (JSONL, Parquet, an HF folder), carry a dataset card,
stream over the API, come out of `hardlabel export`, and train with a plain `trl.SFTTrainer`."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient
from sqlalchemy import select

from service.cli import main as cli
from service.db.models import DatasetRow
from service.db.session import transaction
from service.settings import get_settings
from tests.service.conftest import (
    Caller,
    accepted_version,
    create_version,
    insert_samples,
    make_job,
    sample_row,
)

SYSTEM = "Answer with the number only."


@pytest.fixture(scope="module")
def version(client: TestClient, admin: Caller, reviewer: Caller, curation_db_url: str) -> dict[str, Any]:
    job_id = make_job(curation_db_url)
    created = accepted_version(
        client,
        admin,
        reviewer,
        [sample_row(job_id, i, f"What is {i} + {i}?", f"{2 * i}") for i in range(24)],
        job_id,
        name="export-me",
        split={"test_fraction": 0.25, "seed": 1},
        ground_truth={"records": [{"question": "What is 10 + 10?", "answer": "20", "system": SYSTEM}]},
    )
    assert created["row_counts"] == {"total": 25, "train": 19, "test": 6, "teacher": 24, "ground_truth": 1}
    return created


def expected_rows(database_url: str, dataset_id: int, split: str) -> list[tuple[str, str, str | None]]:
    with transaction(database_url) as session:
        return [
            (q, a, s)
            for q, a, s in session.execute(
                select(DatasetRow.question, DatasetRow.answer, DatasetRow.system)
                .where(DatasetRow.dataset_id == dataset_id, DatasetRow.split == split)
                .order_by(DatasetRow.row_index)
            )
        ]


def as_flat(fmt: str, row: dict[str, Any]) -> tuple[str, str, str | None]:
    """A loaded export row back as (question, answer, system)."""
    if fmt == "prompt_completion":
        system = next((m["content"] for m in row["prompt"] if m["role"] == "system"), None)
        assert [m["role"] for m in row["completion"]] == ["assistant"]
        return row["prompt"][-1]["content"], row["completion"][0]["content"], system
    if fmt == "messages":
        roles = [m["role"] for m in row["messages"]]
        assert roles[-2:] == ["user", "assistant"]
        system = row["messages"][0]["content"] if roles[0] == "system" else None
        return row["messages"][-2]["content"], row["messages"][-1]["content"], system
    assert row["input"] == ""
    return row["instruction"], row["output"], row.get("system")


@pytest.mark.parametrize("fmt", ["prompt_completion", "messages", "alpaca"])
@pytest.mark.parametrize("container", ["jsonl", "parquet"])
def test_streamed_downloads_load_with_datasets(
    client: TestClient,
    viewer: Caller,
    curation_db_url: str,
    version: dict[str, Any],
    tmp_path: Path,
    fmt: str,
    container: str,
) -> None:
    from datasets import load_dataset

    for split in ("train", "test"):
        response = client.get(
            f"/v1/datasets/{version['id']}/export",
            params={"format": fmt, "container": container, "split": split},
            headers=viewer.headers,
        )
        assert response.status_code == 200, response.text
        assert response.headers["x-dataset-digest"] == version["digest"]
        path = tmp_path / f"{split}.{container}"
        path.write_bytes(response.content)
        loaded = load_dataset(
            "json" if container == "jsonl" else "parquet", data_files=str(path), split="train"
        )
        assert [as_flat(fmt, row) for row in loaded] == expected_rows(curation_db_url, version["id"], split)


def test_hf_folder_download_loads_from_disk(
    client: TestClient, viewer: Caller, curation_db_url: str, version: dict[str, Any], tmp_path: Path
) -> None:
    from datasets import load_from_disk

    response = client.get(
        f"/v1/datasets/{version['id']}/export",
        params={"format": "messages", "container": "hf"},
        headers=viewer.headers,
    )
    assert response.status_code == 200, response.text
    with tarfile.open(fileobj=io.BytesIO(response.content)) as tar:
        tar.extractall(tmp_path, filter="data")
    folder = tmp_path / f"export-me-v{version['version']}"
    card = (folder / "README.md").read_text()
    assert version["digest"] in card
    assert "## Lineage" in card
    loaded = load_from_disk(str(folder))
    assert sorted(loaded) == ["test", "train"]
    for split in ("train", "test"):
        assert [as_flat("messages", row) for row in loaded[split]] == expected_rows(
            curation_db_url, version["id"], split
        )


def test_export_problems(client: TestClient, viewer: Caller, version: dict[str, Any], admin: Caller) -> None:
    bad_format = client.get(
        f"/v1/datasets/{version['id']}/export", params={"format": "csv"}, headers=viewer.headers
    )
    assert bad_format.status_code == 422
    assert bad_format.json()["errors"][0]["field"] == "format"
    assert client.get("/v1/datasets/987654321/export", headers=viewer.headers).status_code == 404
    card = client.get(f"/v1/datasets/{version['id']}/card", headers=viewer.headers)
    assert card.status_code == 200
    assert card.text.startswith("---\n")


@pytest.fixture
def cli_env(curation_db_url: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("HARDLABEL_DATABASE_URL", curation_db_url)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def test_cli_export_writes_a_folder_load_dataset_understands(
    cli_env: None, curation_db_url: str, version: dict[str, Any], tmp_path: Path
) -> None:
    from datasets import load_dataset

    out = tmp_path / "out"
    result = CliRunner().invoke(
        cli,
        [
            "export",
            str(version["id"]),
            "--format",
            "prompt_completion",
            "--container",
            "jsonl",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "test.jsonl", "train.jsonl"]
    loaded = load_dataset(str(out))  # the card's YAML header names the splits' files
    assert {split: len(loaded[split]) for split in loaded} == {"train": 19, "test": 6}
    first = json.loads((out / "train.jsonl").read_text().splitlines()[0])
    assert set(first) == {"prompt", "completion"}

    again = CliRunner().invoke(cli, ["export", str(version["id"]), "--out", str(out)])
    assert again.exit_code == 2
    assert "is not empty" in again.output
    missing = CliRunner().invoke(cli, ["export", "987654321", "--out", str(tmp_path / "x")])
    assert missing.exit_code == 2
    assert "error: dataset version 987654321 does not exist" in missing.output


def test_export_trains_with_a_plain_sft_trainer(
    cli_env: None, version: dict[str, Any], tmp_path: Path, tiny_model_dir: Path
) -> None:
    from datasets import load_from_disk
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl.trainer.sft_config import SFTConfig
    from trl.trainer.sft_trainer import SFTTrainer

    out = tmp_path / "hf"
    result = CliRunner().invoke(cli, ["export", str(version["id"]), "--container", "hf", "--out", str(out)])
    assert result.exit_code == 0, result.output
    dataset: Any = load_from_disk(str(out))
    model = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir))
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    config = SFTConfig(
        output_dir=str(tmp_path / "run"),
        max_steps=2,
        per_device_train_batch_size=4,
        bf16=False,
        use_cpu=True,
        gradient_checkpointing=False,
        dataloader_pin_memory=False,
        report_to=[],
        logging_steps=1,
        save_strategy="no",
        max_length=128,
    )
    trainer = SFTTrainer(
        model=model,
        args=config,
        train_dataset=dataset["train"],
        eval_dataset=dataset["test"],
        processing_class=tokenizer,
    )
    # Conversational prompt–completion: the loss covers the completion only.
    prepared: Any = trainer.train_dataset
    batch = trainer.data_collator([prepared[0]])
    labels, ids = batch["labels"][0], batch["input_ids"][0]
    kept = str(tokenizer.decode(ids[labels != -100]))
    assert kept.startswith(dataset["train"][0]["completion"][0]["content"])
    outcome = trainer.train()
    assert outcome.global_step == 2
    assert all(entry["loss"] > 0 for entry in trainer.state.log_history if "loss" in entry)


# CSV's hard cases: quotes, separators, line breaks, empty strings (not NULL), what looks like NULL.
TRICKY = [
    'He said "hi", then left.',
    "line one\nline two\r\nthree",
    "",
    "ünïcødé ✓ 数字",
    ",,,",
    '""',
    "\\N",
    "NULL",
]


def test_rows_stream_out_exactly_in_small_batches(
    client: TestClient, admin: Caller, reviewer: Caller, curation_db_url: str
) -> None:
    from service.datasets.export.rows import flat_batches
    from service.db.session import get_engine

    job_id = make_job(curation_db_url)
    texts = [*TRICKY, "long " * 60, *(f"plain answer {i} " * 4 for i in range(40))]  # one row > 256 bytes
    insert_samples(curation_db_url, [sample_row(job_id, i, f"q{i}: {t}", t) for i, t in enumerate(texts)])
    client.post(
        "/v1/samples/review", json={"query": {"job_id": job_id}, "action": "accept"}, headers=reviewer.headers
    )
    body = {
        "name": "tricky",
        "query": {"job_ids": [job_id]},
        "ground_truth": {"records": [{"question": "gt", "answer": "x", "system": 'a\n"system", too'}]},
    }
    response = create_version(client, admin.headers, json=body)
    assert response.status_code == 200, response.text
    dataset_id = response.json()["id"]
    expected = expected_rows(curation_db_url, dataset_id, "train")
    assert len(expected) == len(texts) + 1
    assert any(system is None for _, _, system in expected)
    assert any(system for _, _, system in expected)

    batches = list(flat_batches(get_engine(curation_db_url), dataset_id, "train", batch_bytes=256))
    assert len(batches) > 1
    streamed = [(r["question"], r["answer"], r["system"]) for b in batches for r in b.to_pylist()]
    assert streamed == expected  # NULL stays None, "" stays "", order kept
