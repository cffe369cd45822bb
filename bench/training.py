"""Training throughput: raw `trl.SFTTrainer` vs hardlabel's `trainer.sft.train`, same config and data.

Both runs use the SFTConfig that `build_sft_config` makes from one TrainingSpec, the same student
and the same rows. Tokens/s is TRL's own count of trained-on tokens (prompt and answer, no padding)
over the Trainer's train runtime; the wall clock of each whole call (loading, the mask pre-flight,
checkpoints, the final save) is printed too. Runs alternate and the best of --repeats is kept, so a
noisy shared machine penalises both sides alike. Goal: ratio >= 0.97.

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
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

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


def run_raw(student: Path, data: Path, spec: TrainingSpec, out: Path) -> tuple[float, float]:
    """Plain TRL: load the rows with `datasets`, the student by path, train. Returns (tokens/s, wall s)."""
    from datasets import Dataset
    from transformers import AutoTokenizer
    from trl.trainer.sft_trainer import SFTTrainer

    shutil.rmtree(out, ignore_errors=True)
    started = time.perf_counter()
    rows = Dataset.from_list([json.loads(line) for line in data.read_text().splitlines()])
    trainer = SFTTrainer(
        model=str(student),
        args=build_sft_config(spec, out),
        train_dataset=rows,
        processing_class=AutoTokenizer.from_pretrained(str(student)),
    )
    outcome = trainer.train()
    trainer.save_model(str(out / "final"))
    wall = time.perf_counter() - started
    return trainer._total_train_tokens / outcome.metrics["train_runtime"], wall


def run_hardlabel(student: Path, data: Path, spec: TrainingSpec, out: Path) -> tuple[float, float]:
    shutil.rmtree(out, ignore_errors=True)
    started = time.perf_counter()
    result = train(dataset_path=data, student=student, output_dir=out, spec=spec)
    wall = time.perf_counter() - started
    return result.tokens_per_second, wall


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

    raw: list[tuple[float, float]] = []
    ours: list[tuple[float, float]] = []
    for repeat in range(args.repeats):
        raw.append(run_raw(student, data, spec, work / "raw"))
        ours.append(run_hardlabel(student, data, spec, work / "hardlabel"))
        print(
            f"repeat {repeat + 1}: raw {raw[-1][0]:,.0f} tok/s ({raw[-1][1]:.1f} s wall), "
            f"hardlabel {ours[-1][0]:,.0f} tok/s ({ours[-1][1]:.1f} s wall)",
            flush=True,
        )
    best_raw, best_ours = max(r[0] for r in raw), max(o[0] for o in ours)
    print()
    print(
        f"student {student.name}, {args.steps} steps x batch {args.batch}, {args.rows} rows, "
        f"best of {args.repeats}"
    )
    print(f"raw trl.SFTTrainer     {best_raw:10,.0f} tokens/s   wall {min(r[1] for r in raw):6.1f} s")
    print(f"hardlabel train()      {best_ours:10,.0f} tokens/s   wall {min(o[1] for o in ours):6.1f} s")
    print(f"ratio (goal >= 0.97)   {best_ours / best_raw:10.3f}")


if __name__ == "__main__":
    main()
