"""Export options of issue #15 point 8: provenance columns, a tar of every split and the card over
REST (split=all), and the preference format (prompt / chosen / rejected) for DPO-style trainers."""

from __future__ import annotations

import io
import json
import tarfile
import tempfile
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from service.datasets.export.folder import NoPreferencePairs, export_to_folder
from service.datasets.service import manifest_of
from service.db.models import DatasetRow, DatasetVersion, Sample
from service.db.session import get_engine, transaction
from tests.service.conftest import (
    Caller,
    accepted_version,
    create_version,
    insert_samples,
    make_job,
    sample_row,
)

SYSTEM = "Answer briefly."
TEACHER = "/models/teacher-provenance"
PROVENANCE = ["source", "sample_id", "job_id", "teacher", "item_index"]


@pytest.fixture(scope="module")
def version(client: TestClient, admin: Caller, reviewer: Caller, curation_db_url: str) -> dict[str, Any]:
    job_id = make_job(curation_db_url, teacher=TEACHER)
    created = accepted_version(
        client,
        admin,
        reviewer,
        [sample_row(job_id, 100 + i, f"What is {i} * 3?", f"{3 * i}") for i in range(12)],
        job_id,
        name="export-options",
        split={"test_fraction": 0.25, "seed": 3},
        ground_truth={"records": [{"question": "What is 7 * 7?", "answer": "49", "system": SYSTEM}]},
    )
    assert created["row_counts"]["ground_truth"] == 1
    return created


def expected_provenance(url: str, dataset_id: int, split: str) -> list[dict[str, Any]]:
    with transaction(url) as session:
        rows = session.execute(
            select(DatasetRow.source, DatasetRow.sample_id, Sample.job_id, Sample.item_index)
            .outerjoin(Sample, Sample.id == DatasetRow.sample_id)
            .where(DatasetRow.dataset_id == dataset_id, DatasetRow.split == split)
            .order_by(DatasetRow.row_index)
        ).all()
    return [
        {
            "source": source,
            "sample_id": sample_id,
            "job_id": job_id,
            "teacher": TEACHER if sample_id is not None else None,
            "item_index": item_index,
        }
        for source, sample_id, job_id, item_index in rows
    ]


def manifest(url: str, dataset_id: int) -> Any:
    with transaction(url) as session:
        row = session.get(DatasetVersion, dataset_id)
        assert row is not None
        return manifest_of(row)


@pytest.mark.parametrize("fmt", ["prompt_completion", "messages", "alpaca"])
@pytest.mark.parametrize("container", ["jsonl", "parquet"])
def test_provenance_columns_in_downloads(
    client: TestClient,
    viewer: Caller,
    curation_db_url: str,
    version: dict[str, Any],
    tmp_path: Path,
    fmt: str,
    container: str,
) -> None:
    from datasets import load_dataset

    loader = "json" if container == "jsonl" else "parquet"
    for split in ("train", "test"):
        url = f"/v1/datasets/{version['id']}/export"
        params = {"format": fmt, "container": container, "split": split}
        plain = client.get(url, params=params, headers=viewer.headers)
        with_provenance = client.get(url, params={**params, "provenance": "true"}, headers=viewer.headers)
        assert plain.status_code == with_provenance.status_code == 200, with_provenance.text
        plain_path, prov_path = (
            tmp_path / f"plain-{split}.{container}",
            tmp_path / f"prov-{split}.{container}",
        )
        plain_path.write_bytes(plain.content)
        prov_path.write_bytes(with_provenance.content)
        cache = str(tmp_path / "hf-cache")
        base = load_dataset(loader, data_files=str(plain_path), split="train", cache_dir=cache)
        loaded = load_dataset(loader, data_files=str(prov_path), split="train", cache_dir=cache)
        assert not set(PROVENANCE) & set(base.column_names)  # off by default: exports unchanged
        assert loaded.column_names == base.column_names + PROVENANCE
        got = [{k: row[k] for k in PROVENANCE} for row in loaded]
        assert got == expected_provenance(curation_db_url, version["id"], split)
        assert [{k: row[k] for k in base.column_names} for row in loaded] == list(base)
    ground_truth = [
        r for r in expected_provenance(curation_db_url, version["id"], "train") if r["sample_id"] is None
    ]
    # The uploaded ground-truth row: its source, and no sample, job, teacher or item.
    assert ground_truth == [{**dict.fromkeys(PROVENANCE), "source": "ground_truth"}]


def test_provenance_names_each_rows_own_teacher(
    client: TestClient, admin: Caller, reviewer: Caller, viewer: Caller, curation_db_url: str
) -> None:
    teachers = ("/models/teacher-one", "/models/teacher-two")
    job_id = make_job(curation_db_url, teacher=teachers[0], more_teachers=teachers[1:])
    rows = [
        sample_row(job_id, i, f"What is {i} + 5?", f"{i + 5}", teacher_index=t)
        for i in range(4)
        for t in (0, 1)
    ]
    version = accepted_version(client, admin, reviewer, rows, job_id, name="two-teachers")
    response = client.get(
        f"/v1/datasets/{version['id']}/export",
        params={"format": "prompt_completion", "split": "train", "provenance": "true"},
        headers=viewer.headers,
    )
    assert response.status_code == 200, response.text
    exported = [json.loads(line) for line in response.text.splitlines()]
    with transaction(curation_db_url) as session:
        found = session.execute(select(Sample.id, Sample.teacher_index).where(Sample.job_id == job_id)).all()
    teacher_of = {sample_id: index for sample_id, index in found}
    assert len(exported) == 8
    assert [r["teacher"] for r in exported] == [teachers[teacher_of[r["sample_id"]]] for r in exported]
    assert {r["teacher"] for r in exported} == set(teachers)
    card = client.get(f"/v1/datasets/{version['id']}/card", headers=viewer.headers).text
    assert f"teachers `{teachers[0]}`, `{teachers[1]}`, 8 rows" in card


def test_provenance_in_export_to_folder_and_the_card(
    client: TestClient, viewer: Caller, curation_db_url: str, version: dict[str, Any], tmp_path: Path
) -> None:
    from datasets import load_from_disk

    out = tmp_path / "hf"
    splits = export_to_folder(
        get_engine(curation_db_url),
        manifest(curation_db_url, version["id"]),
        "prompt_completion",
        "hf",
        out,
        provenance=True,
    )
    assert splits == {"train": version["row_counts"]["train"], "test": version["row_counts"]["test"]}
    loaded = load_from_disk(str(out))
    for split in ("train", "test"):
        assert loaded[split].column_names == ["prompt", "completion", *PROVENANCE]
        rows = [{k: row[k] for k in PROVENANCE} for row in loaded[split]]
        assert rows == expected_provenance(curation_db_url, version["id"], split)
    card = (out / "README.md").read_text()
    assert "**Provenance columns**" in card
    assert "`prompt`, `completion`, `source`, `sample_id`, `job_id`, `teacher`, `item_index`" in card

    plain_card = client.get(f"/v1/datasets/{version['id']}/card", headers=viewer.headers).text
    assert "- **Columns**: `prompt`, `completion`\n" in plain_card
    assert "Provenance" not in plain_card
    api_card = client.get(
        f"/v1/datasets/{version['id']}/card", params={"provenance": "true"}, headers=viewer.headers
    ).text
    assert "**Provenance columns**" in api_card


@pytest.mark.parametrize("container", ["jsonl", "parquet"])
def test_split_all_downloads_every_split_and_the_card_as_one_folder(
    client: TestClient,
    viewer: Caller,
    curation_db_url: str,
    version: dict[str, Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    container: str,
) -> None:
    from datasets import load_dataset

    scratch = tmp_path / "server-tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    response = client.get(
        f"/v1/datasets/{version['id']}/export",
        params={"format": "messages", "container": container, "split": "all", "provenance": "true"},
        headers=viewer.headers,
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/x-tar"
    stem = f"export-options-v{version['version']}"
    assert f'filename="{stem}-messages-{container}.tar"' in response.headers["content-disposition"]
    assert response.headers["x-dataset-digest"] == version["digest"]
    assert json.loads(response.headers["x-row-counts"]) == {
        "train": version["row_counts"]["train"],
        "test": version["row_counts"]["test"],
    }
    assert list(scratch.iterdir()) == []  # the server's temporary folder is gone

    with tarfile.open(fileobj=io.BytesIO(response.content)) as tar:
        members = tar.getmembers()
        assert all(m.isreg() or m.isdir() for m in members)
        assert {m.name for m in members} == {
            stem,
            f"{stem}/README.md",
            f"{stem}/train.{container}",
            f"{stem}/test.{container}",
        }
        tar.extractall(tmp_path / "unpacked", filter="data")
    folder = tmp_path / "unpacked" / stem

    # Exactly what export_to_folder writes.
    reference = tmp_path / "reference"
    export_to_folder(
        get_engine(curation_db_url),
        manifest(curation_db_url, version["id"]),
        "messages",
        container,
        reference,
        provenance=True,
    )
    for name in ("README.md", f"train.{container}", f"test.{container}"):
        assert (folder / name).read_bytes() == (reference / name).read_bytes(), name

    # The card's YAML header names the splits' files. (A fresh cache: `datasets` keys a folder's
    # cache by its name, so another run's folder of the same name would be read instead.)
    loaded = load_dataset(str(folder), cache_dir=str(tmp_path / "hf-cache"))
    assert {split: len(loaded[split]) for split in loaded} == {
        "train": version["row_counts"]["train"],
        "test": version["row_counts"]["test"],
    }
    assert loaded["train"].column_names == ["messages", *PROVENANCE]


def test_hf_and_split_all_share_the_bundle_and_bad_splits_are_422(
    client: TestClient, viewer: Caller, version: dict[str, Any]
) -> None:
    url = f"/v1/datasets/{version['id']}/export"
    hf = client.get(url, params={"container": "hf", "split": "test"}, headers=viewer.headers)
    assert hf.status_code == 200
    with tarfile.open(fileobj=io.BytesIO(hf.content)) as tar:
        names = {m.name for m in tar.getmembers()}
    stem = f"export-options-v{version['version']}"
    assert {f"{stem}/README.md", f"{stem}/dataset_dict.json", f"{stem}/train/state.json"} <= names
    assert all(name == stem or name.startswith(f"{stem}/") for name in names)
    bad = client.get(url, params={"split": "validation"}, headers=viewer.headers)
    assert bad.status_code == 422
    assert bad.json()["errors"][0]["field"] == "split"


# --- preference pairs -------------------------------------------------------------------------

# (item, answer, review status, judge score) of the answer stage; the version freezes accepted and
# pending samples, so rejected ones are only in its job.
PREFERENCE_SAMPLES = [
    (0, "nine", "accepted", 9.0),  # chosen: accepted
    (0, "three", "pending", 3.0),
    (0, "eight?", "rejected", 8.0),  # rejected by review beats a lower score
    (1, "five", "accepted", 5.0),  # chosen
    (1, "two", "pending", 2.0),  # rejected: scored lower
    (2, "alone", "accepted", 7.0),  # no second answer: skipped
    (3, "unscored a", "pending", None),  # no scores, no review: skipped
    (3, "unscored b", "pending", None),
    (4, "same", "accepted", 6.0),
    (4, "same", "rejected", 1.0),  # same text as the chosen one: skipped
    (5, "four", "pending", 4.0),
    (5, "seven", "pending", 7.0),  # chosen: highest score
    (6, "two again", "accepted", 2.0),  # an accepted answer is never the rejected one: skipped
    (6, "nine again", "accepted", 9.0),  # chosen (accepted, highest score)
]


@pytest.fixture(scope="module")
def preference_version(
    client: TestClient, admin: Caller, reviewer: Caller, curation_db_url: str
) -> dict[str, Any]:
    job_id = make_job(curation_db_url, teacher=TEACHER)
    counts: dict[int, int] = {}
    rows = []
    for item, answer, status, score in PREFERENCE_SAMPLES:
        index = counts.get(item, 0)
        counts[item] = index + 1
        rows.append(
            sample_row(
                job_id,
                item,
                f"Question {item}?",
                answer,
                sample_index=index,
                review_status=status,
                score=score,
            )
        )
    ids = insert_samples(curation_db_url, rows)
    body = {
        "name": "prefs",
        "query": {"job_ids": [job_id], "review_status": ["accepted", "pending"]},
        "ground_truth": {"records": [{"question": "Question 0?", "answer": "nine"}]},
        "system": SYSTEM,
    }
    response = create_version(client, admin.headers, json=body)
    assert response.status_code == 200, response.text
    created = dict(response.json())
    created["sample_ids"] = ids
    created["job_id"] = job_id
    return created


def expected_pairs(ids: list[int]) -> list[dict[str, Any]]:
    def pair(item: int, chosen: int, rejected: int) -> dict[str, Any]:
        return {
            "prompt": [
                {"role": "system", "content": SYSTEM},
                {"role": "user", "content": f"Question {item}?"},
            ],
            "chosen": [{"role": "assistant", "content": PREFERENCE_SAMPLES[chosen][1]}],
            "rejected": [{"role": "assistant", "content": PREFERENCE_SAMPLES[rejected][1]}],
            "sample_id": ids[chosen],
            "rejected_sample_id": ids[rejected],
        }

    return [pair(0, 0, 2), pair(1, 3, 4), pair(5, 11, 10)]


def test_preference_download_pairs_chosen_and_rejected(
    client: TestClient, viewer: Caller, preference_version: dict[str, Any], tmp_path: Path
) -> None:
    from datasets import load_dataset

    response = client.get(
        f"/v1/datasets/{preference_version['id']}/export",
        params={"format": "preference", "container": "jsonl", "split": "train", "provenance": "true"},
        headers=viewer.headers,
    )
    assert response.status_code == 200, response.text
    assert response.headers["x-row-count"] == "3"
    path = tmp_path / "pairs.jsonl"
    path.write_bytes(response.content)
    loaded = load_dataset("json", data_files=str(path), split="train", cache_dir=str(tmp_path / "hf-cache"))
    assert loaded.column_names == ["prompt", "chosen", "rejected", *PROVENANCE, "rejected_sample_id"]
    keys = ["prompt", "chosen", "rejected", "sample_id", "rejected_sample_id"]
    assert [{k: row[k] for k in keys} for row in loaded] == expected_pairs(preference_version["sample_ids"])
    assert {row["job_id"] for row in loaded} == {preference_version["job_id"]}
    assert {row["teacher"] for row in loaded} == {TEACHER}
    assert [row["item_index"] for row in loaded] == [0, 1, 5]

    plain = client.get(
        f"/v1/datasets/{preference_version['id']}/export",
        params={"format": "preference", "container": "parquet"},
        headers=viewer.headers,
    )
    assert plain.status_code == 200, plain.text
    (tmp_path / "pairs.parquet").write_bytes(plain.content)
    parquet = load_dataset(
        "parquet",
        data_files=str(tmp_path / "pairs.parquet"),
        split="train",
        cache_dir=str(tmp_path / "hf-cache"),
    )
    assert parquet.column_names == ["prompt", "chosen", "rejected"]
    assert [row["rejected"][0]["content"] for row in parquet] == ["eight?", "two", "four"]

    card = client.get(
        f"/v1/datasets/{preference_version['id']}/card",
        params={"format": "preference"},
        headers=viewer.headers,
    ).text
    assert "## Preference pairs" in card
    assert (
        "- train: 3 pairs of 7 prompts (4 skipped without a pair); rejected by review 1, by judge score 2"
        in card
    )
    assert "- **Pairs**: train 3" in card


def test_preference_export_to_folder_fits_trl(
    curation_db_url: str, preference_version: dict[str, Any], tmp_path: Path, tiny_model_dir: Path
) -> None:
    from datasets import load_from_disk
    from transformers import AutoTokenizer
    from trl.data_utils import is_conversational, maybe_apply_chat_template

    out = tmp_path / "hf"
    splits = export_to_folder(
        get_engine(curation_db_url),
        manifest(curation_db_url, preference_version["id"]),
        "preference",
        "hf",
        out,
    )
    assert splits == {"train": 3}
    dataset: Any = load_from_disk(str(out))
    assert list(dataset) == ["train"]
    rows = list(dataset["train"])
    expected = expected_pairs(preference_version["sample_ids"])
    assert rows == [{k: e[k] for k in ("prompt", "chosen", "rejected")} for e in expected]
    assert "3 pairs of 7 prompts" in (out / "README.md").read_text()
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    assert is_conversational(rows[0])
    text = maybe_apply_chat_template(rows[0], tokenizer)  # TRL's preference path (DPOTrainer does this)
    assert set(text) == {"prompt", "chosen", "rejected"}
    assert "Question 0?" in text["prompt"]
    assert "nine" in text["chosen"]
    assert "eight?" in text["rejected"]


def test_preference_without_pairs_is_a_conflict(
    client: TestClient, viewer: Caller, curation_db_url: str, version: dict[str, Any], tmp_path: Path
) -> None:
    # One accepted answer per item: no prompt has a pair.
    for params in ({"split": "train"}, {"split": "all"}, {"container": "hf"}):
        response = client.get(
            f"/v1/datasets/{version['id']}/export",
            params={"format": "preference", **params},
            headers=viewer.headers,
        )
        assert response.status_code == 409, response.text
        assert "no preference pairs" in response.json()["detail"]
    with pytest.raises(NoPreferencePairs):
        export_to_folder(
            get_engine(curation_db_url),
            manifest(curation_db_url, version["id"]),
            "preference",
            "jsonl",
            tmp_path / "out",
        )
    assert not (tmp_path / "out").exists()
