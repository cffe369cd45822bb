"""Mask pre-flight: prove, before step 1, that the loss covers the answers and nothing else.

A few rows go through TRL's own dataset preparation (`SFTTrainer._prepare_dataset`: chat template,
completion mask, labels, truncation and, when enabled, packing) and TRL's own collator, exactly as
training will see them. The resulting labels are then checked against the rows' text: every
answer is trained in full, no prompt text is trained, every row trains at least one token, and
packing keeps the same trained tokens. A silently wrong mask (a chat template that renders the
answer inside the prompt, drops it, or a `max_length` that cuts it) stops here with a precise
message instead of training for hours on the wrong tokens.
"""

from __future__ import annotations

import copy
import re
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trainer.data import quiet_datasets

if TYPE_CHECKING:
    from datasets import Dataset
    from trl.trainer.sft_config import SFTConfig

IGNORE = -100
# Prompt texts shorter than this are not searched for in the trained text ("a", "2", "?" occur anywhere).
MIN_PROMPT_TEXT = 4
# Tag-like template markup (`<think>`, `</s>`, `<|eot_id|>`) that is not text anybody wrote.
_MARKUP = re.compile(r"</?\|?[\w.|-]{1,40}\|?>")


class MaskError(ValueError):
    """The loss mask would not be what training needs; the message says which row and why."""


@dataclass(frozen=True)
class RowMask:
    """How one row is split between ignored (prompt) and trained (answer) tokens."""

    index: int
    tokens: int
    ignored_tokens: int
    trained_tokens: int
    trained_text: str


@dataclass(frozen=True)
class MaskReport:
    """What the pre-flight saw; `warnings` are worth showing but do not stop training."""

    rows: list[RowMask]
    packing: bool
    packed_sequences: int
    stop_token_trained: bool
    warnings: list[str] = field(default_factory=list)

    def summary(self) -> str:
        trained = sum(row.trained_tokens for row in self.rows)
        total = sum(row.tokens for row in self.rows)
        packed = f", {self.packed_sequences} packed sequence(s)" if self.packing else ""
        return f"mask ok: {len(self.rows)} row(s), {trained}/{total} tokens trained (answers only){packed}"


class _TrainerView:
    """The attributes `SFTTrainer._prepare_dataset` reads from the trainer (trl is pinned to 1.16.0)."""

    def __init__(self, tokenizer: Any, chat_template: str | None, completion_only_loss: bool) -> None:
        self._tokenizer = tokenizer
        self.chat_template = chat_template
        self.completion_only_loss = completion_only_loss


class _ArgsView:
    """The SFTConfig with a few values replaced, without re-running TrainingArguments' set-up."""

    def __init__(self, base: Any, **replaced: Any) -> None:
        self._base = base
        self._replaced = replaced

    def __getattr__(self, name: str) -> Any:
        if name in self._replaced:
            return self._replaced[name]
        return getattr(self._base, name)


def check_completion_mask(
    tokenizer: Any, dataset: Dataset, sft_config: SFTConfig, n_rows: int = 4
) -> MaskReport:
    """Tokenize the first `n_rows` rows the way TRL will and prove the mask.

    Args:
        tokenizer: the student's tokenizer (its chat template is what TRL will use).
        dataset: conversational prompt–completion rows (untokenized).
        sft_config: the run's configuration (max_length, packing, loss options, chat_template_path).
        n_rows: rows to check; packing is checked over the same rows packed together.

    Raises:
        MaskError: a row whose answer is not trained, whose prompt is trained, or with no trained token.
    """
    from trl.chat_template_utils import get_training_chat_template, has_generation_markers

    if len(dataset) == 0:
        raise MaskError("the dataset has no rows")
    if sft_config.completion_only_loss is False:
        raise MaskError("completion_only_loss=False trains on the prompts too; leave it unset or true")
    tokenizer = _with_configured_template(tokenizer, sft_config)
    if not tokenizer.chat_template:
        raise MaskError("the student's tokenizer has no chat template: it cannot render chat rows")
    chat_template = None
    if sft_config.assistant_only_loss and not has_generation_markers(tokenizer.chat_template):
        chat_template = get_training_chat_template(tokenizer)
    view = _TrainerView(tokenizer, chat_template, completion_only_loss=True)
    args = _ArgsView(sft_config, shuffle_dataset=False, dataset_num_proc=None)
    # Unpacked, TRL truncates each row to max_length; "wrapped" and "bfd_split" packing keep every
    # token instead (a long row continues in the next pack), so the rows are checked whole then.
    keeps_all = bool(sft_config.packing) and sft_config.packing_strategy in {"wrapped", "bfd_split"}
    row_args = _ArgsView(args, max_length=None) if keeps_all else args

    rows = dataset.select(range(min(n_rows, len(dataset)))).select_columns(["prompt", "completion"])
    numbered = rows.add_column("preflight_row", list(range(len(rows))))
    with quiet_datasets():
        try:
            prepared = _trl_prepare(view, numbered, tokenizer, row_args, packing=False)
        except MaskError:
            raise
        except Exception as exc:  # a template error surfaces as TemplateError/ValueError/TypeError...
            raise MaskError(f"the chat template cannot render the rows: {_first_line(exc)}") from exc

    by_row = {example["preflight_row"]: example for example in prepared}
    stop_ids = _stop_token_ids(tokenizer, sft_config)
    warnings: list[str] = []
    masks = []
    for index, row in enumerate(rows):
        example = by_row.get(index)
        if example is None:
            raise MaskError(_why_nothing_trained(index, row, tokenizer, sft_config))
        cut_at = (
            row_args.max_length
            if row_args.max_length and len(example["input_ids"]) >= row_args.max_length
            else None
        )
        masks.append(_check_row(index, row, example["input_ids"], example["labels"], tokenizer, cut_at))
        if not _prompt_is_prefix(row, tokenizer, chat_template):
            warnings.append(
                f"row {index}: the chat template renders the prompt differently when the answer follows; "
                "the model trains on a context that differs from inference"
            )
    stop_token_trained = bool(stop_ids) and all(
        any(
            token in stop_ids
            for token, label in zip(by_row[i]["input_ids"], by_row[i]["labels"], strict=True)
            if label != IGNORE
        )
        for i in range(len(rows))
    )
    if not stop_token_trained:
        warnings.append(
            "the end-of-turn token is not trained in every row: the student may not learn to stop its answer"
        )

    packed_sequences = 0
    if sft_config.packing:
        packed_sequences = _check_packing(view, rows, tokenizer, sft_config, args, prepared)
    return MaskReport(masks, bool(sft_config.packing), packed_sequences, stop_token_trained, warnings)


def _check_row(
    index: int,
    row: Mapping[str, Any],
    input_ids: Sequence[int],
    labels: Sequence[int],
    tokenizer: Any,
    cut_at: int | None,
) -> RowMask:
    if len(labels) != len(input_ids) or any(
        label not in (IGNORE, token) for token, label in zip(input_ids, labels, strict=True)
    ):
        raise MaskError(f"row {index}: labels are not the input tokens or {IGNORE}")
    spans = list(_trained_spans(input_ids, labels))
    trained = sum(len(span) for span in spans)
    if trained == 0:
        raise MaskError(f"row {index}: no token is trained")
    trained_text = "".join(tokenizer.decode(span, skip_special_tokens=False) for span in spans)
    answer = "\n".join(message["content"] for message in row["completion"])
    for message in row["completion"]:
        content = message["content"].strip()
        if content and content not in trained_text and cut_at:
            raise MaskError(
                f"row {index}: max_length={cut_at} cuts the answer {_clip(content)!r} "
                f"(trained text: {_clip(trained_text)!r}); raise max_length"
            )
        if content and content not in trained_text:
            raise MaskError(
                f"row {index}: the answer {_clip(content)!r} is not trained "
                f"(trained text: {_clip(trained_text)!r}); "
                "the chat template must render the assistant turn after the prompt"
            )
    for message in row["prompt"]:
        content = message["content"].strip()
        if len(content) >= MIN_PROMPT_TEXT and content in trained_text and content not in answer:
            raise MaskError(
                f"row {index}: prompt text ({message['role']}: {_clip(content)!r}) is trained as part of "
                "the answer; "
                "the chat template must render the prompt the same way with and without the answer"
            )
    # Text the rows never wrote can be trained too: a template's own default system prompt (SmolLM2,
    # Qwen) rendered after the answer is in no message, so only what is left besides the answers and
    # the template's markup (special tokens, whitespace) shows it.
    leftover = trained_text
    for message in row["completion"]:
        leftover = leftover.replace(message["content"].strip(), "", 1)
    for special in sorted(getattr(tokenizer, "all_special_tokens", []), key=len, reverse=True):
        leftover = leftover.replace(special, "")
    leftover = _MARKUP.sub("", leftover).strip()
    if len(leftover) >= MIN_PROMPT_TEXT and not cut_at:
        raise MaskError(
            f"row {index}: text that is not the answer is trained ({_clip(leftover)!r}); "
            "the chat template must end the rendered conversation with the assistant's answer"
        )
    return RowMask(index, len(input_ids), len(input_ids) - trained, trained, trained_text)


def _check_packing(
    view: _TrainerView, rows: Dataset, tokenizer: Any, sft_config: Any, args: _ArgsView, unpacked: Dataset
) -> int:
    """Pack the same rows and run TRL's collator; the trained tokens must be those of the rows."""
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    with quiet_datasets():
        packed = _trl_prepare(view, rows, tokenizer, args, packing=True)
    padding_free = bool(sft_config.padding_free) or sft_config.packing_strategy in {"bfd", "bfd_split"}
    pad = sft_config.pad_token or tokenizer.pad_token or tokenizer.eos_token
    collator = DataCollatorForLanguageModeling(
        pad_token_id=tokenizer.convert_tokens_to_ids(pad),
        padding_free=padding_free,
        pad_to_multiple_of=sft_config.pad_to_multiple_of,
    )
    batch = collator([dict(example) for example in packed])
    input_ids, labels = batch["input_ids"], batch["labels"]
    keep = (labels != IGNORE) & (labels != input_ids)
    if bool(keep.any()):
        raise MaskError("packing: collated labels are not the input tokens or -100")
    after = Counter(int(t) for t in input_ids[labels != IGNORE].tolist())
    before: Counter[int] = Counter()
    for example in unpacked:
        before.update(
            t for t, label in zip(example["input_ids"], example["labels"], strict=True) if label != IGNORE
        )
    if after != before:
        lost, extra = before - after, after - before
        raise MaskError(
            f"packing ({sft_config.packing_strategy}) changes the trained tokens: "
            f"{sum(lost.values())} answer token(s) no longer trained "
            f"({_clip(tokenizer.decode(list(lost.elements())))!r}), {sum(extra.values())} extra trained "
            f"({_clip(tokenizer.decode(list(extra.elements())))!r})"
        )
    return len(packed)


def _trl_prepare(
    view: _TrainerView, rows: Dataset, tokenizer: Any, args: _ArgsView, packing: bool
) -> Dataset:
    """TRL's own preparation: chat template, completion mask, labels, truncation, packing."""
    from trl.trainer.sft_trainer import SFTTrainer

    prepare: Any = SFTTrainer._prepare_dataset
    prepared: Dataset = prepare(view, rows, tokenizer, args, packing, None, "preflight")
    return prepared


def _why_nothing_trained(index: int, row: Mapping[str, Any], tokenizer: Any, sft_config: Any) -> str:
    """TRL silently drops rows with no trained token; say why this one has none."""
    full = tokenizer.apply_chat_template(row["prompt"] + row["completion"], tokenize=False)
    answer = row["completion"][-1]["content"].strip()
    if answer and answer not in full:
        return (
            f"row {index}: the chat template drops the answer {_clip(answer)!r} (rendered: {_clip(full)!r})"
        )
    prompt_ids = tokenizer.apply_chat_template(row["prompt"], add_generation_prompt=True, tokenize=True)
    prompt_len = len(prompt_ids["input_ids"] if isinstance(prompt_ids, Mapping) else prompt_ids)
    if sft_config.max_length is not None and prompt_len >= sft_config.max_length:
        return (
            f"row {index}: the prompt alone is {prompt_len} tokens, so max_length={sft_config.max_length} "
            "cuts off the whole answer"
        )
    return f"row {index}: no answer token is trained (rendered: {_clip(full)!r})"


def _prompt_is_prefix(row: Mapping[str, Any], tokenizer: Any, chat_template: str | None) -> bool:
    prompt = tokenizer.apply_chat_template(
        row["prompt"], add_generation_prompt=True, tokenize=False, chat_template=chat_template
    )
    full = tokenizer.apply_chat_template(
        row["prompt"] + row["completion"], tokenize=False, chat_template=chat_template
    )
    return bool(full.startswith(prompt))


def _trained_spans(input_ids: Sequence[int], labels: Sequence[int]) -> Iterator[list[int]]:
    span: list[int] = []
    for token, label in zip(input_ids, labels, strict=True):
        if label == IGNORE:
            if span:
                yield span
                span = []
        else:
            span.append(token)
    if span:
        yield span


def _stop_token_ids(tokenizer: Any, sft_config: Any) -> set[int]:
    token = sft_config.eos_token or tokenizer.eos_token
    return {tokenizer.convert_tokens_to_ids(token)} if token else set()


def _with_configured_template(tokenizer: Any, sft_config: Any) -> Any:
    """Apply `chat_template_path` the way SFTTrainer will (a .jinja file, or another tokenizer's template)."""
    path = sft_config.chat_template_path
    if not path:
        return tokenizer
    tokenizer = copy.deepcopy(tokenizer)
    if Path(path).is_file() and str(path).endswith((".jinja", ".j2")):
        tokenizer.chat_template = Path(path).read_text(encoding="utf-8")
    else:
        from transformers import AutoTokenizer

        tokenizer.chat_template = AutoTokenizer.from_pretrained(path).chat_template
    return tokenizer


def _clip(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
