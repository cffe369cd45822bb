"""Tiny local models: a random-init Llama plus a byte-level BPE tokenizer trained on local text.

There is no model hub on many machines (and none in CI). A tiny model is a real model folder that
vLLM, transformers and TRL all load, so every path of hardlabel can run for real offline. Students
can start from such a model too (training from scratch).
"""

from __future__ import annotations

import json
import shutil
import sysconfig
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

BOS = "<|bos|>"
PAD = "<|pad|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
SPECIAL_TOKENS = [PAD, BOS, IM_START, IM_END]
TINY_MODEL_FILE = "hardlabel_tiny_model.json"
# Byte-level BPE starts from the 256 byte symbols plus the special tokens.
MIN_VOCAB = 256 + len(SPECIAL_TOKENS)

# ChatML with TRL's {% generation %} markers around the assistant content, so
# `assistant_only_loss` and the mask pre-flight can see which tokens are the answer.
CHAT_TEMPLATE = (
    "{{- bos_token }}"
    "{%- for message in messages %}"
    "{%- if message['role'] == 'assistant' %}"
    "{{- '<|im_start|>assistant\\n' }}"
    "{%- generation %}{{- message['content'] + '<|im_end|>' }}{%- endgeneration %}"
    "{{- '\\n' }}"
    "{%- else %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)

# Always part of the corpus so the tokenizer covers chat roles, digits and arithmetic.
BASE_TEXT = (
    "system user assistant question answer What is the sum of and ? = + - * / ( ) . , : ; "
    "0 1 2 3 4 5 6 7 8 9 10 11 12 100 Answer with a number only. The answer is "
    'Write a question about Rate the answer from 1 to 10. Score: JSON {"score": 7} true false null'
)


@dataclass(frozen=True)
class TinyModelSpec:
    """Shape of a tiny Llama. Defaults: 4 layers, hidden 128 (~1.1M parameters with vocab 512)."""

    layers: int = 4
    hidden: int = 128
    heads: int = 4
    intermediate: int | None = None
    vocab: int = 512
    max_position: int = 512
    split_digits: bool = True
    seed: int = 0
    # A tokenizer (or model) folder to reuse, e.g. the teacher's: its vocabulary, special tokens and
    # chat template; `vocab` and `split_digits` then do not apply (no tokenizer is trained).
    tokenizer: str | None = None

    def __post_init__(self) -> None:
        problems = []
        if self.tokenizer is not None and not str(self.tokenizer).strip():
            problems.append("tokenizer must be a tokenizer or model folder (got an empty string)")
        if not 1 <= self.layers <= 128:
            problems.append(f"layers must be 1..128 (got {self.layers})")
        if not 8 <= self.hidden <= 16384:
            problems.append(f"hidden must be 8..16384 (got {self.hidden})")
        if self.heads < 1:
            problems.append(f"heads must be at least 1 (got {self.heads})")
        elif self.hidden % self.heads or (self.hidden // self.heads) % 2:
            # Rotary position embeddings rotate pairs of dimensions: each head needs an even size.
            problems.append(
                f"hidden ({self.hidden}) must be a multiple of heads ({self.heads}) with an even head size"
            )
        if self.intermediate is not None and self.intermediate < 1:
            problems.append(f"intermediate must be at least 1 (got {self.intermediate})")
        if not MIN_VOCAB <= self.vocab <= 1_000_000:
            problems.append(
                f"vocab must be {MIN_VOCAB}..1000000: 256 bytes plus the special tokens (got {self.vocab})"
            )
        if not 16 <= self.max_position <= 1_048_576:
            problems.append(f"max_position must be 16..1048576 (got {self.max_position})")
        if self.seed < 0:
            problems.append(f"seed must be >= 0 (got {self.seed})")
        if problems:
            raise ValueError("; ".join(problems))

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> TinyModelSpec:
        """Build from a plain mapping (API/JSON), refusing unknown keys."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(
                f"unknown tiny-model key(s): {', '.join(unknown)} (known: {', '.join(sorted(known))})"
            )
        return cls(**values)


def default_corpus_files(limit: int = 200) -> list[Path]:
    """Text that exists on every Python install: the stdlib's own modules (sorted: deterministic)."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    return sorted(stdlib.glob("*.py"))[:limit]


def iter_corpus(files: Sequence[Path]) -> Iterator[str]:
    """Yield the files that decode as UTF-8; skip the rest (some stdlib files are Latin-1)."""
    yield BASE_TEXT
    for path in files:
        try:
            yield path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue


def train_tokenizer(texts: Iterable[str], spec: TinyModelSpec) -> object:
    """A byte-level BPE tokenizer (digits split one per token when asked), wrapped for transformers."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False)
    if spec.split_digits:
        tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
            [pre_tokenizers.Digits(individual_digits=True), byte_level]
        )
    else:
        tokenizer.pre_tokenizer = byte_level
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=spec.vocab,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    wrapped = PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=tokenizer,
        bos_token=BOS,
        eos_token=IM_END,  # generation must stop at the end of the assistant's turn
        pad_token=PAD,
        unk_token=None,
    )
    wrapped.chat_template = CHAT_TEMPLATE
    return wrapped


class TokenizerError(ValueError):
    """The folder given as a from-scratch student's tokenizer holds no usable tokenizer."""


def load_reused_tokenizer(path: str | Path) -> Any:
    """A tokenizer to build a new model around (e.g. the teacher's), checked for what training needs.

    It must load with `AutoTokenizer` from a local folder, have an end-of-sequence token (generation
    stops there) and a chat template (the rows are chat prompts). A missing pad token becomes EOS.
    A template without TRL's `{% generation %}` markers is fine: the rows are prompt–completion and
    TRL masks the prompt by itself.

    Raises:
        TokenizerError: not a folder, no tokenizer in it, or no EOS token / chat template.
    """
    from transformers import AutoTokenizer

    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise TokenizerError(f"no such tokenizer folder: {path}")
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(folder))
    except Exception as exc:  # OSError, ValueError, KeyError... whatever the folder's files provoke
        text = str(exc).strip().splitlines()
        raise TokenizerError(
            f"{path} holds no tokenizer that transformers can load: {text[0] if text else type(exc).__name__}"
        ) from exc
    if tokenizer.eos_token_id is None:
        raise TokenizerError(f"the tokenizer in {path} has no end-of-sequence token")
    if not tokenizer.chat_template:
        raise TokenizerError(f"the tokenizer in {path} has no chat template (the training rows are chats)")
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def build_tiny_model(
    out_dir: Path | str,
    spec: TinyModelSpec | None = None,
    corpus_files: Sequence[Path] | None = None,
    extra_texts: Iterable[str] = (),
) -> Path:
    """Write a loadable model folder (config, safetensors weights, tokenizer, chat template).

    The folder appears complete or not at all (built beside it, then renamed), so an interrupted
    build never leaves a half-written model that a later run would take as ready.

    Args:
        out_dir: folder to create (or overwrite).
        spec: model shape; defaults to TinyModelSpec().
        corpus_files: local text files to train the tokenizer on; defaults to the Python stdlib.
        extra_texts: more tokenizer text, e.g. the training rows of a student built from scratch.

    Raises:
        TokenizerError: `spec.tokenizer` names a folder without a usable tokenizer.
    """
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    spec = spec or TinyModelSpec()
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    if spec.tokenizer is not None:
        tokenizer = load_reused_tokenizer(spec.tokenizer)
    else:
        files = list(corpus_files) if corpus_files else default_corpus_files()
        tokenizer = train_tokenizer(_chain(iter_corpus(files), extra_texts), spec)
    vocab_size = len(tokenizer)  # type: ignore[arg-type]

    torch.manual_seed(spec.seed)
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=spec.hidden,
        intermediate_size=spec.intermediate or spec.hidden * 4,
        num_hidden_layers=spec.layers,
        num_attention_heads=spec.heads,
        num_key_value_heads=spec.heads,
        max_position_embeddings=spec.max_position,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,  # type: ignore[attr-defined]
        eos_token_id=tokenizer.eos_token_id,  # type: ignore[attr-defined]
        pad_token_id=tokenizer.pad_token_id,  # type: ignore[attr-defined]
        dtype="float32",
    )
    model = LlamaForCausalLM(config)  # type: ignore[no-untyped-call]
    model.generation_config = GenerationConfig(  # type: ignore[no-untyped-call]
        bos_token_id=config.bos_token_id,
        eos_token_id=config.eos_token_id,
        pad_token_id=config.pad_token_id,
    )
    parameters = sum(p.numel() for p in model.parameters())
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        model.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)  # type: ignore[attr-defined]
        (staging / TINY_MODEL_FILE).write_text(
            json.dumps({**asdict(spec), "parameters": parameters}, indent=2)
        )
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out


def read_tiny_model_info(model_dir: Path | str) -> dict[str, Any]:
    """The shape and parameter count written next to a tiny model."""
    info: dict[str, Any] = json.loads((Path(model_dir) / TINY_MODEL_FILE).read_text())
    return info


def _chain(first: Iterable[str], second: Iterable[str]) -> Iterator[str]:
    yield from first
    yield from second
