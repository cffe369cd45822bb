"""A teacher that passed submission but cannot serve chat stages when the worker loads it (its chat
template removed since, or a job written without the API) fails its job once: no retry, no crash loop."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from service.workers.runner import run_worker
from tests.service.queue.queue_factories import create_job, job_row, queue_settings, task_row
from tests.service.workers.worker_factories import generate_recipe


def test_a_teacher_without_a_chat_template_fails_the_job_once(
    clean_queue: str, tiny_teacher: dict[str, Any], tiny_model_dir: Path, tmp_path: Path
) -> None:
    url = clean_queue
    folder = tmp_path / "no-template"
    shutil.copytree(tiny_model_dir, folder)
    (folder / "chat_template.jinja").unlink()
    job_id, (task_id,) = create_job(
        url, items=2, shard_size=2, spec=generate_recipe(2), teacher={**tiny_teacher, "model": str(folder)}
    )
    run_worker(queue_settings(url), ["generate"], exit_when_idle=True)

    task = task_row(url, task_id)
    assert (task.status, task.attempts) == ("failed", 1)
    job = job_row(url, job_id)
    assert job.status == "failed"
    assert "has no chat template" in (job.error or "")
