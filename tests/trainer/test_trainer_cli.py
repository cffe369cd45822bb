"""`hardlabel tiny-model` and `hardlabel train` end to end, and their one-line errors (exit 2)."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from service.cli import main


def test_tiny_model_command_builds_a_model_and_prints_its_size(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "a.txt").write_text("What is 2+2? 4\n" * 20)
    out = tmp_path / "tiny"
    args = ["tiny-model", str(out), "--layers", "1", "--hidden", "32", "--heads", "2", "--vocab", "300"]
    result = CliRunner().invoke(main, [*args, "--corpus", str(corpus)])
    assert result.exit_code == 0, result.output
    assert "parameters" in result.stdout
    assert (out / "model.safetensors").exists()

    again = CliRunner().invoke(main, args)
    assert again.exit_code == 2
    assert "error: " in again.stderr
    assert "--force" in again.stderr
    assert CliRunner().invoke(main, [*args, "--force"]).exit_code == 0


def test_tiny_model_command_refuses_bad_shapes(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["tiny-model", str(tmp_path / "x"), "--hidden", "100", "--heads", "3"])
    assert result.exit_code == 2
    assert result.stderr.startswith("error: hidden (100) must be a multiple of heads (3)")
    assert "Traceback" not in result.output
    assert not (tmp_path / "x").exists()


def test_train_command_trains_and_prints_a_summary(
    addition_jsonl: Path, tiny_model_dir: Path, tmp_path: Path
) -> None:
    config = tmp_path / "sft.yaml"
    config.write_text("learning_rate: 3e-3\nlr_scheduler_type: constant\n")
    out = tmp_path / "run"
    args = ["train", "--dataset", str(addition_jsonl), "--student", str(tiny_model_dir), "--output", str(out)]
    result = CliRunner().invoke(
        main, [*args, "--config", str(config), "--max-steps", "4", "--batch-size", "16", "--max-length", "64"]
    )
    assert result.exit_code == 0, result.output
    assert "mask ok" in result.stdout
    assert "trained 4 steps" in result.stdout
    assert str(out / "final") in result.stdout
    assert (out / "final" / "README.md").exists()
    assert '"learning_rate": 0.003' in (out / "final" / "hardlabel_training.json").read_text()


def test_train_command_reports_bad_input_in_one_line(
    addition_jsonl: Path, tiny_model_dir: Path, tmp_path: Path
) -> None:
    student = ["--student", str(tiny_model_dir)]
    bad_config = tmp_path / "bad.yaml"
    bad_config.write_text("learnig_rate: 0.1\n")
    cases = {
        "dataset not found": ["--dataset", str(tmp_path / "missing.jsonl"), *student],
        "give --student PATH_OR_ID or --from-scratch": ["--dataset", str(addition_jsonl)],
        "--lr: Input should be greater than 0": ["--dataset", str(addition_jsonl), *student, "--lr", "-1"],
        "unknown SFTConfig key(s): learnig_rate": [
            "--dataset",
            str(addition_jsonl),
            *student,
            "--config",
            str(bad_config),
        ],
        "cannot load the tokenizer of student": [
            "--dataset",
            str(addition_jsonl),
            "--student",
            str(tmp_path),
        ],
        "from_scratch: hidden (30) must be a multiple of heads (4)": [
            "--dataset",
            str(addition_jsonl),
            "--from-scratch",
            "--hidden",
            "30",
        ],
    }
    for message, args in cases.items():
        result = CliRunner().invoke(main, ["train", *args, "--output", str(tmp_path / "out")])
        assert result.exit_code == 2, (message, result.output)
        assert result.stderr.startswith("error: "), (message, result.stderr)
        assert message in result.stderr, (message, result.stderr)
        assert result.stderr.count("\n") == 1, "one line"
        assert "Traceback" not in result.output
