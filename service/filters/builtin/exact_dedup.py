"""exact_dedup: samples whose normalised text equals an earlier sample's fail; the first passes."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from service.filters.normalization import normalize_text
from service.filters.records import SampleRecord, Verdict, field_text
from service.filters.specs import ExactDedupParams


class ExactDuplicates:
    """Remembers a 16-byte digest per distinct text (not the text), so a million samples fit easily."""

    def __init__(self, params: ExactDedupParams) -> None:
        self.params = params
        self.first_by_digest: dict[bytes, int] = {}

    def _digest(self, sample: SampleRecord) -> bytes:
        n = self.params.normalize
        text = normalize_text(
            field_text(sample, self.params.field),
            case=n.case,
            whitespace=n.whitespace,
            punctuation=n.punctuation,
        )
        return hashlib.blake2b(text.encode("utf-8"), digest_size=16).digest()

    def evaluate(self, samples: Sequence[SampleRecord]) -> list[Verdict]:
        verdicts = []
        for sample in samples:
            first = self.first_by_digest.setdefault(self._digest(sample), sample["id"])
            if first == sample["id"]:
                verdicts.append(Verdict(sample["id"], True, "first of its text"))
            else:
                verdicts.append(Verdict(sample["id"], False, f"duplicate of sample {first}"))
        return verdicts

    def prime(self, samples: Sequence[SampleRecord]) -> None:
        self.evaluate(samples)
