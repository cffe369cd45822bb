"""The `train` handler: run one training run — fine-tune, then score teacher vs student — in child processes.

Phases follow the task's cursor (0 training, 1 evaluating, 2 done), so a reclaimed run starts at
the phase it was in:

1. Training. The dataset version is exported once (prompt–completion JSONL) into the run's folder
   `settings.home/training/<run id>/data`; `python -m service.workers.train_child train` then runs
   `trainer.sft.train` with resume, so a run reclaimed after its worker was killed continues from
   its last complete checkpoint with the same data order. While the child trains, this thread tails
   the files it writes and, in one fenced transaction per poll, upserts the new metric rows by step
   (a resumed run re-logs some steps: they replace the old rows, never duplicate them) and updates
   the run's step, total steps, tokens/s and checkpoints.
2. Evaluation. The held-out items (the version's test split, or the run's eval set) are written to
   a file and `train_child evaluate` scores the teacher, the initial student and the trained student
   on them with vLLM, one model at a time; each model's score is stored as it arrives.

Cancel, a lost lease or a crash of this worker ends the child (killed, or it notices its parent is
gone); a graceful stop (SIGTERM) asks it to checkpoint first, then releases the task. The child
processes are run by train_supervision.py; what the worker stores while they work, by
train_monitors.py.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from sqlalchemy import func, select, text, update
from sqlalchemy.orm import Session

from generator.engines.base import TeacherConfig
from service.db.models import DatasetRow, DatasetVersion, Sample, TrainingRun
from service.db.session import get_engine
from service.events import record_event
from service.filters.builtin.verifier import reference_value
from service.filters.specs import VerifierParams
from service.settings import Settings
from service.training.progress import CURSOR_DONE, CURSOR_EVALUATING, CURSOR_TRAINING
from service.training.schemas import TRAINING_KEY
from service.workers.context import PermanentTaskError, TaskContext, TaskOutcome
from service.workers.evaluate import (
    STUDENT_AFTER,
    STUDENT_BEFORE,
    TEACHER,
    EvalItem,
    EvalSetError,
    comparison_table,
    evaluation_item_rows,
    load_eval_set,
    read_scores,
    replace_evaluation_items,
    write_items,
)
from service.workers.train_child import (
    EXIT_OK,
    EXIT_STOPPED,
    PROGRESS_FILE,
    RESULT_FILE,
    SCORES_FILE,
)
from service.workers.train_monitors import (
    SCHEDULE_DEFAULTS_KEY,
    ScoreMonitor,
    TrainingMonitor,
    merged_results,
)
from service.workers.train_supervision import raise_child_failure, run_child
from trainer.run_folder import INIT_DIR, list_checkpoints

DATA_DIR = "data"
DATA_COMPLETE = ".complete"
EVAL_DIR = "evaluation"
EVALUATION_ITEMS = "items.jsonl"
IN_TRAINING_ITEMS = "in_training_items.jsonl"  # the first evaluation items, scored while training


@dataclass(frozen=True)
class RunSnapshot:
    """What the handler needs of a training run and its dataset version."""

    id: int
    student: dict[str, Any]
    method: str
    config: dict[str, Any]
    evaluation: dict[str, Any]
    dataset_id: int
    dataset_name: str
    dataset_version: int
    dataset_digest: str
    output_dir: str | None
    model_path: str | None


def training_dir(settings: Settings, run_id: int) -> Path:
    """The run's folder: checkpoints, metrics, the final model, the exported data and the evaluation."""
    return (settings.home / "training" / str(run_id)).expanduser().resolve()


def run_train_task(ctx: TaskContext) -> TaskOutcome:
    """Handler of `train` tasks (see the module docstring)."""
    task = ctx.task
    if task.training_run_id is None:
        raise PermanentTaskError(f"task {task.id}: a train task needs a training run")
    run_id = task.training_run_id
    run = ctx.with_retry(lambda session: _load_run(session, run_id))
    out = Path(run.output_dir) if run.output_dir else training_dir(ctx.settings, run.id)
    cursor = task.cursor
    if ctx.stop_requested:
        return TaskOutcome.STOPPED
    if cursor <= CURSOR_TRAINING:
        if _train_phase(ctx, run, out) is TaskOutcome.STOPPED:
            return TaskOutcome.STOPPED
        run = ctx.with_retry(lambda session: _load_run(session, run_id))
        cursor = CURSOR_EVALUATING
    if cursor <= CURSOR_EVALUATING and _evaluate_phase(ctx, run, out) is TaskOutcome.STOPPED:
        return TaskOutcome.STOPPED
    return TaskOutcome.DONE


def _load_run(session: Session, run_id: int) -> RunSnapshot:
    run = session.get(TrainingRun, run_id)
    if run is None:
        raise PermanentTaskError(f"training run {run_id} does not exist")
    version = session.get(DatasetVersion, run.dataset_id)
    if version is None:
        raise PermanentTaskError(f"training run {run_id}: dataset version {run.dataset_id} does not exist")
    return RunSnapshot(
        id=run.id,
        student=dict(run.student),
        method=run.method,
        config=dict(run.config),
        evaluation=dict(run.evaluation or {}),
        dataset_id=version.id,
        dataset_name=version.name,
        dataset_version=version.version,
        dataset_digest=version.digest,
        output_dir=run.output_dir,
        model_path=run.model_path,
    )


# --- phase 1: training ------------------------------------------------------------------------


def _train_phase(ctx: TaskContext, run: RunSnapshot, out: Path) -> TaskOutcome:
    task = ctx.task
    checkpoints = list_checkpoints(out)
    resume_from = checkpoints[-1] if checkpoints else None

    def start(session: Session, committed: int) -> None:
        session.execute(update(TrainingRun).where(TrainingRun.id == run.id).values(output_dir=str(out)))
        if resume_from is not None:
            message = f"resuming from {resume_from.name} (attempt {task.attempts}) on worker {ctx.worker_id}"
        else:
            message = f"training started on worker {ctx.worker_id} in {out}"
        record_event(
            session,
            "resumed" if resume_from is not None else "training",
            message,
            training_run_id=run.id,
            task_id=task.id,
            data={
                "worker_id": ctx.worker_id,
                "attempt": task.attempts,
                "checkpoint": resume_from.name if resume_from else None,
                "output_dir": str(out),
            },
        )

    ctx.fenced(start)
    data_dir = _materialise_dataset(ctx, run, out)
    for stale in (PROGRESS_FILE, RESULT_FILE):  # an earlier attempt's; the monitor must not read them
        (out / stale).unlink(missing_ok=True)
    accuracy = _in_training_scoring(ctx, run, out)
    if accuracy is None and ctx.stop_requested:
        return TaskOutcome.STOPPED
    request = {
        "run_id": run.id,
        "parent_pid": os.getpid(),
        "output_dir": str(out),
        "dataset_path": str(data_dir),
        # Once training started, `config` holds the resolved schedule: a resumed run keeps it.
        "spec": {**{k: v for k, v in run.config.items() if k != SCHEDULE_DEFAULTS_KEY}, "method": run.method},
        "accuracy": accuracy or None,
        "student": run.student.get("model"),
        "from_scratch": run.student.get("from_scratch"),
        "lineage": {
            "dataset_version": f"{run.dataset_name} v{run.dataset_version}",
            "dataset_id": run.dataset_id,
            "dataset_digest": run.dataset_digest,
            "teacher": (run.evaluation.get("teacher") or {}).get("model"),
            "training_run": run.id,
        },
    }
    monitor = TrainingMonitor(ctx, run.id, out)
    code = run_child(ctx, "train", request, out, monitor.sync)
    monitor.sync()
    if code != EXIT_OK and ctx.stop_requested:
        return TaskOutcome.STOPPED
    if code == EXIT_STOPPED:
        return TaskOutcome.STOPPED
    if code != EXIT_OK:
        raise_child_failure("training", code, out)
    result = json.loads((out / RESULT_FILE).read_text(encoding="utf-8"))
    if accuracy:
        result.update(
            target_score=accuracy.get("target_score"),
            teacher_score=accuracy.get("teacher_score"),
            eval_items=accuracy.get("items"),
        )
    _finish_training(ctx, run.id, result, out)
    return TaskOutcome.DONE


# What the run's `results.training` keeps of the trainer's result.
OUTCOME_KEYS = (
    "global_step",
    "total_steps",
    "train_rows",
    "best_step",
    "best_score",
    "stopped",
    "target_score",
    "teacher_score",
    "evaluations",
    "eval_every",
    "eval_items",
    "eval_max_new_tokens",
    "eval_seconds",
    "train_seconds",
    "eval_share",
)


def _in_training_scoring(ctx: TaskContext, run: RunSnapshot, out: Path) -> dict[str, Any] | None:
    """The child's in-training scoring settings: items written to a file, the scorer, the rules.

    The items are the first `during_training.items` of the evaluation's items. An `of_teacher`
    target becomes an absolute score here: the teacher is scored first, exactly as the evaluation
    scores it and into the evaluation's scores file (so the evaluation after training reuses that
    score rather than serve the teacher again), and its accuracy on the in-training items sets the
    target. Returns {} when scoring is off, None when a stop was requested while the teacher was scored.
    """
    settings = run.evaluation
    during = settings.get("during_training")
    # Runs stored before in-training scoring existed have no `during_training`: off for them.
    if not settings.get("enabled", True) or not isinstance(during, dict) or not during.get("enabled", True):
        return {}
    evaluation_items, source = _evaluation_items(ctx, run, settings)
    items = evaluation_items[: int(during.get("items", 100))]
    eval_dir = out / EVAL_DIR
    items_path = eval_dir / IN_TRAINING_ITEMS
    write_items(items_path, items)
    params = _verifier_params(settings)
    target = during.get("target") or {}
    target_score = target.get("score")
    teacher_score = None
    if target.get("of_teacher") is not None:
        teacher_score = _teacher_score(ctx, run, out, evaluation_items, len(items), params, settings)
        if teacher_score is None:
            return None
        # A teacher that gets nothing right gives no target (every student would "reach" it at once).
        target_score = min(1.0, float(target["of_teacher"]) * teacher_score) if teacher_score > 0 else None
    return {
        "items_path": str(items_path),
        "items": len(items),
        "source": source,
        "verifier": params.model_dump(mode="json"),
        "every_steps": during.get("every_steps"),
        "max_new_tokens": during.get("max_new_tokens"),
        "max_new_tokens_cap": int(settings.get("max_new_tokens", 64)),
        "batch_size": int(during.get("batch_size", 64)),
        "patience": during.get("patience"),
        "min_delta": float(during.get("min_delta", 0.0)),
        "target_score": target_score,
        "teacher_score": teacher_score,
    }


def _teacher_score(
    ctx: TaskContext,
    run: RunSnapshot,
    out: Path,
    evaluation_items: list[EvalItem],
    in_training: int,
    params: VerifierParams,
    settings: dict[str, Any],
) -> float | None:
    """The teacher's accuracy on the first `in_training` evaluation items (scored once, on them all)."""
    items_path = out / EVAL_DIR / EVALUATION_ITEMS
    write_items(items_path, evaluation_items)
    scores_path = out / EVAL_DIR / SCORES_FILE
    teacher = _teacher_engine(ctx, settings)
    request = _scoring_request(run.id, out, items_path, scores_path, params, settings, [(TEACHER, teacher)])
    code = run_child(ctx, "evaluate", request, out, lambda: None)
    if code != EXIT_OK and ctx.stop_requested:
        return None
    if code != EXIT_OK:
        raise_child_failure("scoring the teacher for the in-training target", code, out)
    score = read_scores(scores_path)[TEACHER]
    verdicts = score.verdicts[:in_training]
    accuracy = sum(verdicts) / len(verdicts) if verdicts else 0.0

    def write(session: Session, committed: int) -> None:
        record_event(
            session,
            "teacher_scored",
            f"teacher ({score.model}): {accuracy:.3f} ({sum(verdicts)}/{len(verdicts)} {params.mode}) "
            "on the in-training items, for the of_teacher target",
            training_run_id=run.id,
            task_id=ctx.task.id,
            data={"name": TEACHER, "model": score.model, "items": len(verdicts), "accuracy": accuracy},
        )

    ctx.fenced(write)
    return accuracy


def _verifier_params(settings: dict[str, Any]) -> VerifierParams:
    return VerifierParams(
        mode=settings.get("scorer", "normalized"),
        pattern=settings.get("pattern"),
        tolerance=settings.get("tolerance", 1e-6),
        relative_tolerance=settings.get("relative_tolerance", 0.0),
    )


def _materialise_dataset(ctx: TaskContext, run: RunSnapshot, out: Path) -> Path:
    """Export the version as prompt–completion JSONL into out/data, once (built aside, then renamed)."""
    from service.datasets.export.folder import export_to_folder
    from service.datasets.service import get_dataset, manifest_of

    data_dir = out / DATA_DIR
    marker = data_dir / DATA_COMPLETE
    if marker.exists() and marker.read_text(encoding="utf-8") == run.dataset_digest:
        return data_dir
    manifest = ctx.with_retry(lambda session: manifest_of(get_dataset(session, run.dataset_id)))
    out.mkdir(parents=True, exist_ok=True)
    staging = out / f".data.{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        splits = export_to_folder(
            get_engine(ctx.database_url),
            manifest,
            "prompt_completion",
            "jsonl",
            staging,
            # Soft-label distillation trains on the teacher's top-k columns as well.
            soft_labels=run.config.get("soft_label_alpha") is not None,
        )
        (staging / DATA_COMPLETE).write_text(manifest.digest, encoding="utf-8")
        shutil.rmtree(data_dir, ignore_errors=True)
        staging.rename(data_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    ctx.logger.info("training run %s: exported %s to %s", run.id, splits, data_dir)
    return data_dir


def _finish_training(ctx: TaskContext, run_id: int, result: dict[str, Any], out: Path) -> None:
    task = ctx.task
    checkpoints = [str(path) for path in list_checkpoints(out)]
    loss = result.get("train_loss")
    resumed = result.get("resumed_from")

    outcome = {key: result.get(key) for key in OUTCOME_KEYS}
    best_step, stopped = result.get("best_step"), result.get("stopped")

    def write(session: Session, committed: int) -> None:
        if committed >= CURSOR_EVALUATING:
            return  # committed before; only the answer was lost
        session.execute(
            update(TrainingRun)
            .where(TrainingRun.id == run_id)
            .values(
                model_path=result["model_path"],
                step=result["global_step"],
                total_steps=func.coalesce(TrainingRun.total_steps, result["global_step"]),
                tokens_per_second=result.get("tokens_per_second"),
                checkpoints=checkpoints,
                results=merged_results({TRAINING_KEY: outcome}),
            )
        )
        session.execute(
            text("UPDATE task SET cursor = :c WHERE id = :id"), {"c": CURSOR_EVALUATING, "id": task.id}
        )
        shown_loss = f"{loss:.4f}" if isinstance(loss, int | float) else "n/a"
        record_event(
            session,
            "trained",
            f"trained {result['global_step']} steps (train loss {shown_loss}, "
            f"{result.get('tokens_per_second', 0):,.0f} tokens/s"
            + (f", resumed from {Path(resumed).name}" if resumed else "")
            + (f", stopped early: {stopped}" if stopped else "")
            + (
                f"; kept step {best_step} (accuracy {result.get('best_score', 0):.3f})"
                if best_step is not None
                else ""
            )
            + f"): {result['model_path']}",
            training_run_id=run_id,
            task_id=task.id,
            data={
                "global_step": result["global_step"],
                "train_loss": loss,
                "tokens_per_second": result.get("tokens_per_second"),
                "resumed_from": resumed,
                "model_path": result["model_path"],
                "adapter_path": result.get("adapter_path"),
                "mask": result.get("mask"),
                "mask_warnings": result.get("mask_warnings", []),
                **{key: outcome[key] for key in ("best_step", "best_score", "stopped", "eval_share")},
            },
        )

    ctx.fenced(write)


# --- phase 2: evaluation ----------------------------------------------------------------------


def _evaluate_phase(ctx: TaskContext, run: RunSnapshot, out: Path) -> TaskOutcome:
    settings = run.evaluation
    if not settings.get("enabled", True):
        _finish_evaluation(ctx, run.id, None, "evaluation disabled for this run")
        return TaskOutcome.DONE
    params = _verifier_params(settings)
    items, source = _evaluation_items(ctx, run, settings)
    eval_dir = out / EVAL_DIR
    items_path = eval_dir / EVALUATION_ITEMS
    write_items(items_path, items)
    scores_path = eval_dir / SCORES_FILE
    models = _evaluation_models(ctx, run, out, settings)
    request = _scoring_request(run.id, out, items_path, scores_path, params, settings, models)
    monitor = ScoreMonitor(ctx, run.id, items, params, source, scores_path)
    code = run_child(ctx, "evaluate", request, out, monitor.sync)
    if code != EXIT_OK and ctx.stop_requested:
        monitor.sync()
        return TaskOutcome.STOPPED
    if code != EXIT_OK:
        monitor.sync()
        raise_child_failure("evaluation", code, out)
    scores = read_scores(scores_path)
    table = comparison_table(items, params, source, scores)
    _finish_evaluation(ctx, run.id, table, _table_summary(table), evaluation_item_rows(run.id, items, scores))
    return TaskOutcome.DONE


def _evaluation_items(
    ctx: TaskContext, run: RunSnapshot, settings: dict[str, Any]
) -> tuple[list[EvalItem], str]:
    limit = int(settings.get("max_items", 200))
    eval_set = settings.get("eval_set")
    if eval_set:
        try:
            items = load_eval_set(
                eval_set["path"],
                fmt=eval_set.get("format", "auto"),
                split=eval_set.get("split"),
                question_field=eval_set.get("question_field", "question"),
                answer_field=eval_set.get("answer_field", "answer"),
                system_field=eval_set.get("system_field"),
                limit=limit,
            )
        except EvalSetError as exc:
            raise PermanentTaskError(f"evaluation: {exc}") from exc
        return items, f"eval set {eval_set['path']}"
    split = settings.get("split", "test")
    field = settings.get("reference_field")
    items = ctx.with_retry(lambda session: _split_items(session, run.dataset_id, split, field, limit))
    if not items:
        raise PermanentTaskError(
            f"evaluation: the {split} split of dataset version {run.dataset_id} has no items"
            + (f" with a reference in inputs[{field!r}]" if field else "")
        )
    return items, f"{split} split of dataset {run.dataset_name} v{run.dataset_version}"


def _split_items(
    session: Session, dataset_id: int, split: str, reference_field: str | None, limit: int
) -> list[EvalItem]:
    rows = session.execute(
        select(DatasetRow.question, DatasetRow.answer, DatasetRow.system, Sample.inputs)
        .outerjoin(Sample, Sample.id == DatasetRow.sample_id)
        .where(DatasetRow.dataset_id == dataset_id, DatasetRow.split == split)
        .order_by(DatasetRow.row_index)
        .limit(limit)
    ).all()
    items = []
    for question, answer, system, inputs in rows:
        reference: Any = answer
        if reference_field is not None:
            reference = reference_value(inputs or {}, reference_field)
            if reference is None:
                continue  # a row without a reference (e.g. ground truth) cannot be scored this way
        text_reference = reference if isinstance(reference, str) else json.dumps(reference)
        items.append(EvalItem(question=question, reference=text_reference, system=system))
    return items


def _scoring_request(
    run_id: int,
    out: Path,
    items_path: Path,
    scores_path: Path,
    params: VerifierParams,
    settings: dict[str, Any],
    models: Sequence[tuple[str, TeacherConfig]],
) -> dict[str, Any]:
    """What `train_child evaluate` reads: the items, where to write scores, the scorer, the models."""
    return {
        "run_id": run_id,
        "parent_pid": os.getpid(),
        "output_dir": str(out),
        "items_path": str(items_path),
        "scores_path": str(scores_path),
        "verifier": params.model_dump(mode="json"),
        "max_new_tokens": int(settings.get("max_new_tokens", 64)),
        "models": [{"name": name, "config": config.model_dump(mode="json")} for name, config in models],
    }


def _teacher_engine(ctx: TaskContext, settings: dict[str, Any]) -> TeacherConfig:
    try:
        teacher = TeacherConfig.model_validate(settings["teacher"])
    except (KeyError, ValidationError) as exc:
        raise PermanentTaskError(f"evaluation: invalid teacher config: {exc}") from exc
    kv_default = ctx.settings.vllm_kv_cache_bytes
    if teacher.engine == "vllm" and teacher.kv_cache_memory_bytes is None and kv_default:
        teacher = teacher.model_copy(update={"kv_cache_memory_bytes": kv_default})
    return teacher


def _evaluation_models(
    ctx: TaskContext, run: RunSnapshot, out: Path, settings: dict[str, Any]
) -> list[tuple[str, TeacherConfig]]:
    teacher = _teacher_engine(ctx, settings)
    kv_default = ctx.settings.vllm_kv_cache_bytes
    # Students run on vLLM with the teacher's engine options (dtype, eager, KV cache); the context
    # length is capped at the student's own: a small student may have fewer positions.
    base = (
        teacher
        if teacher.engine == "vllm"
        else TeacherConfig(model=teacher.model, kv_cache_memory_bytes=kv_default)
    )
    overrides = {k: v for k, v in (settings.get("student_engine") or {}).items() if v is not None}

    def student(model: str) -> TeacherConfig:
        context = _positions(Path(model))
        if teacher.max_model_len and context:
            context = min(context, teacher.max_model_len)
        update_ = {"model": model, "revision": None, "max_model_len": context, **overrides}
        no_server = {"base_url": None, "api_key_env": None, "api_key_file": None}
        return base.model_copy(update={**update_, "engine": "vllm", **no_server})

    before = run.student.get("model") or str(out / INIT_DIR)
    if not run.model_path:
        raise RuntimeError(f"training run {run.id} has no trained model to evaluate")
    return [(TEACHER, teacher), (STUDENT_BEFORE, student(before)), (STUDENT_AFTER, student(run.model_path))]


def _positions(model_dir: Path) -> int | None:
    """The context length a local model folder declares (None for hub ids or unusual configs)."""
    try:
        config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    value = config.get("max_position_embeddings") if isinstance(config, dict) else None
    return value if isinstance(value, int) and value >= 16 else None


def _table_summary(table: dict[str, Any]) -> str:
    def accuracy(name: str) -> str:
        score = table.get(name)
        return f"{score['accuracy']:.3f}" if score else "n/a"

    ratio = table.get("ratio")
    return (
        f"on {table['items']} items ({table['scorer']}): teacher {accuracy(TEACHER)}, student before "
        f"{accuracy(STUDENT_BEFORE)}, after {accuracy(STUDENT_AFTER)}"
        + (f", student/teacher {ratio:.3f}" if ratio is not None else "")
    )


def _finish_evaluation(
    ctx: TaskContext,
    run_id: int,
    table: dict[str, Any] | None,
    summary: str,
    item_rows: list[dict[str, Any]] | None = None,
) -> None:
    task = ctx.task

    def write(session: Session, committed: int) -> None:
        if committed >= CURSOR_DONE:
            return
        if table is not None:
            session.execute(
                update(TrainingRun).where(TrainingRun.id == run_id).values(results=merged_results(table))
            )
        if item_rows is not None:
            replace_evaluation_items(session, run_id, item_rows)
        session.execute(text("UPDATE task SET cursor = :c WHERE id = :id"), {"c": CURSOR_DONE, "id": task.id})
        record_event(
            session,
            "evaluated" if table is not None else "evaluation_skipped",
            summary,
            training_run_id=run_id,
            task_id=task.id,
            data={"ratio": table.get("ratio")} if table else {},
        )

    ctx.fenced(write)
