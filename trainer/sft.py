"""Supervised fine-tuning of a student on prompt–completion rows, with TRL's `SFTTrainer`.

`train` is the one entry point (the CLI and the service's train worker both call it): it loads the
data and the student (or builds one from scratch), proves the loss mask, trains with checkpoints,
resumes from the last complete checkpoint, and writes `output_dir/final` — a plain transformers
model folder (LoRA adapters merged in; the adapter is kept in `output_dir/adapter`) with a model
card carrying the lineage.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trainer.accuracy import (
    AccuracyCallback,
    AccuracySettings,
    AccuracyState,
    TimeBudgetCallback,
    eval_share,
    restore_best,
)
from trainer.config import build_sft_config
from trainer.data import dataset_digest, load_prompt_completion, quiet_datasets, row_texts
from trainer.distill_loss import SOFT_LABEL_COLUMNS, soft_label_preflight, soft_label_trainer_class
from trainer.metrics import JsonlMetricsCallback, StepProgressCallback
from trainer.preflight import MaskReport, check_completion_mask
from trainer.run_folder import (
    ADAPTER_DIR,
    BEST_DIR,
    BEST_STATE,
    CHECKPOINT,
    FINAL_DIR,
    INIT_DIR,
    LINEAGE_FILE,
    METRICS_FILE,
    RESOLVED_SPEC_FILE,
    list_checkpoints,
)
from trainer.schedule import StudentKind
from trainer.spec import TrainingSpec
from trainer.tiny_model import TinyModelSpec, TokenizerError, build_tiny_model, read_tiny_model_info

if TYPE_CHECKING:
    from datasets import Dataset, DatasetDict

log = logging.getLogger(__name__)

EVAL_SPLITS = ("validation", "eval")
# Rows of the dataset fed to the tokenizer of a student built from scratch.
CORPUS_ROWS = 20_000


class StudentError(ValueError):
    """The student model or its tokenizer cannot be loaded or built."""


class CheckpointError(ValueError):
    """The output folder holds checkpoints and resuming was not asked for."""


@dataclass
class TrainResult:
    """Where the trained student is and how the run went (this process's part of it for speed)."""

    output_dir: str
    model_path: str
    global_step: int
    total_steps: int  # above global_step when a callback stopped training early (e.g. cancel)
    train_loss: float | None
    tokens_per_second: float
    checkpoints: list[str]
    resumed_from: str | None
    adapter_path: str | None = None
    mask: str = ""
    mask_warnings: list[str] = field(default_factory=list)
    # With spec.soft_label_alpha: how the teacher's soft labels line up with the student's tokens.
    soft_labels: str = ""
    # The hyper-parameters trained with, and which of them the schedule rule chose.
    spec: dict[str, Any] = field(default_factory=dict)
    schedule_defaults: list[str] = field(default_factory=list)
    train_rows: int = 0
    # In-training accuracy (None without it): the step the final model comes from and its score,
    # why training stopped early ("target", "plateau", "time_budget"; None: the schedule ended),
    # and what scoring cost in this attempt: seconds and share of the training time.
    best_step: int | None = None
    best_score: float | None = None
    stopped: str | None = None
    evaluations: int = 0
    eval_every: int | None = None
    eval_max_new_tokens: int | None = None
    eval_seconds: float = 0.0
    train_seconds: float = 0.0
    eval_share: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def train(
    *,
    dataset_path: Path,
    student: str | Path | None,
    output_dir: Path,
    spec: TrainingSpec,
    sft_overrides: Mapping[str, Any] | None = None,
    from_scratch: Mapping[str, Any] | None = None,
    resume: bool = True,
    metrics_path: Path | None = None,
    lineage: Mapping[str, Any] | None = None,
    callbacks: Sequence[Any] | None = None,
    progress: Callable[[dict[str, Any]], None] | None = None,
    accuracy: AccuracySettings | None = None,
    teacher_tokenizer: str | Path | None = None,
) -> TrainResult:
    """Fine-tune a student on a prompt–completion dataset and write `output_dir/final`.

    Args:
        dataset_path: an exported dataset folder or a .jsonl/.parquet file (see `load_prompt_completion`);
            trains on its "train" split; a "validation" or "eval" split (else `spec.eval_split` of
            the train rows) gives the eval loss. A "test" split is left for scoring generations.
        student: a model folder or hub id; None when `from_scratch` is given.
        output_dir: checkpoints, metrics, the final model and its adapter go here.
        spec: the validated hyper-parameters.
        sft_overrides: any `SFTConfig` fields (e.g. from a YAML file); they win over `spec`.
        from_scratch: `TinyModelSpec` fields; a random-init student is built in `output_dir/init`.
        resume: continue from the last complete checkpoint in `output_dir` (same data order).
        metrics_path: JSON-lines metrics file; defaults to `output_dir/metrics.jsonl`.
        lineage: recorded in the model card, e.g. dataset version id and digest, teacher, recipe.
        callbacks: extra `transformers.TrainerCallback`s. One that sets `control.should_training_stop`
            ends training early and `train` still saves `final` (global_step < total_steps); one that
            raises aborts the run and the next call resumes from the last checkpoint.
        progress: called after every step with {step, total_steps, loss, tokens_per_second, ...}.
        accuracy: score the student on held-out items while training (`trainer.accuracy`): the
            score joins the metric series as `eval_accuracy`, the final model is the best-scoring
            one, and training stops at the target or a plateau.
        teacher_tokenizer: with `spec.soft_label_alpha`, the teacher's model folder: its tokenizer
            must equal the student's (soft labels are by token id). Without it the pre-flight still
            refuses data whose teacher tokens do not line up with the student's.

    Schedule fields the spec leaves unset are chosen by `trainer.schedule.default_schedule` from the
    number of training rows and the student kind (scratch, full, lora); the resolved spec is written
    to `output_dir/resolved_spec.json` before step 1 and returned in the result.

    Raises:
        DatasetError, StudentError, MaskError, CheckpointError, SoftLabelError, ValueError: bad
            input, before step 1.
    """
    with quiet_datasets(), _quiet_transformers():
        return _train(
            dataset_path=Path(dataset_path),
            student=student,
            output_dir=Path(output_dir),
            spec=spec,
            sft_overrides=sft_overrides,
            from_scratch=from_scratch,
            resume=resume,
            metrics_path=metrics_path,
            lineage=lineage,
            callbacks=callbacks,
            progress=progress,
            accuracy=accuracy,
            teacher_tokenizer=teacher_tokenizer,
        )


def _train(
    *,
    dataset_path: Path,
    student: str | Path | None,
    output_dir: Path,
    spec: TrainingSpec,
    sft_overrides: Mapping[str, Any] | None,
    from_scratch: Mapping[str, Any] | None,
    resume: bool,
    metrics_path: Path | None,
    lineage: Mapping[str, Any] | None,
    callbacks: Sequence[Any] | None,
    progress: Callable[[dict[str, Any]], None] | None,
    accuracy: AccuracySettings | None,
    teacher_tokenizer: str | Path | None = None,
) -> TrainResult:
    from transformers import PrinterCallback
    from trl.trainer.sft_trainer import SFTTrainer

    if (student is None) == (from_scratch is None):
        raise StudentError("give either a student model or from_scratch shapes, not both or neither")
    output_dir.mkdir(parents=True, exist_ok=True)
    resumed_from = _checkpoint_to_resume(output_dir, resume)

    splits = load_prompt_completion(dataset_path)
    train_rows, eval_rows = _train_and_eval(splits, spec)
    kind: StudentKind = "scratch" if from_scratch is not None else spec.method
    spec, schedule_defaults = spec.with_schedule(len(train_rows), kind)
    _write_json(
        output_dir / RESOLVED_SPEC_FILE,
        {
            "spec": spec.model_dump(mode="json"),
            "defaults": {"fields": schedule_defaults, "train_rows": len(train_rows), "student_kind": kind},
        },
    )
    sft_config = build_sft_config(
        spec,
        output_dir,
        {"eval_strategy": "steps" if eval_rows is not None else "no", **(sft_overrides or {})},
    )
    student_path: str | Path = (
        _build_from_scratch(output_dir, from_scratch, train_rows)
        if from_scratch is not None
        else str(student)
    )
    tokenizer = _load_tokenizer(student_path, sft_config)
    mask = check_completion_mask(tokenizer, train_rows, sft_config)
    for warning in mask.warnings:
        log.warning("mask pre-flight: %s", warning)
    alignment = None
    if spec.soft_label_alpha is not None:
        teacher_tok = _load_tokenizer(teacher_tokenizer, sft_config) if teacher_tokenizer else None
        alignment = soft_label_preflight(tokenizer, train_rows, sft_config, teacher_tokenizer=teacher_tok)
    model = _load_model(student_path, sft_config)

    metrics = JsonlMetricsCallback(metrics_path or output_dir / METRICS_FILE)
    all_callbacks: list[Any] = [metrics, *(callbacks or [])]
    budget = TimeBudgetCallback(spec.max_minutes, output_dir) if spec.max_minutes else None
    if budget is not None:
        all_callbacks.append(budget)
    scoring = (
        AccuracyCallback(
            accuracy,
            tokenizer=tokenizer,
            output_dir=output_dir,
            metrics=metrics,
            answer_lengths=_completion_texts(train_rows),
        )
        if accuracy is not None
        else None
    )
    if scoring is not None:
        all_callbacks.append(scoring)
    if progress is not None:
        all_callbacks.append(StepProgressCallback(metrics, progress))
    trainer_class: Any = SFTTrainer
    distill: dict[str, Any] = {}
    if alignment is not None:
        trainer_class = soft_label_trainer_class()
        distill["soft_label_alpha"] = spec.soft_label_alpha
    trainer = trainer_class(
        **distill,
        model=model,
        args=sft_config,
        train_dataset=train_rows,
        eval_dataset=eval_rows,
        processing_class=tokenizer,
        peft_config=_lora_config(spec) if spec.method == "lora" else None,
        callbacks=all_callbacks,
    )
    # Logs go to the metrics file (and `progress`), not to stdout.
    trainer.remove_callback(PrinterCallback)
    outcome = trainer.train(resume_from_checkpoint=resumed_from)

    runtime = float(outcome.metrics.get("train_runtime") or 0.0)
    tokens = float(getattr(trainer, "_total_train_tokens", 0))
    global_step = int(trainer.state.global_step)
    best = AccuracyState.read(output_dir / BEST_DIR / BEST_STATE) if scoring is not None else None
    if best is not None and best.best_step is not None and best.best_step != global_step:
        # The final model is the best-scoring one, not the last.
        restore_best(trainer.model, output_dir)
    final_dir, adapter_dir = _save_final(trainer, tokenizer, output_dir, spec)
    stopped = best.stopped if best is not None else None
    if stopped is None and budget is not None and budget.stopped:
        stopped = "time_budget"
    result = TrainResult(
        output_dir=str(output_dir),
        model_path=str(final_dir),
        global_step=global_step,
        total_steps=int(trainer.state.max_steps),
        train_loss=float(outcome.training_loss) if outcome.training_loss is not None else None,
        tokens_per_second=round(tokens / runtime, 2) if runtime > 0 else 0.0,
        checkpoints=[str(path) for path in list_checkpoints(output_dir)],
        resumed_from=resumed_from,
        adapter_path=str(adapter_dir) if adapter_dir else None,
        mask=mask.summary(),
        mask_warnings=mask.warnings,
        soft_labels=alignment.summary() if alignment is not None else "",
        spec=spec.model_dump(mode="json"),
        schedule_defaults=schedule_defaults,
        train_rows=len(train_rows),
        best_step=best.best_step if best is not None else None,
        best_score=best.best_score if best is not None else None,
        stopped=stopped,
        evaluations=len(best.history) if best is not None else 0,
        eval_every=scoring.every if scoring is not None else None,
        eval_max_new_tokens=scoring.max_new_tokens if scoring is not None else None,
        eval_seconds=round(scoring.eval_seconds, 3) if scoring is not None else 0.0,
        train_seconds=round(runtime, 3),
        eval_share=eval_share(scoring.eval_seconds, runtime) if scoring is not None else None,
    )
    _write_model_card(
        final_dir,
        result=result,
        spec=spec,
        sft_config=sft_config,
        lineage=_lineage(dataset_path, student, from_scratch, student_path, lineage),
        mask=mask,
        train_rows=len(train_rows),
    )
    return result


def _completion_texts(rows: Dataset) -> list[str]:
    """The answers of (a sample of) the training rows: how long the student's answers will be."""
    texts = []
    for row in rows.select(range(min(len(rows), 2_000))):
        completion = row["completion"]
        if isinstance(completion, list):
            texts.append("".join(str(m.get("content", "")) for m in completion if isinstance(m, dict)))
        else:
            texts.append(str(completion))
    return texts


def _write_json(path: Path, data: Any) -> None:
    staging = path.with_name(f".{path.name}.tmp")
    staging.write_text(json.dumps(data, indent=2, default=str), encoding="utf-8")
    staging.replace(path)


def _checkpoint_to_resume(output_dir: Path, resume: bool) -> str | None:
    complete = list_checkpoints(output_dir)
    if complete and not resume:
        raise CheckpointError(
            f"{output_dir} already holds checkpoints ({complete[-1].name}); resume, or use an empty folder"
        )
    last = complete[-1] if complete else None
    # A checkpoint cut by a crash (no trainer_state.json) is not resumable; the step is redone.
    for path in output_dir.iterdir():
        if CHECKPOINT.match(path.name) and path.is_dir() and path not in complete:
            log.warning("removing incomplete checkpoint %s", path)
            shutil.rmtree(path, ignore_errors=True)
    return str(last) if last else None


def _train_and_eval(splits: DatasetDict, spec: TrainingSpec) -> tuple[Dataset, Dataset | None]:
    def columns(split: Dataset) -> list[str]:
        # Soft-label distillation keeps the teacher's top-k columns (the pre-flight says if absent).
        soft = (
            [c for c in SOFT_LABEL_COLUMNS if c in split.column_names]
            if spec.soft_label_alpha is not None
            else []
        )
        return ["prompt", "completion", *soft]

    train_rows = splits["train"].select_columns(columns(splits["train"]))
    for name in EVAL_SPLITS:
        if name in splits and len(splits[name]):
            return train_rows, splits[name].select_columns(columns(splits[name]))
    if spec.eval_split and len(train_rows) >= 2:
        # Seeded: a resumed run holds out the same rows.
        parts = train_rows.train_test_split(test_size=spec.eval_split, seed=spec.seed)
        return parts["train"], parts["test"]
    return train_rows, None


def _build_from_scratch(output_dir: Path, shapes: Mapping[str, Any], train_rows: Dataset) -> Path:
    init_dir = output_dir / INIT_DIR
    try:
        tiny = TinyModelSpec.from_dict(shapes)
    except (TypeError, ValueError) as exc:
        raise StudentError(f"from_scratch: {exc}") from exc
    if (init_dir / "config.json").exists():
        built = read_tiny_model_info(init_dir)
        if {key: built.get(key) for key in asdict(tiny)} != asdict(tiny):
            raise StudentError(f"{init_dir} holds a student of other shapes than from_scratch asks for")
        return init_dir
    # A reused tokenizer (e.g. the teacher's) needs no corpus.
    corpus = row_texts(train_rows, limit=CORPUS_ROWS) if tiny.tokenizer is None else ()
    try:
        build_tiny_model(init_dir, tiny, extra_texts=corpus)
    except TokenizerError as exc:
        raise StudentError(f"from_scratch.tokenizer: {exc}") from exc
    return init_dir


def _load_tokenizer(student: str | Path, sft_config: Any) -> Any:
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(
            str(student), trust_remote_code=sft_config.trust_remote_code
        )
    except Exception as exc:  # OSError, ValueError, EnvironmentError... from hub or disk
        raise StudentError(f"cannot load the tokenizer of student {student}: {_first_line(exc)}") from exc
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _load_model(student: str | Path, sft_config: Any) -> Any:
    from trl.trainer.utils import create_model_from_path

    kwargs = dict(sft_config.model_init_kwargs or {})
    kwargs.setdefault("trust_remote_code", sft_config.trust_remote_code)
    try:
        return create_model_from_path(str(student), **kwargs)
    except Exception as exc:  # a folder that is not a causal LM fails in many ways
        raise StudentError(f"cannot load student model {student}: {_first_line(exc)}") from exc


def _lora_config(spec: TrainingSpec) -> Any:
    from peft import LoraConfig

    return LoraConfig(
        r=spec.lora_r,
        lora_alpha=spec.lora_alpha,
        lora_dropout=spec.lora_dropout,
        target_modules=spec.lora_target_modules,
        task_type="CAUSAL_LM",
    )


def _save_final(
    trainer: Any, tokenizer: Any, output_dir: Path, spec: TrainingSpec
) -> tuple[Path, Path | None]:
    """Write the final model folder atomically (built beside it, then renamed)."""
    final_dir = output_dir / FINAL_DIR
    adapter_dir = output_dir / ADAPTER_DIR if spec.method == "lora" else None
    staging = Path(tempfile.mkdtemp(prefix=".final.", dir=output_dir))
    try:
        model = trainer.model
        if adapter_dir is not None:
            _replace_dir(adapter_dir, lambda tmp: model.save_pretrained(tmp))
            # vLLM and transformers load a merged model directly; the adapter stays for PEFT users.
            model = model.merge_and_unload()
        # Training turns the KV cache off; the saved model is for generation.
        model.config.use_cache = True
        model.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)
        if final_dir.exists():
            shutil.rmtree(final_dir)
        staging.rename(final_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return final_dir, adapter_dir


def _replace_dir(target: Path, write: Callable[[Path], None]) -> None:
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        write(staging)
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _lineage(
    dataset_path: Path,
    student: str | Path | None,
    from_scratch: Mapping[str, Any] | None,
    student_path: str | Path,
    given: Mapping[str, Any] | None,
) -> dict[str, Any]:
    lineage: dict[str, Any] = {"dataset_path": str(dataset_path)}
    if student is not None:
        lineage["student"] = str(student)
    else:
        lineage["student"] = f"from scratch ({student_path})"
        lineage["from_scratch"] = dict(from_scratch or {})
    lineage.update(given or {})
    if "dataset_digest" not in lineage:
        lineage["dataset_digest"] = dataset_digest(dataset_path)
    return lineage


def _write_model_card(
    final_dir: Path,
    *,
    result: TrainResult,
    spec: TrainingSpec,
    sft_config: Any,
    lineage: Mapping[str, Any],
    mask: MaskReport,
    train_rows: int,
) -> None:
    """README.md (a Hugging Face model card) and the same facts as JSON for programs."""
    student = str(lineage.get("student", ""))
    base_model = (
        student if student and not student.startswith("from scratch") and not Path(student).exists() else None
    )
    front = ["---", "library_name: transformers", "tags:", "- hardlabel", "- trl", "- sft", "- distillation"]
    if base_model:
        front.append(f"base_model: {base_model}")
    front.append("---")
    config = {
        key: getattr(sft_config, key)
        for key in (
            "learning_rate",
            "num_train_epochs",
            "max_steps",
            "per_device_train_batch_size",
            "gradient_accumulation_steps",
            "max_length",
            "packing",
            "packing_strategy",
            "warmup_steps",
            "lr_scheduler_type",
            "seed",
            "bf16",
        )
    }
    rows = "\n".join(f"| {key} | `{_cell(value)}` |" for key, value in lineage.items())
    card = "\n".join(
        [
            *front,
            "",
            f"# {final_dir.parent.name}",
            "",
            "A student model trained by hardlabel with hard-label distillation: "
            "supervised fine-tuning (TRL SFT) on a teacher's answers, with the loss on the answers only.",
            "",
            "## Lineage",
            "",
            "| | |",
            "|---|---|",
            rows,
            "",
            "## Training",
            "",
            f"- method: {spec.method}; steps: {result.global_step}; train rows: {train_rows}",
            *(
                [
                    f"- kept the best of {result.evaluations} in-training scorings: step {result.best_step}, "
                    f"accuracy {result.best_score:.4f}"
                    + (f" (stopped early: {result.stopped})" if result.stopped else "")
                ]
                if result.best_step is not None and result.best_score is not None
                else []
            ),
            *(
                [f"- schedule chosen from the data: {', '.join(result.schedule_defaults)}"]
                if result.schedule_defaults
                else []
            ),
            f"- final train loss: {result.train_loss if result.train_loss is not None else 'n/a'}",
            f"- {mask.summary()}",
            f"- resumed from: {result.resumed_from or 'no'}",
            "",
            "## Configuration",
            "",
            "```json",
            json.dumps({"spec": spec.model_dump(mode="json"), "sft_config": config}, indent=2, default=str),
            "```",
            "",
        ]
    )
    (final_dir / "README.md").write_text(card, encoding="utf-8")
    facts = {
        "lineage": dict(lineage),
        "spec": spec.model_dump(mode="json"),
        "sft_config": config,
        "result": result.to_dict(),
    }
    (final_dir / LINEAGE_FILE).write_text(json.dumps(facts, indent=2, default=str), encoding="utf-8")


@contextmanager
def _quiet_transformers() -> Iterator[None]:
    """No weight loading/saving progress bars (callers show their own progress)."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()  # type: ignore[no-untyped-call]


def _cell(value: Any) -> str:
    text = json.dumps(value, default=str) if not isinstance(value, str) else value
    return text.replace("|", "\\|").replace("\n", " ")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
