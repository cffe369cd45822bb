"""near_dup: MinHash LSH (datasketch) near-duplicate detection over shingles of normalised text.

Samples are seen in the run's order; each is compared with the ones kept before it (and with the
rows of earlier dataset versions, loaded first). A sample whose estimated Jaccard similarity with
a kept text reaches the threshold fails, naming that text; otherwise it is kept for later samples.
LSH only proposes candidates: every candidate is confirmed with the MinHash Jaccard estimate.
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


def shingles(text: str, unit: str, size: int) -> set[bytes]:
    """The k-gram shingles of normalised `text` (a text shorter than k is one shingle)."""
    norm = normalize_text(text)
    if not norm:
        return set()
    if unit == "word":
        words = norm.split()
        if len(words) <= size:
            return {" ".join(words).encode()}
        return {" ".join(words[i : i + size]).encode() for i in range(len(words) - size + 1)}
    if len(norm) <= size:
        return {norm.encode()}
    return {norm[i : i + size].encode() for i in range(len(norm) - size + 1)}


class NearDuplicates:
    """Args:
    params: the filter's parameters.
    references: (label, text) pairs that count as already kept, e.g. rows of earlier dataset
        versions labelled "dataset 'math' v2 row 17".
    """

    def __init__(self, params: NearDupParams, references: Iterable[tuple[str, str]] = ()) -> None:
        self.params = params
        self.lsh = MinHashLSH(threshold=params.threshold, num_perm=params.num_perm)
        # crc32 is a fast, process-independent 32-bit hash; MinHash's affine32 scheme premixes it.
        self.template = MinHash(num_perm=params.num_perm, seed=1, hashfunc=zlib.crc32)
        self.blocks: list[np.ndarray] = []
        self.labels: list[str] = []
        for label, text in references:
            signature = self.signature(text)
            if signature is not None:
                self._keep(label, signature)

    def signature(self, text: str) -> MinHash | None:
        grams = shingles(text, self.params.shingle, self.params.shingle_size)
        if not grams:
            return None
        minhash = self.template.copy()
        minhash.update_batch(grams)
        return minhash

    def _keep(self, label: str, minhash: MinHash) -> None:
        ordinal = len(self.labels)
        block, row = divmod(ordinal, _BLOCK_ROWS)
        if block == len(self.blocks):
            self.blocks.append(np.empty((_BLOCK_ROWS, self.params.num_perm), dtype=minhash.hashvalues.dtype))
        self.blocks[block][row] = minhash.hashvalues
        self.labels.append(label)
        self.lsh.insert(ordinal, minhash, check_duplication=False)

    def _best_match(self, minhash: MinHash) -> tuple[int, float] | None:
        best: tuple[int, float] | None = None
        for ordinal in self.lsh.query(minhash):
            block, row = divmod(ordinal, _BLOCK_ROWS)
            jaccard = float(np.count_nonzero(self.blocks[block][row] == minhash.hashvalues)) / len(minhash)
            if best is None or jaccard > best[1] or (jaccard == best[1] and ordinal < best[0]):
                best = (ordinal, jaccard)
        return best

    def evaluate(self, samples: Sequence[SampleRecord]) -> list[Verdict]:
        threshold = self.params.threshold
        verdicts = []
        for sample in samples:
            sid = sample["id"]
            minhash = self.signature(field_text(sample, self.params.field))
            if minhash is None:
                verdicts.append(Verdict(sid, True, "empty text, not compared"))
                continue
            best = self._best_match(minhash)
            if best is not None and best[1] >= threshold:
                label = self.labels[best[0]]
                verdicts.append(
                    Verdict(sid, False, f"near-duplicate of {label} (Jaccard {best[1]:.2f})", best[1])
                )
                continue
            self._keep(f"sample {sid}", minhash)
            closest = f"; closest Jaccard {best[1]:.2f}" if best is not None else ""
            reason = f"no near-duplicate at Jaccard ≥ {threshold:.2f}{closest}"
            verdicts.append(Verdict(sid, True, reason, best[1] if best is not None else None))
        return verdicts

    def prime(self, samples: Sequence[SampleRecord]) -> None:
        self.evaluate(samples)

    @property
    def kept(self) -> int:
        return len(self.labels)
