"""Hard-label distillation at toy scale, end to end with hardlabel's trainer library (CPU friendly).

1. A teacher (tiny Llama from scratch, default 4 layers x hidden 128, ~1.1M parameters) learns
   2-digit addition ("What is a+b?" -> "c") from ground truth.
2. The teacher answers fresh questions (greedy): those answers are the only labels the student sees.
3. A smaller student (default 2 layers x hidden 64) is trained from scratch on the teacher's labels.
4. Both are scored by greedy exact match on the same held-out items; a table is printed.

Each model trains with one `trainer.sft.train` call (cosine learning rate over --max-steps). Every
--eval-every steps a callback scores the model being trained on the held-out items (greedy, not
counted in the training seconds) and, by default, stops training once --target is reached, so the
table shows how many steps and seconds reaching the target took on this machine. Measured with
lr 1e-3: 3e-3 (constant) left the teacher at ~5% after 1,250 steps.

    .venv/bin/python bench/distill_toy.py            # defaults: the settings the demo reuses
    .venv/bin/python bench/distill_toy.py --help
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from transformers import TrainerCallback  # noqa: E402

from answers.match import answers_match  # noqa: E402
from trainer.evaluate import generate_answers, generate_answers_hf  # noqa: E402
from trainer.sft import train  # noqa: E402
from trainer.spec import TrainingSpec  # noqa: E402


def exact_accuracy(answers: list[str], references: list[str]) -> float:
    """The share of answers equal to their reference as written (`answers.match`'s exact mode)."""
    verdicts = answers_match(answers, references, "exact")
    return sum(verdicts) / len(verdicts) if verdicts else 0.0


@dataclass
class Outcome:
    name: str
    parameters: int
    labels: int
    label_accuracy: float | None
    steps: int  # to reach the target (or all steps run when it was not reached)
    seconds: float  # training seconds for those steps (scoring excluded)
    accuracy: float  # held-out exact match at the end
    reached: bool


def question(a: int, b: int) -> list[dict[str, str]]:
    return [{"role": "user", "content": f"What is {a}+{b}?"}]


def row(a: int, b: int, answer: str) -> dict[str, Any]:
    return {"prompt": question(a, b), "completion": [{"role": "assistant", "content": answer}]}


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


class HeldOutAccuracy(TrainerCallback):  # type: ignore[misc]
    """Score the model being trained every N steps; stop once the target is reached (if asked)."""

    def __init__(
        self, eval_pairs: list[tuple[int, int]], every: int, target: float, stop: bool, name: str
    ) -> None:
        self.prompts = [question(a, b) for a, b in eval_pairs]
        self.references = [str(a + b) for a, b in eval_pairs]
        self.every, self.target, self.stop, self.name = every, target, stop, name
        self.reached: tuple[int, float] | None = None
        self.last: tuple[int, float, float] = (0, 0.0, 0.0)
        self._started = self._eval_seconds = 0.0

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._started, self._eval_seconds = time.perf_counter(), 0.0

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if state.global_step % self.every and state.global_step < state.max_steps:
            return
        began = time.perf_counter()
        answers = generate_answers(
            kwargs["model"], kwargs["processing_class"], self.prompts, 8, batch_size=256
        )
        accuracy = exact_accuracy(answers, self.references)
        self._eval_seconds += time.perf_counter() - began
        seconds = time.perf_counter() - self._started - self._eval_seconds
        self.last = (state.global_step, seconds, accuracy)
        print(
            f"  {self.name}: step {state.global_step:5d}  {seconds:7.1f} s  held-out {accuracy:.3f}",
            flush=True,
        )
        if accuracy >= self.target and self.reached is None:
            self.reached = (state.global_step, seconds)
            control.should_training_stop = self.stop


def train_and_score(
    name: str,
    dataset: Path,
    shapes: dict[str, int],
    out: Path,
    eval_pairs: list[tuple[int, int]],
    args: argparse.Namespace,
    labels: int,
    label_accuracy: float | None,
) -> Outcome:
    """Train from scratch on `dataset`, scoring the held-out items as training goes."""
    shutil.rmtree(out, ignore_errors=True)
    spec = TrainingSpec(
        learning_rate=args.lr,
        max_steps=args.max_steps,
        per_device_train_batch_size=args.batch,
        max_length=64,
        warmup_steps=args.warmup,
        lr_scheduler_type=args.scheduler,
        logging_steps=50,
        save_steps=args.max_steps,
        save_total_limit=1,
        seed=args.seed,
    )
    scorer = HeldOutAccuracy(eval_pairs, args.eval_every, args.target, not args.no_stop, name)
    train(
        dataset_path=dataset, student=None, from_scratch=shapes, output_dir=out, spec=spec, callbacks=[scorer]
    )
    info = json.loads((out / "init" / "hardlabel_tiny_model.json").read_text())
    step, seconds = scorer.reached or scorer.last[:2]
    return Outcome(
        name, info["parameters"], labels, label_accuracy, step, seconds, scorer.last[2], bool(scorer.reached)
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--work", type=Path, default=ROOT / ".tmp" / "distill_toy")
    parser.add_argument("--teacher-rows", type=int, default=4000, help="ground-truth rows for the teacher")
    parser.add_argument("--student-rows", type=int, default=3900, help="fresh questions the teacher labels")
    parser.add_argument("--eval-items", type=int, default=200)
    parser.add_argument("--teacher-shape", default="4x128", help="LAYERSxHIDDEN")
    parser.add_argument("--student-shape", default="2x64", help="LAYERSxHIDDEN")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--eval-every", type=int, default=250)
    parser.add_argument("--max-steps", type=int, default=2000, help="schedule length (most steps trained)")
    parser.add_argument("--scheduler", default="cosine", help="transformers lr_scheduler_type")
    parser.add_argument("--target", type=float, default=0.95)
    parser.add_argument("--no-stop", action="store_true", help="train all --max-steps even after the target")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--threads", type=int, help="torch intra-op threads (default: torch's; 1 on a busy shared machine)"
    )
    args = parser.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)

    pairs = [(a, b) for a in range(100) for b in range(100)]
    random.Random(args.seed).shuffle(pairs)
    needed = args.eval_items + args.teacher_rows + args.student_rows
    if needed > len(pairs):
        parser.error(f"eval + teacher + student rows ({needed}) exceed the {len(pairs)} possible questions")
    eval_pairs = pairs[: args.eval_items]
    teacher_pairs = pairs[args.eval_items : args.eval_items + args.teacher_rows]
    fresh_pairs = pairs[args.eval_items + args.teacher_rows : needed]

    def shape(text: str) -> dict[str, int]:
        layers, hidden = (int(part) for part in text.lower().split("x"))
        # Heads of 32 dimensions, as vLLM's CPU attention needs (the service serves these models).
        return {"layers": layers, "hidden": hidden, "heads": max(1, hidden // 32), "vocab": 512}

    work = args.work
    print(f"teacher: {args.teacher_shape} on {len(teacher_pairs)} ground-truth rows", flush=True)
    truth = write_jsonl(work / "truth.jsonl", [row(a, b, str(a + b)) for a, b in teacher_pairs])
    teacher = train_and_score(
        "teacher",
        truth,
        shape(args.teacher_shape),
        work / "teacher",
        eval_pairs,
        args,
        len(teacher_pairs),
        1.0,
    )

    started = time.perf_counter()
    labels = generate_answers_hf(
        work / "teacher" / "final", [question(a, b) for a, b in fresh_pairs], max_new_tokens=8, batch_size=256
    )
    label_seconds = time.perf_counter() - started
    label_accuracy = exact_accuracy(labels, [str(a + b) for a, b in fresh_pairs])
    print(
        f"teacher labelled {len(labels)} fresh questions in {label_seconds:.1f} s "
        f"({label_accuracy:.3f} right)"
    )
    taught = write_jsonl(
        work / "teacher_labels.jsonl",
        [row(a, b, answer) for (a, b), answer in zip(fresh_pairs, labels, strict=True)],
    )

    print(f"student: {args.student_shape} on the teacher's {len(labels)} labels", flush=True)
    student = train_and_score(
        "student",
        taught,
        shape(args.student_shape),
        work / "student",
        eval_pairs,
        args,
        len(labels),
        label_accuracy,
    )

    print()
    target = f"to {args.target:.0%}"
    print(
        f"{'model':8} {'params':>9} {'labels':>7} {'label acc':>9} {'steps ' + target:>14} "
        f"{'train s ' + target:>16} {'held-out acc':>12}"
    )
    for outcome in (teacher, student):
        label_acc = f"{outcome.label_accuracy:.3f}" if outcome.label_accuracy is not None else "-"
        steps = f"{outcome.steps}" if outcome.reached else f"not in {outcome.steps}"
        print(
            f"{outcome.name:8} {outcome.parameters:9,d} {outcome.labels:7d} {label_acc:>9} {steps:>14} "
            f"{outcome.seconds:16.1f} {outcome.accuracy:12.3f}"
        )
    ratio = student.accuracy / teacher.accuracy if teacher.accuracy else 0.0
    print(f"\nstudent / teacher held-out accuracy: {ratio:.3f}")
    print(
        f"settings: lr {args.lr} {args.scheduler} over {args.max_steps} steps, warmup {args.warmup}, "
        f"batch {args.batch}, max_length 64, split digits, vocab 512, seed {args.seed}, "
        f"torch threads {torch_threads()}"
    )


def torch_threads() -> int:
    import torch

    return int(torch.get_num_threads())


if __name__ == "__main__":
    main()
