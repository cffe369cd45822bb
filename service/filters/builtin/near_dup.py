"""near_dup: MinHash LSH (datasketch) near-duplicate detection over shingles of normalised text.

Samples are seen in the run's order; each is compared with the ones kept before it (and with the
rows of earlier dataset versions, loaded first). A sample whose estimated Jaccard similarity with
a kept text reaches the threshold fails, naming that text; otherwise it is kept for later samples.
LSH only proposes candidates: every candidate is confirmed with the MinHash Jaccard estimate.

The signatures are datasketch's `affine32` MinHash (its seeded permutations, the MurmurHash3
pre-mix, min over shingles) computed for a whole chunk at once with numpy — identical values to
`MinHash(seed=1, hashfunc=int).update_batch(shingle hashes)`, without a Python call per shingle.
The index is datasketch's `MinHashLSH`.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Sequence

import numpy as np
from datasketch import MinHash, MinHashLSH

from service.filters.normalization import normalize_text
from service.filters.records import SampleRecord, Verdict, field_text
from service.filters.specs import NearDupParams

# Signatures live in fixed-size numpy blocks (no per-sample Python object, no copy on growth).
_BLOCK_ROWS = 1 << 16
# Odd 64-bit multipliers of the shingle hash (fixed: verdicts do not depend on the process).
_MULTIPLIERS = np.random.default_rng(0x5EED).integers(1, 2**63, size=64, dtype=np.uint64) | np.uint64(1)
# Shingles permuted at once when computing signatures (bounds the temporary matrix to ~32 MiB).
_SHINGLES_PER_STEP = 1 << 16
_MINHASH_SEED = 1


def _items(norm: str, unit: str) -> np.ndarray:
    if unit == "word":
        return np.array([zlib.crc32(word.encode("utf-8")) for word in norm.split()], dtype=np.uint64)
    return np.frombuffer(norm.encode("utf-32-le"), dtype=np.uint32).astype(np.uint64)


def _gram_hashes(items: np.ndarray, k: int) -> np.ndarray:
    windows = np.lib.stride_tricks.sliding_window_view(items, k)
    mixed: np.ndarray = (windows * _MULTIPLIERS[:k]).sum(axis=1, dtype=np.uint64)  # wraps modulo 2^64
    high: np.ndarray = (mixed >> np.uint64(32)).astype(np.uint32)
    return high


def chunk_shingle_hashes(texts: Sequence[str], unit: str, size: int) -> tuple[np.ndarray, np.ndarray]:
    """The distinct k-gram shingle hashes of every text, as (owners, hashes) sorted by owner.

    Items are Unicode code points (unit "char") or crc32 of words (unit "word") of the normalised
    text; a k-gram's hash is a fixed-multiplier polynomial of its items modulo 2^64, high 32 bits.
    A text shorter than k items is one shingle; an empty text has none. Deterministic across
    processes.
    """
    norms = [normalize_text(text) for text in texts]
    per_text = [_items(norm, unit) if norm else np.empty(0, dtype=np.uint64) for norm in norms]
    lengths = np.array([len(items) for items in per_text], dtype=np.int64)
    owners_parts: list[np.ndarray] = []
    hash_parts: list[np.ndarray] = []
    long_texts = np.flatnonzero(lengths >= size)
    if len(long_texts):
        items = np.concatenate([per_text[i] for i in long_texts])
        owner_of_item = np.repeat(long_texts, lengths[long_texts])
        hashes = _gram_hashes(items, size)
        # A window is a shingle when it does not cross into the next text.
        valid = owner_of_item[: len(hashes)] == owner_of_item[size - 1 :]
        owners_parts.append(owner_of_item[: len(hashes)][valid])
        hash_parts.append(hashes[valid])
    for i in np.flatnonzero((lengths > 0) & (lengths < size)):
        owners_parts.append(np.array([i], dtype=np.int64))
        hash_parts.append(_gram_hashes(per_text[i], int(lengths[i])))
    if not owners_parts:
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.uint32)
    keys = np.sort(
        (np.concatenate(owners_parts).astype(np.uint64) << np.uint64(32))
        | np.concatenate(hash_parts).astype(np.uint64)
    )
    # Distinct keys by sort + neighbour comparison: numpy's hash-based np.unique is far slower here.
    keys = keys[np.concatenate(([True], keys[1:] != keys[:-1]))]
    return (keys >> np.uint64(32)).astype(np.int64), (keys & np.uint64(0xFFFFFFFF)).astype(np.uint32)


def _fmix32(values: np.ndarray) -> np.ndarray:
    """MurmurHash3's 32-bit finalizer (datasketch's pre-mix of the affine32 scheme)."""
    values = values ^ (values >> np.uint32(16))
    values = values * np.uint32(0x85EBCA6B)
    values = values ^ (values >> np.uint32(13))
    values = values * np.uint32(0xC2B2AE35)
    mixed: np.ndarray = values ^ (values >> np.uint32(16))
    return mixed


class _Signature:
    """What MinHashLSH reads of a MinHash: the hash values and the permutation scheme."""

    __slots__ = ("hashvalues",)
    scheme = "affine32"

    def __init__(self, hashvalues: np.ndarray) -> None:
        self.hashvalues = hashvalues

    def __len__(self) -> int:
        return len(self.hashvalues)


class NearDuplicates:
    """Args:
    params: the filter's parameters.
    references: (label, text) pairs that count as already kept, e.g. rows of earlier dataset
        versions labelled "dataset 'math' v2 row 17".
    """

    def __init__(self, params: NearDupParams, references: Iterable[tuple[str, str]] = ()) -> None:
        self.params = params
        self.lsh = MinHashLSH(threshold=params.threshold, num_perm=params.num_perm)
        permutations = MinHash(num_perm=params.num_perm, seed=_MINHASH_SEED).permutations
        self.a, self.b = (np.asarray(p, dtype=np.uint32) for p in permutations)
        self.blocks: list[np.ndarray] = []
        self.labels: list[str] = []
        batch: list[tuple[str, str]] = []
        for reference in references:
            batch.append(reference)
            if len(batch) == 2048:
                self._keep_all(batch)
                batch = []
        self._keep_all(batch)

    def _keep_all(self, references: list[tuple[str, str]]) -> None:
        signatures = self.signatures([text for _, text in references])
        for (label, _), signature in zip(references, signatures, strict=True):
            if signature is not None:
                self._keep(label, signature)

    def signatures(self, texts: Sequence[str]) -> list[np.ndarray | None]:
        """Each text's MinHash hash values (None for a text without shingles)."""
        owners, hashes = chunk_shingle_hashes(texts, self.params.shingle, self.params.shingle_size)
        out: list[np.ndarray | None] = [None] * len(texts)
        if not len(hashes):
            return out
        mixed = _fmix32(hashes)
        starts = np.flatnonzero(np.concatenate(([True], owners[1:] != owners[:-1])))
        ends = np.append(starts[1:], len(owners))
        group_start = 0
        while group_start < len(starts):
            # Whole texts, about _SHINGLES_PER_STEP shingles at a time.
            group_end = int(np.searchsorted(starts, starts[group_start] + _SHINGLES_PER_STEP, side="right"))
            group_end = max(group_end, group_start + 1)
            first, last = starts[group_start], ends[group_end - 1]
            permuted = mixed[first:last, None] * self.a[None, :] + self.b[None, :]  # wraps modulo 2^32
            # Per-text minima in a loop: np.minimum.reduceat along axis 0 is several times slower.
            for start, end in zip(starts[group_start:group_end], ends[group_start:group_end], strict=True):
                out[int(owners[start])] = permuted[start - first : end - first].min(axis=0)
            group_start = group_end
        return out

    def _keep(self, label: str, signature: np.ndarray) -> None:
        ordinal = len(self.labels)
        block, row = divmod(ordinal, _BLOCK_ROWS)
        if block == len(self.blocks):
            self.blocks.append(np.empty((_BLOCK_ROWS, self.params.num_perm), dtype=np.uint32))
        self.blocks[block][row] = signature
        self.labels.append(label)
        self.lsh.insert(ordinal, _Signature(signature), check_duplication=False)

    def _best_match(self, signature: np.ndarray) -> tuple[int, float] | None:
        best: tuple[int, float] | None = None
        for ordinal in self.lsh.query(_Signature(signature)):
            block, row = divmod(ordinal, _BLOCK_ROWS)
            jaccard = float(np.count_nonzero(self.blocks[block][row] == signature)) / len(signature)
            if best is None or jaccard > best[1] or (jaccard == best[1] and ordinal < best[0]):
                best = (ordinal, jaccard)
        return best

    def evaluate(self, samples: Sequence[SampleRecord]) -> list[Verdict]:
        threshold = self.params.threshold
        signatures = self.signatures([field_text(sample, self.params.field) for sample in samples])
        verdicts = []
        for sample, signature in zip(samples, signatures, strict=True):
            sid = sample["id"]
            if signature is None:
                verdicts.append(Verdict(sid, True, "empty text, not compared"))
                continue
            best = self._best_match(signature)
            if best is not None and best[1] >= threshold:
                label = self.labels[best[0]]
                verdicts.append(
                    Verdict(sid, False, f"near-duplicate of {label} (Jaccard {best[1]:.2f})", best[1])
                )
                continue
            self._keep(f"sample {sid}", signature)
            closest = f"; closest Jaccard {best[1]:.2f}" if best is not None else ""
            reason = f"no near-duplicate at Jaccard ≥ {threshold:.2f}{closest}"
            verdicts.append(Verdict(sid, True, reason, best[1] if best is not None else None))
        return verdicts

    def prime(self, samples: Sequence[SampleRecord]) -> None:
        self.evaluate(samples)

    @property
    def kept(self) -> int:
        return len(self.labels)
