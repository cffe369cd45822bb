"""Whether a model name can be served or trained, checked at submission without the ML stack.

The API process must not import transformers, vLLM or torch, so these checks read the files a
model folder is made of as JSON and text: `config.json`, the tokenizer files, the chat template
(`chat_template.jinja`, `chat_template.json` or `tokenizer_config.json`'s `chat_template`) and the
weight files. They catch the mistakes a person makes when typing a path; loading the weights is
still the worker's proof.

Path or hub id: a name is a local path when it is absolute, starts with "." or "~", ends with
".gguf", exists on disk (relative to the API process's folder), or cannot be a hub id (which is
"name" or "namespace/name", e.g. "HuggingFaceTB/SmolLM2-135M-Instruct"; "models/smollm2/v2" is a
path). A hub id is left to the worker, where a hub may be reachable.
"""

from __future__ import annotations

import importlib.util
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

GGUF_SUFFIX = ".gguf"
# Files that hold a tokenizer vLLM and transformers can load (fast, SentencePiece, BPE, WordPiece, tiktoken).
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer.model",
    "spiece.model",
    "vocab.json",
    "vocab.txt",
    "tekken.json",
)
WEIGHT_PATTERNS = ("*.safetensors", "*.bin", "*.pt", "*.pth", "*.gguf", "*.safetensors.index.json")
# The form of a hub repository id (huggingface_hub's rule, without its length limit).
HUB_ID = re.compile(r"^[\w.-]+(/[\w.-]+)?$")
# Engine options under which the folder's own tokenizer or weights are not what gets used.
TOKENIZER_OVERRIDES = ("tokenizer",)
DUMMY_LOAD_FORMATS = ("dummy",)


def is_local_path(model: str) -> bool:
    """Whether `model` names a path on disk rather than a hub id (see the module docstring)."""
    if Path(model).is_absolute() or model.startswith((".", "~")) or model.lower().endswith(GGUF_SUFFIX):
        return True
    if not HUB_ID.match(model) or "--" in model or ".." in model:
        return True
    try:
        return Path(model).expanduser().exists()
    except (OSError, ValueError):  # a NUL byte, a name too long for the file system
        return False


def gguf_reader_installed() -> bool:
    """Whether the `gguf` package (which transformers and vLLM read GGUF files with) is installed."""
    return importlib.util.find_spec("gguf") is not None


def teacher_model_problem(model: str, engine_kwargs: Mapping[str, Any] | None = None) -> str | None:
    """Why vLLM cannot serve `model` for chat stages, or None (also for hub ids).

    A teacher needs a model folder with a tokenizer and a chat template (every recipe stage sends
    chat messages), or a GGUF file when the `gguf` package is installed.
    """
    try:
        return _teacher_problem(model, engine_kwargs)
    except (OSError, ValueError) as exc:
        return f"not a readable path: {model[:200]!r} ({type(exc).__name__}: {exc})"


def student_model_problem(model: str) -> str | None:
    """Why `model` cannot be fine-tuned as a chat student, or None (also for hub ids).

    Training loads a transformers folder (weights, tokenizer) and renders its rows with the
    folder's chat template; a GGUF file must be converted to such a folder first.
    """
    try:
        return _student_problem(model)
    except (OSError, ValueError) as exc:
        return f"not a readable path: {model[:200]!r} ({type(exc).__name__}: {exc})"


def _teacher_problem(model: str, engine_kwargs: Mapping[str, Any] | None) -> str | None:
    if not is_local_path(model):
        return None
    path = Path(model).expanduser()
    if path.is_file() and path.name.lower().endswith(GGUF_SUFFIX):
        return None if gguf_reader_installed() else _gguf_missing(model)
    kwargs = engine_kwargs or {}
    problem = _folder_problem(model, path, weights=kwargs.get("load_format") not in DUMMY_LOAD_FORMATS)
    if problem is not None:
        return problem
    if any(kwargs.get(key) for key in TOKENIZER_OVERRIDES):
        return None  # the tokenizer (and its chat template) come from elsewhere
    return _tokenizer_problem(model, path)


def _student_problem(model: str) -> str | None:
    if not is_local_path(model):
        return None
    path = Path(model).expanduser()
    if path.is_file() and path.name.lower().endswith(GGUF_SUFFIX):
        if not gguf_reader_installed():
            return _gguf_missing(model)
        return (
            f"a GGUF file cannot be fine-tuned directly: {model}; convert it to a model folder first "
            "(trainer.pretrained.convert_gguf, as `hardlabel models pull` does)"
        )
    return _folder_problem(model, path, weights=True) or _tokenizer_problem(model, path)


def _gguf_missing(model: str) -> str:
    return f"reading a GGUF file needs the `gguf` package on the workers (pip install gguf): {model}"


def _folder_problem(model: str, path: Path, *, weights: bool) -> str | None:
    if not path.exists():
        return f"no such model folder: {model}"
    if not path.is_dir():
        return f"not a model folder (a file, not a folder with config.json): {model}"
    config_path = path / "config.json"
    if not config_path.is_file():
        ggufs = sorted(p.name for p in path.glob(f"*{GGUF_SUFFIX}"))
        if ggufs:
            return (
                f"not a model folder (no config.json): {model}; it holds GGUF file(s): "
                f"name the file itself, e.g. {path / ggufs[0]}"
            )
        return f"not a model folder (no config.json): {model}"
    config = _read_json(config_path)
    if not isinstance(config, dict):
        return f"not a model folder: {config_path} is not a JSON object"
    if not (config.get("model_type") or config.get("architectures")):
        return f"not a model folder: {config_path} names no model_type or architectures"
    if weights and not any(any(path.glob(pattern)) for pattern in WEIGHT_PATTERNS):
        return f"not a model folder (no weights: *.safetensors or *.bin): {model}"
    return None


def _tokenizer_problem(model: str, path: Path) -> str | None:
    tokenizer_config = _read_json(path / "tokenizer_config.json")
    if not any((path / name).is_file() for name in TOKENIZER_FILES) and not any(path.glob("*.tiktoken")):
        return f"the model folder has no tokenizer ({', '.join(TOKENIZER_FILES[:3])}, ...): {model}"
    if not has_chat_template(path, tokenizer_config):
        return (
            f"the model has no chat template (recipe stages and training rows are chat messages): {model}; "
            "add chat_template.jinja to the folder, or use an instruct/chat model"
        )
    return None


def has_chat_template(path: Path, tokenizer_config: Any = None) -> bool:
    """Whether the folder carries a chat template where transformers looks for one."""
    if (path / "chat_template.jinja").is_file() and (path / "chat_template.jinja").stat().st_size > 0:
        return True
    template_file = _read_json(path / "chat_template.json")
    if isinstance(template_file, dict) and template_file.get("chat_template"):
        return True
    if tokenizer_config is None:
        tokenizer_config = _read_json(path / "tokenizer_config.json")
    return isinstance(tokenizer_config, dict) and bool(tokenizer_config.get("chat_template"))


def _read_json(path: Path) -> Any:
    """The file's JSON value; None when it is missing or unreadable (callers say what that means)."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
