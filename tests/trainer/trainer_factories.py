"""Plain factories for trainer tests: synthetic 2-digit addition rows in prompt–completion form."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

ADDITION_SEED = 7


def addition_rows(count: int, seed: int = ADDITION_SEED) -> list[dict[str, Any]]:
    """Conversational prompt–completion rows: "What is a+b?" -> "c"."""
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


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path
