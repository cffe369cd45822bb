"""What the pipeline yields: samples with full provenance, grouped in chunks of items."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class GeneratedSample:
    """One teacher output of one stage for one seed item.

    Identity is (item_index, stage, sample_index); within an item and stage, `sample_index` is the
    position in a deterministic enumeration (branch order, then completion order for n > 1).

    Attributes:
        item_index: stable index of the seed row this sample descends from.
        stage: name of the recipe stage that produced it.
        sample_index: position within (item_index, stage).
        parent_sample_index: sample_index of the previous stage's sample it continues (None for
            the first stage).
        question: what a student is asked (the stage's `question` template, or the last user message).
        answer: the parsed answer as text (JSON text for a JSON stage); None when parsing failed.
        raw_text: the teacher's completion, exactly as generated.
        parsed: the parsed value (str, list item, dict, or judge score); None when parsing failed.
        parse_ok: whether the output parser accepted the completion.
        parse_error: why it did not (kept with the raw text, never dropped).
        score: a judge stage's score of this sample, when a judge stage targets this stage.
        inputs: the seed row's variables (e.g. a reference answer) plus earlier stages' outputs.
        provenance: teacher model/revision, stage, template hash, sampling params, seed, token
            counts, finish reason, latency (and `soft_labels`: k, tokens, bytes, when kept).
        soft_labels: with a stage's `sampling.logprobs: k`, the teacher's top-k at every generated
            token of the completion, packed by `generator.soft_labels.pack` (4 + 6k bytes a token).
    """

    item_index: int
    stage: str
    sample_index: int
    parent_sample_index: int | None
    question: str
    answer: str | None
    raw_text: str
    parsed: Any
    parse_ok: bool
    parse_error: str | None
    score: float | None = None
    inputs: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)
    soft_labels: bytes | None = None


@dataclass
class ChunkResult:
    """The samples of a contiguous run of items, all stages done; safe to persist as one unit."""

    item_indices: list[int]
    samples: list[GeneratedSample]
    prompt_tokens: int
    completion_tokens: int
    elapsed_seconds: float
