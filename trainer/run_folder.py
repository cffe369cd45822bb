"""The layout of a training run's output folder: one place for its names (no torch imported here).

The trainer writes it; the service's train worker reads it from a process that must not load the
ML stack (it watches metrics and checkpoints while a child process trains), so this module imports
nothing heavy.
"""

from __future__ import annotations

import re
from pathlib import Path

# Trainer checkpoints, `checkpoint-<step>`; complete once trainer_state.json (written last) exists.
CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
CHECKPOINT_COMPLETE_FILE = "trainer_state.json"
FINAL_DIR = "final"  # the model the run hands over (the best checkpoint's weights when scored)
ADAPTER_DIR = "adapter"  # LoRA: the adapters, beside the merged model in FINAL_DIR
INIT_DIR = "init"  # the from-scratch student, built once so a resumed run finds the same tokenizer
METRICS_FILE = "metrics.jsonl"  # one JSON line per logged step: loss, learning rate, tokens/s, ...
# The spec as trained (unset schedule fields chosen from the data), written before step 1.
RESOLVED_SPEC_FILE = "resolved_spec.json"
LINEAGE_FILE = "hardlabel_training.json"  # in FINAL_DIR: data digest, spec, base model, best step
# In-training scoring: the best weights so far and the scores that chose them.
BEST_DIR = "best"
BEST_WEIGHTS = "weights.safetensors"
BEST_STATE = "state.json"


def list_checkpoints(output_dir: Path) -> list[Path]:
    """Complete checkpoints, oldest first (one cut by a crash lacks trainer_state.json)."""
    found = []
    for path in output_dir.iterdir() if output_dir.is_dir() else []:
        match = CHECKPOINT.match(path.name)
        if match and path.is_dir() and (path / CHECKPOINT_COMPLETE_FILE).exists():
            found.append((int(match.group(1)), path))
    return [path for _, path in sorted(found)]
