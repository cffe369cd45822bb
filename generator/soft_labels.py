"""Sparse soft labels: the teacher's top-k log-probabilities at every generated token, packed compactly.

One sample's soft labels are one ``bytes`` value (stored as a ``bytea``, never a row per token):

```
header   8 bytes   b"SL", format version (uint8 = 1), k (uint8, 1..20), token count n (uint32)
ids      n × 4     the completion's token ids as the teacher generated them (uint32)
topk     n × k × 4 the top-k token ids at each position, most likely first (uint32)
logprobs n × k × 2 their log-probabilities (float16; -inf pads a position with fewer than k)
```

All little-endian: ``8 + n × (4 + 6k)`` bytes, i.e. ``4 + 6k`` per token (k=5: 34 bytes a token).
float16 keeps a log-probability to about 3 significant digits (±0.008 at -8), ample for a
distillation target, at half the size of float32. Token ids are the teacher's own ids: the
positions align with the teacher's completion tokens (the end-of-turn token included where the
teacher generated it), not with any re-tokenization of the answer text.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

MAX_TOP_LOGPROBS = 20
_MAGIC = b"SL"
_VERSION = 1
_HEADER = struct.Struct("<2sBBI")
HEADER_BYTES = _HEADER.size
# A position the teacher reported fewer than k alternatives for (a vocabulary smaller than k).
PAD_TOKEN_ID = 0xFFFFFFFF


class SoftLabelFormatError(ValueError):
    """Bytes that are not a packed soft-label blob of this format."""


@dataclass(frozen=True)
class SoftLabels:
    """The teacher's top-k at each completion token.

    Attributes:
        k: alternatives kept per position.
        token_ids: the completion's token ids (length n).
        topk_ids: n lists of k token ids, most likely first.
        topk_logprobs: n lists of k log-probabilities (<= 0), aligned with `topk_ids`.
    """

    k: int
    token_ids: list[int]
    topk_ids: list[list[int]]
    topk_logprobs: list[list[float]]

    def __post_init__(self) -> None:
        if not 1 <= self.k <= MAX_TOP_LOGPROBS:
            raise ValueError(f"k must be 1..{MAX_TOP_LOGPROBS}, got {self.k}")
        n = len(self.token_ids)
        if len(self.topk_ids) != n or len(self.topk_logprobs) != n:
            raise ValueError("token_ids, topk_ids and topk_logprobs must have one entry per token")
        for ids, logprobs in zip(self.topk_ids, self.topk_logprobs, strict=True):
            if len(ids) != self.k or len(logprobs) != self.k:
                raise ValueError(f"every position needs exactly k={self.k} ids and logprobs")

    def __len__(self) -> int:
        return len(self.token_ids)


def packed_size(tokens: int, k: int) -> int:
    """Bytes of one packed sample with `tokens` completion tokens and top-`k` alternatives."""
    return HEADER_BYTES + tokens * bytes_per_token(k)


def bytes_per_token(k: int) -> int:
    """Stored bytes per completion token: its id (4) plus k (id, float16 logprob) pairs (6 each)."""
    return 4 + 6 * k


def pack(labels: SoftLabels) -> bytes:
    """The compact bytes of `labels` (see the module docstring for the layout)."""
    n, k = len(labels.token_ids), labels.k
    flat_ids = [token for ids in labels.topk_ids for token in ids]
    flat_logprobs = [_half(value) for values in labels.topk_logprobs for value in values]
    try:
        return b"".join(
            (
                _HEADER.pack(_MAGIC, _VERSION, k, n),
                struct.pack(f"<{n}I", *labels.token_ids),
                struct.pack(f"<{n * k}I", *flat_ids),
                struct.pack(f"<{n * k}e", *flat_logprobs),
            )
        )
    except struct.error as exc:
        raise ValueError(f"token ids must be 0..2**32-1: {exc}") from exc


def unpack(blob: bytes | bytearray | memoryview) -> SoftLabels:
    """The SoftLabels packed in `blob`.

    Raises:
        SoftLabelFormatError: not this format, or a truncated/oversized blob.
    """
    data = bytes(blob)
    n, k = _checked_header(data)
    offset = HEADER_BYTES
    token_ids = list(struct.unpack_from(f"<{n}I", data, offset))
    offset += 4 * n
    flat_ids = struct.unpack_from(f"<{n * k}I", data, offset)
    offset += 4 * n * k
    flat_logprobs = struct.unpack_from(f"<{n * k}e", data, offset)
    return SoftLabels(
        k=k,
        token_ids=token_ids,
        topk_ids=[list(flat_ids[i * k : (i + 1) * k]) for i in range(n)],
        topk_logprobs=[list(flat_logprobs[i * k : (i + 1) * k]) for i in range(n)],
    )


def unpack_arrays(blob: bytes) -> tuple[Any, Any, Any]:
    """`blob` as numpy arrays: token ids (n,) uint32, top-k ids (n, k) uint32, logprobs (n, k) float16.

    The fast path for bulk readers (exports); numpy is imported here, not by the generator.

    Raises:
        SoftLabelFormatError: as `unpack`.
    """
    import numpy as np

    n, k = _checked_header(blob)
    ids = np.frombuffer(blob, dtype="<u4", count=n, offset=HEADER_BYTES)
    topk = np.frombuffer(blob, dtype="<u4", count=n * k, offset=HEADER_BYTES + 4 * n).reshape(n, k)
    logprobs = np.frombuffer(blob, dtype="<f2", count=n * k, offset=HEADER_BYTES + 4 * n * (1 + k))
    return ids, topk, logprobs.reshape(n, k)


def _checked_header(data: bytes) -> tuple[int, int]:
    if len(data) < HEADER_BYTES:
        raise SoftLabelFormatError(f"soft labels: {len(data)} bytes is shorter than the header")
    magic, version, k, n = _HEADER.unpack_from(data)
    if magic != _MAGIC or version != _VERSION:
        raise SoftLabelFormatError(f"soft labels: unknown format {magic!r} version {version}")
    if not 1 <= k <= MAX_TOP_LOGPROBS or len(data) != packed_size(n, k):
        raise SoftLabelFormatError(
            f"soft labels: {len(data)} bytes, but k={k} and {n} tokens need {packed_size(n, k)}"
        )
    return int(n), int(k)


def from_position_logprobs(
    token_ids: Sequence[int], positions: Sequence[Mapping[int, Any]], k: int
) -> SoftLabels:
    """Soft labels from an engine's per-position ``{token id: logprob}`` maps (vLLM's shape).

    A value may be a float or an object with a ``logprob`` attribute (vLLM's ``Logprob``). vLLM adds
    the sampled token to a position's map when it is not among the top k: the k most likely are
    kept, so every position has exactly k (padded with PAD_TOKEN_ID / -inf if the map is smaller).
    """
    if len(positions) != len(token_ids):
        raise ValueError(f"{len(positions)} logprob positions for {len(token_ids)} completion tokens")
    topk_ids: list[list[int]] = []
    topk_logprobs: list[list[float]] = []
    for position in positions:
        ranked = sorted(
            ((int(token), _logprob_value(value)) for token, value in position.items()),
            key=lambda pair: (-pair[1], pair[0]),
        )[:k]
        ranked += [(PAD_TOKEN_ID, -math.inf)] * (k - len(ranked))
        topk_ids.append([token for token, _ in ranked])
        topk_logprobs.append([value for _, value in ranked])
    return SoftLabels(k=k, token_ids=list(token_ids), topk_ids=topk_ids, topk_logprobs=topk_logprobs)


def _logprob_value(value: Any) -> float:
    raw = value if isinstance(value, int | float) else value.logprob
    number = float(raw)
    # NaN (a server's null) sorts last and is stored as -inf: "no probability known".
    return -math.inf if math.isnan(number) else number


def _half(value: float) -> float:
    # float16 overflows past ±65504; a log-probability that low is "impossible" anyway.
    return -math.inf if value < -65504.0 else min(value, 0.0)
