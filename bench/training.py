"""Training throughput: raw `trl.SFTTrainer` vs hardlabel's `trainer.sft.train`, same config and data.

Both runs use the SFTConfig that `build_sft_config` makes from one TrainingSpec, the same student
and the same rows. The same passive callback times the training loop of both (from the Trainer's
train begin to train end) and reads TRL's own token count (prompt and answer, no padding), giving
tokens per second of wall clock and tokens per CPU second. CPU seconds barely move when other
processes share the machine, wall seconds do: on a busy machine compare the CPU figures. The wall
clock of each whole call (loading, the mask pre-flight, checkpoints, the final save) is printed
too. Runs alternate and the best of --repeats is kept. Goal: ratio >= 0.97.

    .venv/bin/python bench/training.py
    .venv/bin/python bench/training.py --steps 200 --batch 32 --repeats 3
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

from trainer.config import TrainingSpec, build_sft_config  # noqa: E402
from trainer.sft import train  # noqa: E402
from trainer.tiny_model import TinyModelSpec, build_tiny_model  # noqa: E402


def addition_rows(count: int, seed: int = 0) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    rows = []
    for _ in range(count):
        a, b = rng.randint(0, 99), rng.randint(0, 99)
        rows.append(
            {
                "prompt": [{"role": "user", "content": f"What is {a}+{b}?"}],
                "completion": [{"role": "assistant", "content": str(a + b)}],
            }
        )
    return rows


@dataclass
class Measure:
    tokens: float = 0.0
    wall: float = 0.0
    cpu: float = 0.0
    call_wall: float = 0.0

    @property
    def per_wall_second(self) -> float:
        return self.tokens / self.wall if self.wall else 0.0

    @property
    def per_cpu_second(self) -> float:
        return self.tokens / self.cpu if self.cpu else 0.0


class LoopClock(TrainerCallback):  # type: ignore[misc]
    """Times the training loop (wall and process CPU) and keeps TRL's cumulative token count."""

    def __init__(self) -> None:
        self.measure = Measure()
        self._wall = self._cpu = 0.0

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._wall, self._cpu = time.perf_counter(), time.process_time()

    def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kwargs: Any) -> None:
        if logs and "num_tokens" in logs:
            self.measure.tokens = float(logs["num_tokens"])

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.measure.wall = time.perf_counter() - self._wall
        self.measure.cpu = time.process_time() - self._cpu


def run_raw(student: Path, data: Path, spec: TrainingSpec, out: Path) -> Measure:
    """Plain TRL: the rows as a `datasets.Dataset`, the student by path, train, save."""
    from datasets import Dataset
    from transformers import AutoTokenizer
    from trl.trainer.sft_trainer import SFTTrainer

    shutil.rmtree(out, ignore_errors=True)
    clock = LoopClock()
    started = time.perf_counter()
    rows = Dataset.from_list([json.loads(line) for line in data.read_text().splitlines()])
    trainer = SFTTrainer(
        model=str(student),
        args=build_sft_config(spec, out),
        train_dataset=rows,
        processing_class=AutoTokenizer.from_pretrained(str(student)),
        callbacks=[clock],
    )
    trainer.train()
    trainer.save_model(str(out / "final"))
    clock.measure.call_wall = time.perf_counter() - started
    return clock.measure


def run_hardlabel(student: Path, data: Path, spec: TrainingSpec, out: Path) -> Measure:
    shutil.rmtree(out, ignore_errors=True)
    clock = LoopClock()
    started = time.perf_counter()
    train(dataset_path=data, student=student, output_dir=out, spec=spec, callbacks=[clock])
    clock.measure.call_wall = time.perf_counter() - started
    return clock.measure


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--work", type=Path, default=ROOT / ".tmp" / "bench_training")
    parser.add_argument("--student", type=Path, help="Model folder (default: a 4x128 tiny model built here).")
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--save-steps", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument(
        "--threads", type=int, help="torch intra-op threads (default: torch's; 1 on a busy shared machine)"
    )
    args = parser.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)

    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    student = args.student or work / "student-4x128"
    if args.student is None and not (student / "config.json").exists():
        build_tiny_model(student, TinyModelSpec(layers=4, hidden=128, heads=4, vocab=512))
    data = work / "rows.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in addition_rows(args.rows)))
    spec = TrainingSpec(
        learning_rate=1e-3,
        max_steps=args.steps,
        per_device_train_batch_size=args.batch,
        max_length=64,
        logging_steps=10,
        save_steps=args.save_steps,
    )

    raw: list[Measure] = []
    ours: list[Measure] = []
    for repeat in range(args.repeats):
        raw.append(run_raw(student, data, spec, work / "raw"))
        ours.append(run_hardlabel(student, data, spec, work / "hardlabel"))
        print(
            f"repeat {repeat + 1}: raw {raw[-1].per_wall_second:,.0f} tok/s ({raw[-1].per_cpu_second:,.0f} "
            f"per CPU s), hardlabel {ours[-1].per_wall_second:,.0f} tok/s "
            f"({ours[-1].per_cpu_second:,.0f} per CPU s)",
            flush=True,
        )
    print()
    print(
        f"student {student.name}, {args.steps} steps x batch {args.batch}, {args.rows} rows, "
        f"best of {args.repeats}, torch threads {torch_threads()}"
    )
    print(f"{'':22} {'tokens/s':>10} {'tokens/CPU s':>13} {'whole call s':>13}")
    for name, runs in (("raw trl.SFTTrainer", raw), ("hardlabel train()", ours)):
        print(
            f"{name:22} {max(m.per_wall_second for m in runs):10,.0f} "
            f"{max(m.per_cpu_second for m in runs):13,.0f} {min(m.call_wall for m in runs):13.1f}"
        )
    wall_ratio = max(m.per_wall_second for m in ours) / max(m.per_wall_second for m in raw)
    cpu_ratio = max(m.per_cpu_second for m in ours) / max(m.per_cpu_second for m in raw)
    print(
        f"ratio hardlabel/raw (goal >= 0.97): {wall_ratio:.3f} per wall second, "
        f"{cpu_ratio:.3f} per CPU second"
    )


def torch_threads() -> int:
    import torch

    return int(torch.get_num_threads())


if __name__ == "__main__":
    main()
