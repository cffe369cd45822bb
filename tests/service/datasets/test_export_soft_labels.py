"""Soft-label export columns (issue #13 point 1): only when asked, aligned to the teacher's tokens."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient

from generator.soft_labels import SoftLabels, pack
from service.datasets.export.folder import export_to_folder
from service.datasets.export.formats import SoftLabelsUnsupported
from service.datasets.service import manifest_of
from service.db.models import DatasetVersion
from service.db.session import get_engine, transaction
from tests.service.conftest import Caller, create_version, insert_samples, make_job, sample_row

SOFT = ["completion_token_ids", "teacher_topk_ids", "teacher_topk_logprobs"]


def labels_of(i: int) -> SoftLabels:
    tokens = [10 + i, 20 + i, 2]
    return SoftLabels(
        k=2,
        token_ids=tokens,
        topk_ids=[[t, 99] for t in tokens],
        topk_logprobs=[[-0.25, -2.5] for _ in tokens],
    )


@pytest.fixture(scope="module")
def version(client: TestClient, admin: Caller, reviewer: Caller, curation_db_url: str) -> dict[str, Any]:
    job_id = make_job(curation_db_url, teacher="/models/teacher-soft")
    rows = [
        sample_row(job_id, 200 + i, f"What is {i} + 5?", f"{i + 5}", soft_labels=pack(labels_of(i)))
        for i in range(6)
    ]
    rows.append(sample_row(job_id, 300, "What is 9 + 9?", "18"))  # a stage without logprobs
    insert_samples(curation_db_url, rows)
    client.post(
        "/v1/samples/review", json={"query": {"job_id": job_id}, "action": "accept"}, headers=reviewer.headers
    )
    body = {
        "name": "export-soft-labels",
        "query": {"job_ids": [job_id]},
        "split": {"test_fraction": 0.0, "seed": 1},
        "ground_truth": {"records": [{"question": "What is 1 + 1?", "answer": "2"}]},
    }
    response = create_version(client, admin.headers, json=body)
    assert response.status_code == 200, response.text
    return dict(response.json())


def manifest(url: str, dataset_id: int) -> Any:
    with transaction(url) as session:
        row = session.get(DatasetVersion, dataset_id)
        assert row is not None
        return manifest_of(row)


@pytest.mark.parametrize("fmt", ["prompt_completion", "messages", "alpaca"])
def test_soft_label_columns_only_when_asked(
    curation_db_url: str, version: dict[str, Any], tmp_path: Path, fmt: str
) -> None:
    engine, found = get_engine(curation_db_url), manifest(curation_db_url, version["id"])
    plain = export_to_folder(engine, found, fmt, "parquet", tmp_path / "plain")
    soft = export_to_folder(engine, found, fmt, "parquet", tmp_path / "soft", soft_labels=True)
    assert plain == soft == {"train": 8}
    base = pq.read_table(tmp_path / "plain" / "train.parquet")
    table = pq.read_table(tmp_path / "soft" / "train.parquet")
    assert not set(SOFT) & set(base.column_names)
    assert table.column_names == base.column_names + SOFT
    assert table.select(base.column_names).equals(base)
    with_labels = 0
    for row in table.to_pylist():
        question = row.get("instruction") or _question(row)
        if question.endswith("+ 5?"):
            i = int(question.split()[2])
            expected = labels_of(i)
            assert row["completion_token_ids"] == expected.token_ids
            assert row["teacher_topk_ids"] == expected.topk_ids
            assert row["teacher_topk_logprobs"] == expected.topk_logprobs
            with_labels += 1
        else:  # the sample without logprobs and the ground-truth row
            assert [row[name] for name in SOFT] == [None, None, None]
    assert with_labels == 6
    card = (tmp_path / "soft" / "README.md").read_text()
    assert "**Soft labels**" in card
    assert "`teacher_topk_logprobs`" in card


def _question(row: dict[str, Any]) -> str:
    messages = row.get("prompt") or row["messages"]
    return str(next(m["content"] for m in messages if m["role"] == "user"))


def test_the_preference_format_refuses_soft_labels(
    curation_db_url: str, version: dict[str, Any], tmp_path: Path
) -> None:
    with pytest.raises(SoftLabelsUnsupported, match="preference"):
        export_to_folder(
            get_engine(curation_db_url),
            manifest(curation_db_url, version["id"]),
            "preference",
            "jsonl",
            tmp_path / "pref",
            soft_labels=True,
        )


def test_rest_downloads_carry_soft_labels_when_asked(
    client: TestClient, viewer: Caller, version: dict[str, Any], tmp_path: Path
) -> None:
    url = f"/v1/datasets/{version['id']}/export"
    params = {"format": "prompt_completion", "container": "parquet", "split": "train", "soft_labels": "true"}
    response = client.get(url, params=params, headers=viewer.headers)
    assert response.status_code == 200, response.text
    (tmp_path / "t.parquet").write_bytes(response.content)
    table = pq.read_table(tmp_path / "t.parquet")
    assert table.column_names[-3:] == SOFT
    assert sum(v is not None for v in table.column("completion_token_ids").to_pylist()) == 6
    refused = client.get(url, params={**params, "format": "preference"}, headers=viewer.headers)
    assert refused.status_code == 422
    assert "soft_labels" in refused.text
