"""The shape every built-in filter has, and the base of the ones that judge samples one by one."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Protocol

from service.filters.records import SampleRecord, Verdict


class SampleFilter(Protocol):
    """A filter over a selection streamed in chunks, in the order its spec asks for.

    `evaluate` returns one verdict per sample, in input order. Stateful filters (dedup, near-dup)
    remember what they have seen across calls; `prime` feeds them samples that were judged before a
    resumed run's checkpoint, so their state is as if the run had never stopped.
    """

    def evaluate(self, samples: Sequence[SampleRecord]) -> list[Verdict]: ...

    def prime(self, samples: Sequence[SampleRecord]) -> None: ...


class PerSampleFilter(ABC):
    """A filter whose verdict on a sample depends on that sample only."""

    def evaluate(self, samples: Sequence[SampleRecord]) -> list[Verdict]:
        return [self.judge(sample) for sample in samples]

    def prime(self, samples: Sequence[SampleRecord]) -> None:  # noqa: B027 - deliberately a no-op
        """Nothing to remember."""

    @abstractmethod
    def judge(self, sample: SampleRecord) -> Verdict: ...


def field_label(field: str) -> str:
    """How reasons name a field: "question+answer" for both."""
    return "question+answer" if field == "question_and_answer" else field
