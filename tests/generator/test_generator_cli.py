"""`hardlabel generate`: end to end on the tiny model, and one-line errors (exit 2) for bad recipes."""

from __future__ import annotations

import json
import os
import re
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
    env = {
        **os.environ,
        "TMPDIR": str(ROOT / ".tmp"),
        "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
        "HARDLABEL_HOME": str(tmp_path / "home"),
    }
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
    (summary,) = done.stdout.strip().splitlines()  # the engine's log lines are not on stdout
    assert summary.startswith("wrote 5 samples (")
    assert "for 5 items" in summary
    assert "tokens/s" in summary
    # The bar's last rate and the summary's are one number (generation time, not engine start/stop).
    rate = re.search(r": ([\d.]+) items/s", summary)
    assert rate, summary
    assert f"{rate[1]} items/s" in done.stderr
    terminal = done.stderr + done.stdout
    assert " INFO " not in terminal
    assert "WARNING" not in terminal
    (log,) = (tmp_path / "home" / "logs").glob("generate-*.log")
    assert "INFO" in log.read_text(), "vLLM's logs went to the engine log"
    assert not list((tmp_path / "home" / "logs").glob("*.json"))


def test_an_engine_that_fails_to_start_shows_its_log_and_where_it_is(tmp_path: Path) -> None:
    model = tmp_path / "not-a-real-architecture"
    model.mkdir()
    (model / "config.json").write_text(
        json.dumps({"model_type": "no_such_model", "architectures": ["NoSuch"]})
    )
    (model / "model.safetensors").write_bytes(b"")
    (model / "tokenizer.json").write_text("{}")
    (model / "chat_template.jinja").write_text("{{ messages }}")
    command = [
        sys.executable,
        "-c",
        "from service.cli import main; main()",
        "generate",
        str(ROOT / "examples" / "arithmetic.yaml"),
        *("--teacher", str(model), "--out", str(tmp_path / "o.jsonl"), "--limit", "2"),
    ]
    env = {**os.environ, "TMPDIR": str(ROOT / ".tmp"), "HARDLABEL_HOME": str(tmp_path / "home")}
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert done.returncode == 2, done.stderr[-3000:]
    last = done.stderr.strip().splitlines()[-1]
    (log,) = (tmp_path / "home" / "logs").glob("generate-*.log")
    assert last.startswith(f"error: cannot start teacher {model}: ")
    assert last.endswith(f"(engine log: {log})")
    assert "Traceback" not in last


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


@pytest.mark.parametrize("relative", [False, True])
def test_a_missing_teacher_folder_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, relative: bool
) -> None:
    path = write(tmp_path, "name: x\nseeds: {values: {a: [1]}}" + GOOD_STAGE)
    monkeypatch.chdir(tmp_path)
    # A relative path with two slashes cannot be a hub id: it is a folder that is not there
    # (huggingface_hub would say "Repo id must be in the form 'repo_name' or 'namespace/repo_name'").
    teacher = "models/smollm2/v2" if relative else str(tmp_path / "no-model")
    result = CliRunner().invoke(
        main, ["generate", str(path), "--teacher", teacher, "--out", str(tmp_path / "o.jsonl")]
    )
    assert result.exit_code == 2
    assert result.stderr.strip() == f"error: --teacher: no such model folder: {teacher}"
