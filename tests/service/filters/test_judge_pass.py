"""judge_score with a judge pass: the filter worker asks a real teacher (vLLM on CPU, the tiny model)
to score existing samples; scores and thresholds land in the verdicts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from service.settings import Settings
from tests.service.conftest import Caller, insert_samples, make_job, run_filter_worker, sample_row


@pytest.fixture(scope="module")
def judge(tiny_model_dir: Path) -> dict[str, Any]:
    # The same teacher config as tests/service/workers' tiny_teacher: one engine per test session.
    return {
        "teacher": {
            "model": str(tiny_model_dir),
            "dtype": "float32",
            "enforce_eager": True,
            "max_model_len": 512,
            "kv_cache_memory_bytes": 256 << 20,
            "engine": "vllm",
            "max_num_seqs": 64,
        },
        "messages": [
            {"role": "system", "content": "You grade answers from 1 to 10."},
            {"role": "user", "content": "Question: {{ question }}\nAnswer: {{ answer }}\nScore:"},
        ],
        "score_min": 1,
        "score_max": 10,
    }


def test_judge_pass_scores_samples_with_the_teacher(
    client: TestClient,
    admin: Caller,
    viewer: Caller,
    curation_settings: Settings,
    curation_db_url: str,
    judge: dict[str, Any],
) -> None:
    job_id = make_job(curation_db_url)
    ids = insert_samples(
        curation_db_url, [sample_row(job_id, i, f"What is {i} + 1?", str(i + 1)) for i in range(4)]
    )
    body = {
        "selection": {"job_ids": [job_id]},
        "filters": [{"name": "judged", "type": "judge_score", "params": {"min": 1, "judge": judge}}],
    }

    def scores() -> dict[int, tuple[bool, str, float]]:
        response = client.post("/v1/filter-runs", json=body, headers=admin.headers)
        assert response.status_code == 202, response.text
        run_filter_worker(curation_settings)
        run = client.get(f"/v1/filter-runs/{response.json()['id']}", headers=viewer.headers).json()
        assert run["status"] == "succeeded", run
        out = {}
        for sample_id in ids:
            verdict = client.get(f"/v1/samples/{sample_id}", headers=viewer.headers).json()["verdicts"][0]
            out[sample_id] = (verdict["passed"], verdict["reason"], verdict["score"])
        return out

    first = scores()
    for passed, reason, score in first.values():
        # Structured outputs force a number in [1, 10], so every sample gets a score.
        assert 1 <= score <= 10
        assert passed
        assert reason == f"judge score {score:g} within [1, ]"
    assert scores() == first  # temperature 0 and per-sample seeds: the same scores again


def test_judge_pass_is_validated_at_submission(
    client: TestClient, admin: Caller, curation_db_url: str, judge: dict[str, Any]
) -> None:
    job_id = make_job(curation_db_url)
    insert_samples(curation_db_url, [sample_row(job_id, 0, "q", "a")])

    def submit(**changes: Any) -> Any:
        params = {"min": 5, "judge": {**judge, **changes}}
        return client.post(
            "/v1/filter-runs",
            json={"selection": {"job_ids": [job_id]}, "filters": [{"type": "judge_score", "params": params}]},
            headers=admin.headers,
        )

    bad_template = submit(messages=[{"role": "user", "content": "{{ nope }}"}])
    assert bad_template.status_code == 422
    assert bad_template.json()["errors"][0]["field"] == "filters[0].judge_score.params.judge.messages"
    assert "nope" in bad_template.json()["errors"][0]["msg"]
    bad_teacher = submit(teacher={"model": "x", "engine": "nope"})
    assert bad_teacher.status_code == 422
    assert bad_teacher.json()["errors"][0]["field"] == "filters[0].judge_score.params.judge.teacher.engine"
    served = {"model": "m", "engine": "openai", "base_url": "http://127.0.0.1:9"}
    plain = submit(teacher={**served, "api_key": "sk-1"})
    assert plain.status_code == 422
    assert plain.json()["errors"][0]["field"] == "filters[0].judge_score.params.judge.teacher.api_key"
    assert "sk-1" not in plain.text
    secret = submit(teacher={**served, "api_key_env": "JUDGE_KEY"})
    assert secret.status_code == 202
    assert secret.json()["filters"][0]["params"]["judge"]["teacher"]["api_key_env"] == "JUDGE_KEY"
    cancelled = client.post(f"/v1/filter-runs/{secret.json()['id']}/cancel", headers=admin.headers)
    assert cancelled.status_code == 200
    assert cancelled.json()["status"] == "cancelled"
