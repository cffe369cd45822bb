"""Soft-label columns of an export: the teacher's top-k at every completion token, as Arrow lists.

Asked for with `soft_labels=true`, rows of the prompt_completion, messages and alpaca formats get:

- `completion_token_ids` (list<int32>): the answer's tokens as the teacher generated them (its
  end-of-turn token included where it generated one);
- `teacher_topk_ids` (list<list<int32>>): per completion token, the teacher's k most likely
  next tokens, most likely first (-1 pads a position where the teacher reported fewer than k);
- `teacher_topk_logprobs` (list<list<float32>>): their log-probabilities (stored as float16).

All three align position by position with `completion_token_ids`. They are null where the row has
none: a ground-truth row, a sample whose stage did not ask for `logprobs`, or a reviewed answer that
was edited (the teacher's distribution is of its own text, not of the edit).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from generator.soft_labels import unpack_arrays

SOFT_LABEL_SCHEMA = pa.schema(
    [
        ("completion_token_ids", pa.list_(pa.int32())),
        ("teacher_topk_ids", pa.list_(pa.list_(pa.int32()))),
        ("teacher_topk_logprobs", pa.list_(pa.list_(pa.float32()))),
    ]
)
# The column a source batch carries the stored bytes in (Postgres' `\x…` hex text of the bytea).
SOURCE_COLUMN = "soft_labels"


def soft_label_columns(hex_blobs: pa.Array) -> list[pa.Array]:
    """The SOFT_LABEL_SCHEMA columns of a batch from its hex bytea texts (a null stays null)."""
    n = len(hex_blobs)
    valid = np.zeros(n, dtype=bool)
    tokens_per_row = np.zeros(n, dtype=np.int64)
    ids: list[np.ndarray] = []
    topk_ids: list[np.ndarray] = []
    topk_logprobs: list[np.ndarray] = []
    k_per_position: list[np.ndarray] = []
    for row, text in enumerate(hex_blobs.to_pylist()):
        if text is None:
            continue
        token_ids, row_ids, row_logprobs = unpack_arrays(bytes.fromhex(text.removeprefix("\\x")))
        tokens, k = row_ids.shape
        valid[row] = True
        tokens_per_row[row] = tokens
        ids.append(token_ids)
        topk_ids.append(row_ids.reshape(-1))
        topk_logprobs.append(row_logprobs.reshape(-1))
        k_per_position.append(np.full(tokens, k, dtype=np.int64))
    outer = pa.array(_offsets(tokens_per_row))
    inner = pa.array(_offsets(_concat(k_per_position, np.int64)))
    mask = pa.array(~valid)
    flat_topk = pa.ListArray.from_arrays(inner, pa.array(_concat(topk_ids, np.int32)))
    flat_logprobs = pa.ListArray.from_arrays(inner, pa.array(_concat(topk_logprobs, np.float32)))
    return [
        pa.ListArray.from_arrays(outer, pa.array(_concat(ids, np.int32)), mask=mask),
        pa.ListArray.from_arrays(outer, flat_topk, mask=mask),
        pa.ListArray.from_arrays(outer, flat_logprobs, mask=mask),
    ]


def _offsets(lengths: np.ndarray) -> np.ndarray:
    offsets = np.zeros(len(lengths) + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    return offsets


def _concat(parts: list[np.ndarray], dtype: type) -> np.ndarray:
    return np.concatenate(parts).astype(dtype) if parts else np.zeros(0, dtype=dtype)
