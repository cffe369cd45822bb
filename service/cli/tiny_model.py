"""`hardlabel tiny-model`: build a small random-init Llama with a BPE tokenizer trained on local text.

No model hub is needed: the folder loads in transformers, vLLM and TRL (tests, the demo, students
trained from scratch). The trainer library is imported when the command runs.
"""

from __future__ import annotations

from pathlib import Path

import click

from service.cli import CliError


@click.command("tiny-model")
@click.argument("out_dir", type=click.Path(path_type=Path, file_okay=False))
@click.option("--layers", type=int, default=4, show_default=True, help="Transformer layers.")
@click.option("--hidden", type=int, default=128, show_default=True, help="Hidden size.")
@click.option("--heads", type=int, default=4, show_default=True, help="Attention heads (hidden/heads even).")
@click.option("--intermediate", type=int, help="MLP size (default: 4 x hidden).")
@click.option("--vocab", type=int, default=512, show_default=True, help="BPE vocabulary size.")
@click.option("--max-position", type=int, default=512, show_default=True, help="Longest sequence.")
@click.option(
    "--split-digits/--no-split-digits",
    default=True,
    show_default=True,
    help="One token per digit (arithmetic tasks learn far faster).",
)
@click.option(
    "--corpus",
    "corpus",
    multiple=True,
    type=click.Path(path_type=Path, exists=True),
    help="Tokenizer text: a file or a folder (repeatable). Default: the Python standard library.",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Weight initialisation seed.")
@click.option("--force", is_flag=True, help="Replace OUT_DIR if it already holds files.")
def tiny_model_command(
    out_dir: Path,
    layers: int,
    hidden: int,
    heads: int,
    intermediate: int | None,
    vocab: int,
    max_position: int,
    split_digits: bool,
    corpus: tuple[Path, ...],
    seed: int,
    force: bool,
) -> None:
    """Build a tiny Llama model folder in OUT_DIR and print its parameter count."""
    from trainer.tiny_model import TinyModelSpec, build_tiny_model, read_tiny_model_info

    try:
        spec = TinyModelSpec(
            layers=layers,
            hidden=hidden,
            heads=heads,
            intermediate=intermediate,
            vocab=vocab,
            max_position=max_position,
            split_digits=split_digits,
            seed=seed,
        )
    except ValueError as exc:
        raise CliError(str(exc)) from exc
    if out_dir.exists() and any(out_dir.iterdir()) and not force:
        raise CliError(f"{out_dir} already holds files; pass --force to replace it")
    files = _corpus_files(corpus)
    if corpus and not files:
        raise CliError("--corpus: no readable files found")
    try:
        build_tiny_model(out_dir, spec, corpus_files=files or None)
    except OSError as exc:
        raise CliError(f"cannot write {out_dir}: {exc.strerror or exc}") from exc
    info = read_tiny_model_info(out_dir)
    click.echo(
        f"built {out_dir}: {spec.layers} layers, hidden {spec.hidden}, {spec.heads} heads, "
        f"vocab {spec.vocab} — {info['parameters']:,} parameters"
    )


def _corpus_files(paths: tuple[Path, ...]) -> list[Path]:
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files.extend(sorted(p for p in path.rglob("*") if p.is_file()))
        else:
            files.append(path)
    return files


commands: list[click.Command] = [tiny_model_command]
