"""Soft-label distillation for a same-tokenizer teacher and student: sparse forward KL, blended with CE.

An export with `soft_labels=true` gives every row the teacher's top-k at each completion token
(`completion_token_ids`, `teacher_topk_ids`, `teacher_topk_logprobs`, aligned with the teacher's
own completion tokens). Per completion token t the loss is

    alpha * KL(p_t || q_t) + (1 - alpha) * CE(y_t)

where p_t is the teacher's top-k renormalised (softmax of its k log-probabilities), q_t the
student's full-vocabulary distribution read at those k ids, and CE TRL's own hard-label
cross-entropy on the completion. KL(p||q) = sum_i p_i (log p_i - log q_i): the student is pulled
toward the teacher's whole top-k, not only its sampled token.

Alignment: the student's trained tokens (TRL's completion labels) are matched against the teacher's
completion tokens from the start; the KL covers the longest common prefix (the rest of the row, e.g.
an answer a reviewer edited, trains on CE alone). Same-tokenizer only: the pre-flight
(`check_soft_label_alignment`) refuses a run where the ids do not line up, which is what a
different tokenizer does.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from datasets import Dataset

SOFT_LABEL_COLUMNS = ("completion_token_ids", "teacher_topk_ids", "teacher_topk_logprobs")
IGNORE = -100
# Below this share of trained completion tokens matching the teacher's, the tokenizers differ.
MIN_ALIGNED_SHARE = 0.9


class SoftLabelError(ValueError):
    """Soft-label distillation cannot run on this data or student; the message says why."""


@dataclass(frozen=True)
class AlignmentReport:
    """How the student's trained tokens line up with the teacher's (pre-flight rows)."""

    rows: int
    trained_tokens: int  # trained tokens that have a teacher position (at most the teacher's count)
    aligned_tokens: int

    @property
    def share(self) -> float:
        return self.aligned_tokens / self.trained_tokens if self.trained_tokens else 0.0

    def summary(self) -> str:
        return (
            f"soft labels ok: {self.aligned_tokens}/{self.trained_tokens} trained tokens of "
            f"{self.rows} row(s) align with the teacher's"
        )


def aligned_positions(labels: Sequence[int], teacher_ids: Sequence[int] | None) -> list[tuple[int, int]]:
    """(label position, teacher position) pairs: the trained tokens that equal the teacher's, from the start.

    The trained tokens are the labels that are not IGNORE, in order; they are compared with the
    teacher's completion tokens one by one and matched up to the first difference.
    """
    if not teacher_ids:
        return []
    pairs: list[tuple[int, int]] = []
    trained = (position for position, label in enumerate(labels) if label != IGNORE)
    for teacher_position, position in enumerate(trained):
        if teacher_position >= len(teacher_ids) or labels[position] != teacher_ids[teacher_position]:
            break
        pairs.append((position, teacher_position))
    return pairs


def teacher_targets(
    examples: Sequence[Mapping[str, Any]], sequence_length: int, k: int | None = None
) -> dict[str, torch.Tensor]:
    """Dense (batch, length, k) teacher tensors aligned with the examples' padded labels.

    `teacher_mask` is 1 where a label position has the teacher's top-k. A position the teacher
    padded (-1 id, -inf logprob) gets id 0 and logprob -inf: zero teacher probability.
    """
    import torch

    if k is None:
        k = max(
            (len(ex["teacher_topk_ids"][0]) for ex in examples if ex.get("teacher_topk_ids")),
            default=1,
        )
    ids = torch.zeros((len(examples), sequence_length, k), dtype=torch.long)
    logprobs = torch.full((len(examples), sequence_length, k), float("-inf"))
    mask = torch.zeros((len(examples), sequence_length), dtype=torch.bool)
    for row, example in enumerate(examples):
        topk_ids, topk_logprobs = example.get("teacher_topk_ids"), example.get("teacher_topk_logprobs")
        if not topk_ids or not topk_logprobs:
            continue
        for position, teacher_position in aligned_positions(
            example["labels"], example["completion_token_ids"]
        ):
            if position >= sequence_length:
                break
            row_ids = topk_ids[teacher_position][:k]
            row_logprobs = topk_logprobs[teacher_position][:k]
            width = len(row_ids)
            ids[row, position, :width] = torch.tensor([max(i, 0) for i in row_ids], dtype=torch.long)
            logprobs[row, position, :width] = torch.tensor(
                [lp if i >= 0 else float("-inf") for i, lp in zip(row_ids, row_logprobs, strict=True)]
            )
            mask[row, position] = True
    return {"teacher_topk_ids": ids, "teacher_topk_logprobs": logprobs, "teacher_mask": mask}


def sparse_forward_kl(
    logits: torch.Tensor,
    topk_ids: torch.Tensor,
    topk_logprobs: torch.Tensor,
    mask: torch.Tensor,
    *,
    reduction: str = "mean",
) -> torch.Tensor:
    """KL(teacher top-k renormalised || student) over the masked label positions: "mean" or "sum".

    Tensors are aligned with the labels (position t holds the teacher's distribution of token t),
    so, like the causal LM loss, logits at t-1 are scored against the targets at t.
    """
    import torch

    student = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    ids, teacher_logprobs, keep = topk_ids[:, 1:], topk_logprobs[:, 1:], mask[:, 1:]
    if not bool(keep.any()):
        return logits.sum() * 0.0
    student_topk = student.gather(-1, ids)[keep]  # (positions, k)
    teacher = torch.log_softmax(teacher_logprobs[keep], dim=-1)
    p = teacher.exp()
    # 0 * (-inf - x) is NaN: a padded slot (probability 0) contributes nothing.
    terms = torch.where(p > 0, p * (teacher - student_topk), torch.zeros_like(p)).sum(-1)
    return terms.sum() if reduction == "sum" else terms.mean()


class SoftLabelCollator:
    """TRL's collator plus the teacher tensors (`teacher_topk_ids`/`_logprobs`/`teacher_mask`)."""

    def __init__(self, base: Any) -> None:
        self._base = base

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        plain = [{key: v for key, v in ex.items() if key not in SOFT_LABEL_COLUMNS} for ex in examples]
        batch: dict[str, Any] = self._base(plain)
        batch.update(teacher_targets(examples, int(batch["labels"].shape[1])))
        return batch


def soft_label_trainer_class() -> type:
    """An SFTTrainer whose loss is alpha * sparse KL + (1 - alpha) * TRL's CE (set `soft_label_alpha`)."""
    from trl.trainer.sft_trainer import SFTTrainer

    class SoftLabelSFTTrainer(SFTTrainer):  # type: ignore[misc]
        soft_label_alpha: float = 0.5

        def __init__(self, *args: Any, soft_label_alpha: float, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.soft_label_alpha = soft_label_alpha
            self.data_collator = SoftLabelCollator(self.data_collator)

        def _set_signature_columns_if_needed(self) -> None:
            super()._set_signature_columns_if_needed()  # type: ignore[no-untyped-call]
            if self._signature_columns is not None:
                self._signature_columns = [*self._signature_columns, *SOFT_LABEL_COLUMNS]

        def compute_loss(
            self,
            model: Any,
            inputs: dict[str, Any],
            return_outputs: bool = False,
            num_items_in_batch: Any = None,
        ) -> Any:
            import torch

            # TRL's own loss runs a fused LM head that never builds the logits (its outputs for
            # `return_outputs` come from a second, no-grad forward): the KL needs them with gradients,
            # so this forward builds them once and computes both terms from them.
            mode = "train" if model.training else "eval"
            topk_ids = inputs.pop("teacher_topk_ids")
            topk_logprobs = inputs.pop("teacher_topk_logprobs")
            mask = inputs.pop("teacher_mask")
            labels = inputs.pop("labels")
            outputs = model(**inputs, use_cache=False)
            logits = outputs.logits
            shifted = labels[:, 1:]
            ce_sum = torch.nn.functional.cross_entropy(
                logits[:, :-1].float().reshape(-1, logits.shape[-1]),
                shifted.reshape(-1),
                ignore_index=IGNORE,
                reduction="sum",
            )
            # Both terms are sums over label tokens over the same count (TRL's normalisation).
            count = (shifted != IGNORE).sum() if num_items_in_batch is None else num_items_in_batch
            denominator = torch.as_tensor(count, device=logits.device).clamp(min=1)
            ce = ce_sum / denominator
            kl = sparse_forward_kl(logits, topk_ids, topk_logprobs, mask, reduction="sum") / denominator
            alpha = self.soft_label_alpha
            loss = alpha * kl + (1 - alpha) * ce
            self._metrics[mode]["soft_label_kl"].append(float(kl.detach()))
            self._metrics[mode]["hard_label_ce"].append(float(ce.detach()))
            if mode == "train" and "attention_mask" in inputs:
                self._total_train_tokens += int(inputs["attention_mask"].sum())
            self._metrics[mode]["num_tokens"] = [self._total_train_tokens]
            return (loss, outputs) if return_outputs else loss

    return SoftLabelSFTTrainer


def check_soft_label_alignment(
    tokenizer: Any, prepared: Dataset, *, teacher_tokenizer: Any = None
) -> AlignmentReport:
    """Prove, before step 1, that the teacher's soft labels fit this student's tokens.

    Args:
        tokenizer: the student's tokenizer.
        prepared: rows after TRL's preparation (`input_ids`, `labels`) that kept the soft-label columns.
        teacher_tokenizer: the teacher's tokenizer, when known: its vocabulary must equal the student's.

    Raises:
        SoftLabelError: the rows carry no soft labels, or the tokenizers differ (a different vocabulary,
            teacher ids outside the student's vocabulary, or too few trained tokens matching).
    """
    missing = [name for name in SOFT_LABEL_COLUMNS if name not in prepared.column_names]
    if missing:
        raise SoftLabelError(
            f"soft-label distillation needs the columns {', '.join(SOFT_LABEL_COLUMNS)} (export the dataset "
            f"with soft_labels=true); missing: {', '.join(missing)}"
        )
    if teacher_tokenizer is not None and teacher_tokenizer.get_vocab() != tokenizer.get_vocab():
        raise SoftLabelError(
            "the teacher's and the student's tokenizers differ: soft-label distillation needs one tokenizer "
            "(train with hard labels, or pick a student of the teacher's family)"
        )
    vocabulary = len(tokenizer)
    trained = aligned = rows = 0
    for example in prepared:
        teacher_ids = example["completion_token_ids"]
        if not teacher_ids:
            continue
        rows += 1
        top = max((i for ids in example["teacher_topk_ids"] for i in ids), default=0)
        if max(max(teacher_ids), top) >= vocabulary:
            raise SoftLabelError(
                f"the teacher's token id {max(max(teacher_ids), top)} is outside the student's vocabulary "
                f"({vocabulary}): the tokenizers differ, and soft-label distillation needs one tokenizer"
            )
        # Trained tokens past the teacher's end (a template's newline after the end-of-turn token)
        # have no teacher position: they are not counted against the alignment.
        trained += min(len(teacher_ids), sum(1 for label in example["labels"] if label != IGNORE))
        aligned += len(aligned_positions(example["labels"], teacher_ids))
    report = AlignmentReport(rows=rows, trained_tokens=trained, aligned_tokens=aligned)
    if rows == 0:
        raise SoftLabelError("no row of the pre-flight has soft labels (were they asked for at generation?)")
    if report.share < MIN_ALIGNED_SHARE:
        raise SoftLabelError(
            f"only {report.aligned_tokens} of {report.trained_tokens} trained tokens match the teacher's "
            f"({report.share:.0%}): the teacher's and the student's tokenizers differ (or the chat templates "
            "end the answer differently); soft-label distillation needs one tokenizer"
        )
    return report


def soft_label_preflight(
    tokenizer: Any, dataset: Dataset, sft_config: Any, *, teacher_tokenizer: Any = None, n_rows: int = 16
) -> AlignmentReport:
    """The mask pre-flight's soft-label part: the first `n_rows` rows through TRL's own preparation,
    then `check_soft_label_alignment` on what training will see. Packing is refused (a packed
    sequence mixes rows, and the teacher's positions are per row)."""
    from trainer.data import quiet_datasets
    from trainer.preflight import _ArgsView, _TrainerView, _trl_prepare, _with_configured_template

    if sft_config.packing:
        raise SoftLabelError("soft-label distillation does not support packing: set packing to false")
    missing = [name for name in SOFT_LABEL_COLUMNS if name not in dataset.column_names]
    if missing:
        raise SoftLabelError(
            f"soft-label distillation needs the columns {', '.join(SOFT_LABEL_COLUMNS)} (export the dataset "
            f"with soft_labels=true); missing: {', '.join(missing)}"
        )
    tokenizer = _with_configured_template(tokenizer, sft_config)
    view = _TrainerView(tokenizer, None, completion_only_loss=True)
    args = _ArgsView(sft_config, shuffle_dataset=False, dataset_num_proc=None)
    rows = dataset.select(range(min(n_rows, len(dataset)))).select_columns(
        ["prompt", "completion", *SOFT_LABEL_COLUMNS]
    )
    with quiet_datasets():
        prepared = _trl_prepare(view, rows, tokenizer, args, packing=False)
    return check_soft_label_alignment(tokenizer, prepared, teacher_tokenizer=teacher_tokenizer)
