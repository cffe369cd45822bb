"""What the train worker writes while its child process works: it tails the files the child writes.

`TrainingMonitor` turns the trainer's metrics, progress, resolved spec and checkpoints into metric
rows, the run's step/total/tokens-per-second and checkpoint events; `ScoreMonitor` stores each
model's evaluation score as it arrives. Each `sync` writes what is new in one fenced transaction.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sqlalchemy import cast, func, literal, update
from sqlalchemy.dialects.postgresql import JSONB, insert
from sqlalchemy.orm import Session

from service.db.models import TrainingMetric, TrainingRun
from service.events import record_event
from service.filters.specs import VerifierParams
from service.workers.context import TaskContext
from service.workers.evaluate import EvalItem, comparison_table, read_scores
from service.workers.train_child import PROGRESS_FILE
from trainer.run_folder import METRICS_FILE, RESOLVED_SPEC_FILE, list_checkpoints

# The key of a run's `config` that names the schedule fields the trainer chose (trainer/schedule.py).
SCHEDULE_DEFAULTS_KEY = "defaults"


def merged_results(patch: dict[str, Any]) -> Any:
    """SQL for `results` with `patch`'s keys replaced: the evaluation table and the training outcome
    are written at different times and must not erase each other."""
    return func.coalesce(TrainingRun.results, cast(literal("{}"), JSONB)).op("||")(cast(patch, JSONB))


class TrainingMonitor:
    """Tails the training child's files; each `sync` writes what is new in one fenced transaction."""

    def __init__(self, ctx: TaskContext, run_id: int, out: Path) -> None:
        self.ctx = ctx
        self.run_id = run_id
        self.out = out
        self.offset = 0  # bytes of metrics.jsonl already read (the whole file is re-read by a new worker)
        self.pending: dict[int, dict[str, Any]] = {}
        self.progress_mtime: float | None = None
        self.resolved_stored = False
        # Checkpoints of earlier attempts are not news (their events were recorded then).
        self.checkpoints = [str(path) for path in list_checkpoints(out)]

    def _new_metric_rows(self) -> dict[int, dict[str, Any]]:
        path = self.out / METRICS_FILE
        if not path.exists():
            return {}
        with path.open("rb") as handle:
            handle.seek(self.offset)
            data = handle.read()
        end = data.rfind(b"\n")
        if end < 0:
            return {}  # only part of a line so far
        self.offset += end + 1
        rows: dict[int, dict[str, Any]] = {}
        for line in data[: end + 1].splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by a crash of an earlier child
            if isinstance(row, dict) and isinstance(row.get("step"), int):
                rows[row["step"]] = row  # the last line of a step carries all its values
        return rows

    def _progress(self) -> dict[str, Any] | None:
        path = self.out / PROGRESS_FILE
        try:
            mtime = path.stat().st_mtime
        except FileNotFoundError:
            return None
        if mtime == self.progress_mtime:
            return None
        try:
            progress = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            return None
        self.progress_mtime = mtime
        return progress if isinstance(progress, dict) else None

    def _resolved_config(self) -> dict[str, Any] | None:
        """The spec as the trainer resolved it (schedule defaults chosen), once, for the run's `config`."""
        if self.resolved_stored:
            return None
        try:
            resolved = json.loads((self.out / RESOLVED_SPEC_FILE).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            return None
        if not isinstance(resolved, dict) or not isinstance(resolved.get("spec"), dict):
            return None
        return {**resolved["spec"], SCHEDULE_DEFAULTS_KEY: resolved.get("defaults") or {}}

    def sync(self) -> None:
        self.pending.update(self._new_metric_rows())
        progress = self._progress()
        config = self._resolved_config()
        checkpoints = [str(path) for path in list_checkpoints(self.out)]
        new_checkpoints = [c for c in checkpoints if c not in self.checkpoints]
        if not (self.pending or progress or config or checkpoints != self.checkpoints):
            return
        rows = dict(self.pending)

        def write(session: Session, committed: int) -> None:
            if rows:
                statement = insert(TrainingMetric).values(
                    [
                        {"training_run_id": self.run_id, "step": step, "data": data}
                        for step, data in rows.items()
                    ]
                )
                session.execute(
                    statement.on_conflict_do_update(
                        index_elements=["training_run_id", "step"],
                        set_={"data": statement.excluded.data, "created_at": func.now()},
                    )
                )
            values: dict[str, Any] = {"checkpoints": checkpoints}
            if config is not None:
                values["config"] = config
            if progress is not None and isinstance(progress.get("step"), int):
                values["step"] = progress["step"]
                if progress.get("total_steps"):
                    values["total_steps"] = int(progress["total_steps"])
            speeds = [r["tokens_per_second"] for _, r in sorted(rows.items()) if r.get("tokens_per_second")]
            if speeds:
                values["tokens_per_second"] = speeds[-1]
            session.execute(update(TrainingRun).where(TrainingRun.id == self.run_id).values(**values))
            for path in new_checkpoints:
                name = Path(path).name
                record_event(
                    session,
                    "checkpoint",
                    f"{name} saved",
                    training_run_id=self.run_id,
                    task_id=self.ctx.task.id,
                    data={"checkpoint": name, "path": path, "step": int(name.rsplit("-", 1)[1])},
                )

        self.ctx.fenced(write)
        for step in rows:
            self.pending.pop(step, None)
        self.checkpoints = checkpoints
        self.resolved_stored = self.resolved_stored or config is not None


class ScoreMonitor:
    """Stores each model's score (a partial table) as soon as the evaluation child writes it."""

    def __init__(
        self,
        ctx: TaskContext,
        run_id: int,
        items: list[EvalItem],
        params: VerifierParams,
        source: str,
        scores_path: Path,
    ) -> None:
        self.ctx = ctx
        self.run_id = run_id
        self.items = items
        self.params = params
        self.source = source
        self.scores_path = scores_path
        self.stored: set[str] = set()

    def sync(self) -> None:
        scores = read_scores(self.scores_path)
        new = [name for name in scores if name not in self.stored]
        if not new:
            return
        table = comparison_table(self.items, self.params, self.source, scores)

        def write(session: Session, committed: int) -> None:
            session.execute(
                update(TrainingRun).where(TrainingRun.id == self.run_id).values(results=merged_results(table))
            )
            for name in new:
                score = scores[name]
                record_event(
                    session,
                    "scored",
                    f"{name.replace('_', ' ')} ({score.model}): {score.accuracy:.3f} "
                    f"({score.correct}/{score.items} {self.params.mode})",
                    training_run_id=self.run_id,
                    task_id=self.ctx.task.id,
                    data={"name": name, **score.summary()},
                )

        self.ctx.fenced(write)
        self.stored.update(new)
