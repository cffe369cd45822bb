"""Training runs end to end: the API, a real train worker (TRL in a child process), real vLLM evaluation."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from service.settings import Settings
from tests.factories import wait_until
from tests.service.training.factories import (
    FAST,
    addition_pairs,
    addition_version,
    events,
    make_version,
    metric_steps,
    metric_times,
    metrics_file_steps,
    process_alive,
    run_row,
    vllm_teacher,
)

pytestmark = pytest.mark.slow


def submit(client: TestClient, admin: dict[str, str], payload: dict[str, Any]) -> int:
    response = client.post("/v1/training-runs", json=payload, headers=admin)
    assert response.status_code == 202, response.text
    return int(response.json()["id"])


def detail(client: TestClient, admin: dict[str, str], run_id: int) -> dict[str, Any]:
    response = client.get(f"/v1/training-runs/{run_id}", headers=admin)
    assert response.status_code == 200, response.text
    return dict(response.json())


def all_metrics(client: TestClient, admin: dict[str, str], run_id: int) -> list[dict[str, Any]]:
    response = client.get(f"/v1/training-runs/{run_id}/metrics", params={"limit": 200}, headers=admin)
    assert response.status_code == 200, response.text
    return list(response.json()["items"])


def test_full_fine_tune_end_to_end_with_evaluation(
    client: TestClient,
    admin: dict[str, str],
    training_db_url: str,
    training_settings: Settings,
    tiny_model_dir: Path,
    train_worker: Any,
) -> None:
    version = addition_version(training_db_url, 96, 12, teacher=vllm_teacher(tiny_model_dir))
    run_id = submit(
        client,
        admin,
        {
            "dataset_id": version,
            "student": {"model": str(tiny_model_dir)},
            "hyperparameters": {**FAST, "max_steps": 30, "logging_steps": 5, "save_steps": 10},
            "evaluation": {"scorer": "exact", "max_new_tokens": 8},
        },
    )
    train_worker(training_settings).start().join(600)

    run = detail(client, admin, run_id)
    assert run["status"] == "succeeded", run["last_error"]
    assert run["progress"]["step"] == 30
    assert run["progress"]["total_steps"] == 30
    assert run["progress"]["fraction"] == 1.0
    assert run["progress"]["tokens_per_second"] > 0
    assert [Path(p).name for p in run["checkpoints"]] == [
        "checkpoint-20",
        "checkpoint-30",
    ]  # save_total_limit 2
    assert run["output_dir"] == str(training_settings.home.resolve() / "training" / str(run_id))

    metrics = all_metrics(client, admin, run_id)
    assert [m["step"] for m in metrics] == [5, 10, 15, 20, 25, 30]
    assert all(m["loss"] > 0 and m["learning_rate"] > 0 and m["tokens_per_second"] > 0 for m in metrics)
    assert metrics[-1]["loss"] < metrics[0]["loss"] * 0.8, "the loss falls"

    # The trained student is a plain model folder with a model card.
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model_path = Path(run["model_path"])
    assert model_path.name == "final"
    assert AutoModelForCausalLM.from_pretrained(model_path).num_parameters() > 0
    assert AutoTokenizer.from_pretrained(model_path).chat_template
    card = (model_path / "README.md").read_text()
    assert f"{run['dataset']['name']} v1" in card

    # Teacher, initial student and trained student were served by vLLM on the same 12 test items.
    results = run["results"]
    assert results["items"] == 12
    assert results["scorer"] == "exact"
    assert results["source"].startswith("test split of dataset")
    for name, model in (
        ("teacher", str(tiny_model_dir)),
        ("student_before", str(tiny_model_dir)),
        ("student_after", str(model_path)),
    ):
        assert results[name]["model"] == model
        assert results[name]["items"] == 12
        assert 0 <= results[name]["correct"] <= 12
    assert len(results["examples"]) == 5
    assert {"question", "reference", "teacher", "student_before", "student_after"} <= results["examples"][
        0
    ].keys()
    # The teacher is the same random model as the initial student: identical greedy answers.
    assert results["teacher"]["correct"] == results["student_before"]["correct"]

    kinds = [event.kind for event in events(training_db_url, run_id)]
    assert kinds[:3] == ["queued", "claimed", "training"]
    tail = ["trained", "scored", "scored", "scored", "evaluated", "task_succeeded", "finished"]
    assert kinds[-len(tail) :] == tail
    assert set(kinds[3 : -len(tail)]) == {"checkpoint"}, "checkpoints are announced while training"


def test_lora_and_packing_runs(
    client: TestClient,
    admin: dict[str, str],
    training_db_url: str,
    training_settings: Settings,
    tiny_model_dir: Path,
    train_worker: Any,
) -> None:
    version = addition_version(training_db_url, 64, 0)
    common = {
        "dataset_id": version,
        "student": {"model": str(tiny_model_dir)},
        "evaluation": {"enabled": False},
    }
    lora = submit(
        client,
        admin,
        {
            **common,
            "method": "lora",
            "hyperparameters": {
                **FAST,
                "learning_rate": 1e-2,
                "max_steps": 12,
                "logging_steps": 4,
                "lora_r": 4,
            },
        },
    )
    packed = submit(
        client,
        admin,
        {**common, "hyperparameters": {**FAST, "max_steps": 12, "logging_steps": 4, "packing": True}},
    )
    worker = train_worker(training_settings.model_copy(update={"max_attempts": 1}))
    worker.start().join(600)

    from transformers import AutoModelForCausalLM

    for run_id in (lora, packed):
        run = detail(client, admin, run_id)
        assert run["status"] == "succeeded", run["last_error"]
        assert run["progress"]["step"] == 12
        assert [m["step"] for m in all_metrics(client, admin, run_id)] == [4, 8, 12]
        assert AutoModelForCausalLM.from_pretrained(run["model_path"]).num_parameters() > 0
        kinds = [event.kind for event in events(training_db_url, run_id)]
        assert "evaluation_skipped" in kinds
        assert run["results"] is None

    lora_run = detail(client, admin, lora)
    trained = next(e for e in events(training_db_url, lora) if e.kind == "trained")
    assert trained.data["adapter_path"] == str(Path(lora_run["output_dir"]) / "adapter")
    assert (Path(lora_run["output_dir"]) / "adapter" / "adapter_config.json").is_file()
    # The merged model is a plain checkpoint: no adapter weights left in it.
    assert not (Path(lora_run["model_path"]) / "adapter_config.json").exists()

    packed_run = detail(client, admin, packed)
    assert packed_run["config"]["packing"] is True
    packed_trained = next(e for e in events(training_db_url, packed) if e.kind == "trained")
    assert "packed sequence" in packed_trained.data["mask"]


# Renders only the prompt turns: the answer is dropped, so nothing would be trained.
DROPS_ANSWER = (
    "{{- bos_token }}{%- for m in messages %}{%- if m['role'] != 'assistant' %}"
    "{{- '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}{%- endif %}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)


def test_broken_template_and_unloadable_student_fail_with_precise_errors_and_no_retry(
    client: TestClient,
    admin: dict[str, str],
    training_db_url: str,
    training_settings: Settings,
    tiny_model_dir: Path,
    tmp_path: Path,
    train_worker: Any,
) -> None:
    broken = tmp_path / "broken-template"
    shutil.copytree(tiny_model_dir, broken)
    (broken / "chat_template.jinja").write_text(DROPS_ANSWER)
    # Passes the submission checks (they read files, not weights), fails when the worker loads it.
    garbage = tmp_path / "not-a-model"
    shutil.copytree(tiny_model_dir, garbage)
    (garbage / "tokenizer.json").write_text(json.dumps({"hello": "world"}))

    version = addition_version(training_db_url, 16, 0)
    runs = {
        name: submit(
            client,
            admin,
            {
                "dataset_id": version,
                "student": {"model": str(path)},
                "hyperparameters": {**FAST, "max_steps": 4},
                "evaluation": {"enabled": False},
            },
        )
        for name, path in (("broken", broken), ("garbage", garbage))
    }
    train_worker(training_settings).start().join(600)

    mask = detail(client, admin, runs["broken"])
    assert mask["status"] == "failed"
    assert "MaskError" in mask["error"]
    assert "row 0: the chat template drops the answer" in mask["error"]
    assert mask["attempts"] == 1, "a bad input is not retried"
    assert mask["progress"]["step"] == 0
    assert all_metrics(client, admin, runs["broken"]) == []

    student = detail(client, admin, runs["garbage"])
    assert student["status"] == "failed"
    assert f"StudentError: cannot load the tokenizer of student {garbage}" in student["error"]
    assert student["attempts"] == 1


def test_cancel_stops_the_training_process_and_resume_continues_from_its_checkpoint(
    client: TestClient,
    admin: dict[str, str],
    training_db_url: str,
    training_settings: Settings,
    tiny_model_dir: Path,
    train_worker: Any,
) -> None:
    version = addition_version(training_db_url, 64, 0)
    run_id = submit(
        client,
        admin,
        {
            "dataset_id": version,
            "student": {"model": str(tiny_model_dir)},
            "hyperparameters": {**FAST, "max_steps": 100_000, "logging_steps": 1, "save_steps": 3},
            "evaluation": {"enabled": False},
        },
    )
    worker = train_worker(training_settings).start()
    wait_until(lambda: run_row(training_db_url, run_id).checkpoints, 300, "a checkpoint")
    running = detail(client, admin, run_id)
    assert running["status"] == "running"
    assert running["progress"]["phase"] == "training"
    assert running["progress"]["total_steps"] == 100_000
    assert running["progress"]["steps_per_second"] > 0
    assert running["progress"]["eta_seconds"] > 0
    out = Path(running["output_dir"])
    pid = int((out / "child.pid").read_text())
    assert process_alive(pid)

    response = client.post(f"/v1/training-runs/{run_id}/cancel", headers=admin)
    assert response.status_code == 200
    assert response.json()["status"] == "cancelled"
    worker.join(120)  # the worker gave the task up and found nothing else to do
    assert not process_alive(pid), "the training process was killed"
    run = detail(client, admin, run_id)
    assert run["status"] == "cancelled"
    assert run["progress"]["phase"] == "cancelled"
    kinds = [event.kind for event in events(training_db_url, run_id)]
    assert "cancelled" in kinds
    assert "stopped" in kinds
    steps = metric_steps(training_db_url, run_id)
    assert steps == sorted(set(steps))
    last = max(
        int(p.name.split("-")[1]) for p in out.glob("checkpoint-*") if (p / "trainer_state.json").exists()
    )

    # Resumed, it continues from the last checkpoint the cancelled process completed.
    assert client.post(f"/v1/training-runs/{run_id}/resume", headers=admin).status_code == 202
    worker = train_worker(training_settings).start()
    resumed = wait_until(
        lambda: [e for e in events(training_db_url, run_id) if e.kind == "resumed"], 300, "the resumed event"
    )
    assert resumed[0].data["checkpoint"] == f"checkpoint-{last}"
    since = resumed[0].created_at.timestamp()

    def relogged() -> list[int]:
        return sorted(step for step, at in metric_times(training_db_url, run_id).items() if at > since)

    first_steps = wait_until(relogged, 300, "a step logged by the resumed process")
    assert first_steps[0] == last + 1, "the resumed process starts after the checkpoint, not at step 1"
    live = detail(client, admin, run_id)
    assert live["attempts"] == 1
    assert live["status"] == "running"
    assert client.post(f"/v1/training-runs/{run_id}/cancel", headers=admin).status_code == 200
    worker.join(120)
    assert metric_steps(training_db_url, run_id) == sorted(set(metric_steps(training_db_url, run_id)))


ROOT = Path(__file__).resolve().parents[3]


class WorkerProcess:
    """`hardlabel worker --kinds train` as a subprocess (so it can be killed with -9)."""

    def __init__(self, settings: Settings, log: Path, *extra: str) -> None:
        env = {
            **os.environ,
            "HARDLABEL_DATABASE_URL": str(settings.database_url),
            "HARDLABEL_HOME": str(settings.home),
            "HARDLABEL_LEASE_SECONDS": "4",
            "HARDLABEL_HEARTBEAT_SECONDS": "0.5",
            "HARDLABEL_REAPER_SECONDS": "0.5",
            "HARDLABEL_POLL_SECONDS": "0.2",
            "HARDLABEL_RETRY_BACKOFF_SECONDS": "0",
            "HARDLABEL_MAX_ATTEMPTS": "3",
            "HARDLABEL_VLLM_KV_CACHE_BYTES": str(256 << 20),
        }
        command = [str(Path(sys.executable).parent / "hardlabel"), "worker", "--kinds", "train", *extra]
        self.log = log.open("ab")
        self.process = subprocess.Popen(command, env=env, cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT)

    def wait(self, timeout: float) -> int:
        try:
            return self.process.wait(timeout)
        finally:
            self.log.close()

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(30)


def test_kill_9_of_the_worker_resumes_from_the_last_checkpoint_without_duplicate_steps(
    client: TestClient,
    admin: dict[str, str],
    training_db_url: str,
    training_settings: Settings,
    tiny_model_dir: Path,
    tmp_path: Path,
) -> None:
    version = addition_version(training_db_url, 64, 0)
    run_id = submit(
        client,
        admin,
        {
            "dataset_id": version,
            "student": {"model": str(tiny_model_dir)},
            "hyperparameters": {**FAST, "max_steps": 60, "logging_steps": 2, "save_steps": 10},
            "evaluation": {"enabled": False},
        },
    )
    first = WorkerProcess(training_settings, tmp_path / "worker-1.log")
    second: WorkerProcess | None = None
    try:
        run = wait_until(
            lambda: (r := run_row(training_db_url, run_id)).checkpoints and r,
            300,
            "the first checkpoint",
            interval=0.1,
        )
        child = int((Path(run.output_dir) / "child.pid").read_text())
        os.kill(first.process.pid, signal.SIGKILL)
        first.wait(30)
        wait_until(lambda: not process_alive(child), 30, "the training process to die with its worker")
        assert run_row(training_db_url, run_id).status == "running"
        out = Path(run.output_dir)
        # The last checkpoint the killed child completed (one cut mid-write is not resumable).
        complete = sorted(
            int(p.name.split("-")[1]) for p in out.glob("checkpoint-*") if (p / "trainer_state.json").exists()
        )
        assert complete
        assert complete[-1] < 60, "killed before the end of training"
        resume_step = complete[-1]
        logged_before = metrics_file_steps(str(out))

        second = WorkerProcess(training_settings, tmp_path / "worker-2.log", "--exit-when-idle")
        assert second.wait(600) == 0
    finally:
        first.kill()
        if second is not None:
            second.kill()

    run_detail = detail(client, admin, run_id)
    assert run_detail["status"] == "succeeded", run_detail["last_error"]
    assert run_detail["attempts"] == 2
    resumed = [e for e in events(training_db_url, run_id) if e.kind == "resumed"]
    assert len(resumed) == 1
    assert resumed[0].data["checkpoint"] == f"checkpoint-{resume_step}"
    result = json.loads((out / "train_result.json").read_text())
    assert Path(result["resumed_from"]).name == f"checkpoint-{resume_step}", "not restarted from step 0"
    assert result["global_step"] == 60

    # The file shows the re-logged steps (after the checkpoint) twice, the earlier ones once;
    # the stored series has each step exactly once.
    logged = metrics_file_steps(str(out))
    assert logged.count(2) == 1
    assert all(logged.count(step) == 1 for step in range(2, resume_step + 1, 2))
    assert any(logged.count(step) == 2 for step in logged_before if step > resume_step) or all(
        step <= resume_step for step in logged_before
    )
    assert metric_steps(training_db_url, run_id) == list(range(2, 61, 2))
    assert [m["step"] for m in all_metrics(client, admin, run_id)] == list(range(2, 61, 2))


# --- in-training accuracy, schedule defaults, from-scratch tokenizers (issue #11) ---------------


def constant_version(url: str, teacher: dict[str, Any]) -> int:
    """A version a tiny student learns in a few steps: every answer is "42"."""
    pairs = addition_pairs(76, seed=11)
    rows = [(f"What is {a}+{b}?", "42") for a, b in pairs]
    return make_version(url, train=rows[:64], test=rows[64:], teacher=teacher)


@pytest.fixture(scope="module")
def constant_teacher(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Path:
    """A teacher that answers the constant task right: the tiny model, trained on it for 12 steps."""
    import torch

    from trainer.sft import train
    from trainer.spec import TrainingSpec

    data = tmp_path_factory.mktemp("constant-teacher") / "train.jsonl"
    rows = [(f"What is {a}+{b}?", "42") for a, b in addition_pairs(64, seed=5)]
    data.write_text(
        "".join(
            json.dumps(
                {
                    "prompt": [{"role": "user", "content": q}],
                    "completion": [{"role": "assistant", "content": a}],
                }
            )
            + "\n"
            for q, a in rows
        )
    )
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = train(
            dataset_path=data,
            student=tiny_model_dir,
            output_dir=data.parent / "run",
            spec=TrainingSpec(**FAST, max_steps=12, save_steps=12),
        )
    finally:
        torch.set_num_threads(threads)
    return Path(result.model_path)


def test_of_teacher_target_stops_early_keeps_the_best_model_and_reuses_the_teachers_tokenizer(
    client: TestClient,
    admin: dict[str, str],
    training_db_url: str,
    training_settings: Settings,
    constant_teacher: Path,
    train_worker: Any,
) -> None:
    version = constant_version(training_db_url, vllm_teacher(constant_teacher))
    # No schedule given beyond a step budget: the rest comes from the rule (scratch student, 64 rows).
    response = client.post(
        "/v1/training-runs",
        json={
            "dataset_id": version,
            "student": {"from_scratch": {"layers": 1, "hidden": 64, "heads": 2, "tokenizer": "teacher"}},
            "hyperparameters": {"max_steps": 300, "max_length": 64, "logging_steps": 2},
            "evaluation": {
                "scorer": "exact",
                "max_new_tokens": 8,
                "during_training": {"every_steps": 2, "target": {"of_teacher": 1.0}, "patience": None},
            },
        },
        headers=admin,
    )
    assert response.status_code == 202, response.text
    submitted = response.json()
    assert submitted["student"]["from_scratch"]["tokenizer"] == str(constant_teacher.resolve())
    assert submitted["config"]["learning_rate"] is None, "unset until the worker knows the row count"
    train_worker(training_settings).start().join(600)

    run = detail(client, admin, submitted["id"])
    assert run["status"] == "succeeded", run["last_error"]
    training = run["training"]
    # The teacher answered the in-training items first; the target is its accuracy (100%).
    assert training["teacher_score"] == 1.0
    assert training["target_score"] == 1.0
    assert training["stopped"] == "target"
    assert run["best_step"] == training["global_step"] == run["progress"]["step"] < 300
    assert run["best_score"] == 1.0
    assert training["eval_items"] == 12
    assert 0 < training["eval_seconds"] < training["train_seconds"]
    share = training["eval_seconds"] / training["train_seconds"]
    assert training["eval_share"] == pytest.approx(share, rel=0.02)

    metrics = all_metrics(client, admin, submitted["id"])
    scored = [m for m in metrics if m["eval_accuracy"] is not None]
    assert [m["step"] for m in scored] == list(range(2, run["best_step"] + 1, 2))
    assert scored[-1]["eval_accuracy"] == 1.0
    assert all(m["values"]["eval_items"] == 12 for m in scored)

    # The resolved schedule is on the run: the rule's values for what was left unset.
    from trainer.schedule import default_schedule

    rule = default_schedule(64, "scratch")
    config = run["config"]
    assert config["defaults"] == {
        "fields": [
            "learning_rate",
            "num_train_epochs",
            "per_device_train_batch_size",
            "warmup_ratio",
            "lr_scheduler_type",
            "weight_decay",
        ],
        "train_rows": 64,
        "student_kind": "scratch",
    }
    assert all(config[name] == rule[name] for name in config["defaults"]["fields"])
    assert config["max_steps"] == 300

    # The student was built around the teacher's tokenizer, and the post-training evaluation
    # (vLLM) scored the kept model: the same held-out items, all right.
    from transformers import AutoConfig, AutoTokenizer

    teacher_tokenizer = AutoTokenizer.from_pretrained(str(constant_teacher))
    assert AutoTokenizer.from_pretrained(run["model_path"]).get_vocab() == teacher_tokenizer.get_vocab()
    assert AutoConfig.from_pretrained(run["model_path"]).vocab_size == len(teacher_tokenizer)
    assert run["results"]["student_after"]["model"] == run["model_path"]
    assert run["results"]["student_after"]["accuracy"] >= 0.9
    assert run["results"]["teacher"]["accuracy"] == 1.0
    kinds = [event.kind for event in events(training_db_url, submitted["id"])]
    assert kinds.index("teacher_scored") < kinds.index("trained") < kinds.index("evaluated")
    # The evaluation reused the teacher's score from before training (vLLM served it once).
    scores = (Path(run["output_dir"]) / "evaluation" / "scores.jsonl").read_text().splitlines()
    assert [json.loads(line)["name"] for line in scores] == ["teacher", "student_before", "student_after"]


def test_from_scratch_tokenizer_is_resolved_at_submission_and_bad_values_are_422(
    client: TestClient,
    admin: dict[str, str],
    training_db_url: str,
    tiny_model_dir: Path,
    tmp_path: Path,
) -> None:
    version = constant_version(training_db_url, vllm_teacher(tiny_model_dir))

    def post(student: dict[str, Any], **extra: Any) -> Any:
        payload = {"dataset_id": version, "student": {"from_scratch": student}, **extra}
        return client.post("/v1/training-runs", json=payload, headers=admin)

    teacher = post({"tokenizer": "teacher"}, evaluation={"enabled": False})
    assert teacher.status_code == 202, teacher.text
    assert teacher.json()["student"]["from_scratch"]["tokenizer"] == str(tiny_model_dir.resolve())
    folder = post({"tokenizer": str(tiny_model_dir)})
    assert folder.status_code == 202, folder.text
    assert folder.json()["student"]["from_scratch"]["tokenizer"] == str(tiny_model_dir.resolve())

    (tmp_path / "empty").mkdir()
    no_teacher = constant_version(training_db_url, {"model": str(tmp_path / "gone")})
    cases: list[tuple[dict[str, Any], int | None, str]] = [
        ({"tokenizer": str(tmp_path / "missing")}, None, "no such tokenizer folder"),
        ({"tokenizer": str(tmp_path / "empty")}, None, "not a tokenizer folder"),
        ({"tokenizer": "teacher"}, no_teacher, "version's teacher: no such tokenizer folder"),
        ({"tokenizer": str(tiny_model_dir), "vocab": 300}, None, "vocab cannot be set with a tokenizer"),
    ]
    for student, dataset, message in cases:
        payload = {"dataset_id": dataset or version, "student": {"from_scratch": student}}
        payload["evaluation"] = {"enabled": False}
        response = client.post("/v1/training-runs", json=payload, headers=admin)
        assert response.status_code == 422, response.text
        assert response.headers["content-type"].startswith("application/problem+json")
        fields = [error["field"] for error in response.json()["errors"]]
        assert any(f.startswith("student.from_scratch") for f in fields), fields
        assert message in response.text, response.text
    tokenizer_field = post({"tokenizer": str(tmp_path / "missing")}).json()["errors"][0]["field"]
    assert tokenizer_field == "student.from_scratch.tokenizer"

    both = post({}, evaluation={"during_training": {"target": {"score": 0.9, "of_teacher": 1.0}}})
    assert both.status_code == 422
    assert "evaluation.during_training.target" in both.text
    off = post({}, evaluation={"enabled": False, "during_training": {"patience": 3}})
    assert off.status_code == 422
    assert "needs enabled=true" in off.text
