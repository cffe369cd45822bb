"""`hardlabel generate`: end to end on the tiny model, and one-line errors (exit 2) for bad recipes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from service.cli import main

ROOT = Path(__file__).resolve().parents[2]


def test_generate_writes_samples_with_provenance(tiny_model_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "nested" / "samples.jsonl"
    command = [
        sys.executable,
        "-c",
        "from service.cli import main; main()",
        "generate",
        str(ROOT / "examples" / "arithmetic.yaml"),
        *("--teacher", str(tiny_model_dir), "--out", str(out), "--limit", "5", "--chunk-size", "2"),
        *("--kv-cache-bytes", str(256 << 20), "--max-model-len", "512", "--dtype", "float32"),
    ]
    env = {**os.environ, "TMPDIR": str(ROOT / ".tmp"), "VLLM_ENABLE_V1_MULTIPROCESSING": "0"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = out.read_text().splitlines()
    assert len(lines) == 5
    samples = [json.loads(line) for line in lines]
    assert [s["item_index"] for s in samples] == [0, 1, 2, 3, 4]
    first = samples[0]
    assert first["stage"] == "answer"
    assert first["question"] == "What is 17+21?"
    assert first["inputs"] == {"a": 17, "b": 21, "reference": "38"}
    provenance = first["provenance"]
    assert provenance["teacher_model"] == str(tiny_model_dir)
    assert provenance["sampling"]["temperature"] == 0.0
    for key in (
        "template_sha256",
        "seed",
        "prompt_tokens",
        "completion_tokens",
        "finish_reason",
        "latency_seconds",
    ):
        assert key in provenance
    assert provenance["completion_tokens"] > 0
    summary = done.stdout.strip().splitlines()[-1]
    assert summary.startswith("wrote 5 samples (")
    assert "for 5 items" in summary
    assert "items/s" in summary
    assert "tokens/s" in summary


def write(folder: Path, text: str) -> Path:
    path = folder / "recipe.yaml"
    path.write_text(text)
    return path


GOOD_STAGE = """
stages:
  - name: answer
    messages:
      - role: user
        content: "What is {{ a }}?"
"""


@pytest.mark.parametrize(
    ("recipe", "expected"),
    [
        (
            "name: x\nseeds: {values: {a: [1]}}" + GOOD_STAGE.replace("user", "robot"),
            "stages[0].messages[0].role",
        ),
        ("name: x\nseeds: {values: {a: [1]}}\nstagez: []\n" + GOOD_STAGE, "stagez: unknown key"),
        (
            "name: x\nseeds: {values: {b: [1]}}" + GOOD_STAGE,
            "stages[0].messages[0], line 1: undefined variable 'a'",
        ),
        (
            "name: x\nseeds: {values: {a: [1]}}" + GOOD_STAGE.replace("{{ a }}", "{{ a.__class__ }}"),
            "refused: access to attribute '__class__'",
        ),
        ("name: x\nseeds: {path: missing.jsonl}" + GOOD_STAGE, "seeds.path: file not found"),
        ("name: [unclosed", "invalid YAML"),
    ],
)
def test_bad_recipes_exit_2_with_one_line(tmp_path: Path, recipe: str, expected: str) -> None:
    path = write(tmp_path, recipe)
    result = CliRunner().invoke(main, ["generate", str(path), "--teacher", "unused"])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert expected in lines[0]
    assert "Traceback" not in result.output


def test_missing_recipe_and_missing_base_url(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["generate", str(tmp_path / "nope.yaml"), "--teacher", "m"])
    assert result.exit_code == 2
    assert result.stderr.strip() == f"error: recipe file not found: {tmp_path / 'nope.yaml'}"
    path = write(tmp_path, "name: x\nseeds: {values: {a: [1]}}" + GOOD_STAGE)
    result = CliRunner().invoke(main, ["generate", str(path), "--teacher", "m", "--engine", "openai"])
    assert result.exit_code == 2
    assert result.stderr.strip() == "error: --base-url is required with --engine openai"


def test_a_missing_teacher_folder_is_one_line(tmp_path: Path) -> None:
    path = write(tmp_path, "name: x\nseeds: {values: {a: [1]}}" + GOOD_STAGE)
    result = CliRunner().invoke(
        main,
        ["generate", str(path), "--teacher", str(tmp_path / "no-model"), "--out", str(tmp_path / "o.jsonl")],
    )
    assert result.exit_code == 2
    assert result.stderr.strip() == f"error: teacher model folder not found: {tmp_path / 'no-model'}"
