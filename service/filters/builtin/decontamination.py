"""decontamination: samples sharing word n-grams with evaluation items fail, naming the item.

Items and samples are normalised (case, punctuation, whitespace) and split into words. An item's
n-grams go into one index (n-gram hash → item); an item shorter than n words is indexed whole, as a
k-gram of its own length k, and sample k-grams are looked up for every such k.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from service.filters.builtin.base import PerSampleFilter
from service.filters.eval_sets import EvalItem
from service.filters.normalization import normalized_words, preview
from service.filters.records import SampleRecord, Verdict, field_text
from service.filters.specs import DecontaminationParams


def _gram_hashes(words: list[str], n: int) -> set[int]:
    return {hash(" ".join(words[i : i + n])) for i in range(len(words) - n + 1)}


class Decontamination(PerSampleFilter):
    def __init__(self, params: DecontaminationParams, items: Iterable[EvalItem]) -> None:
        self.params = params
        # gram length → gram hash → item ordinal (the first item that has the gram)
        self.index: dict[int, dict[int, int]] = {}
        self.items: list[EvalItem] = []
        for item in items:
            words = normalized_words(item.text)
            if not words:
                continue
            n = min(params.n, len(words))
            ordinal = len(self.items)
            self.items.append(item)
            grams = self.index.setdefault(n, {})
            for gram in _gram_hashes(words, n):
                grams.setdefault(gram, ordinal)

    def judge(self, sample: SampleRecord) -> Verdict:
        words = normalized_words(field_text(sample, self.params.field))
        shared: Counter[int] = Counter()
        for n, grams in self.index.items():
            for gram in _gram_hashes(words, n):
                ordinal = grams.get(gram)
                if ordinal is not None:
                    shared[ordinal] += 1
        hits = [(count, -ordinal) for ordinal, count in shared.items() if count >= self.params.min_overlap]
        if not hits:
            return Verdict(
                sample["id"], True, f"no {self.params.n}-gram overlap with {len(self.items):,} eval items"
            )
        count, negative = max(hits)
        item = self.items[-negative]
        unit = "n-gram" if count == 1 else "n-grams"
        shown = preview(item.text, 50)
        reason = f"{count} shared {unit} (n={self.params.n}) with eval item {item.label} ({shown!r})"
        return Verdict(sample["id"], False, reason, float(count))
