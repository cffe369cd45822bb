"""agreement: keep what a job's teachers agree on (see `AgreementParams` for the rule).

The verdict on a sample depends on its item's other answers, which may sit anywhere in the
selection (or outside it), so the filter asks `siblings` for every teacher's answer to the items
of a chunk. It remembers nothing between chunks: a resumed run needs no priming.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from answers.match import extract_answer, match_answer
from service.filters.normalization import preview
from service.filters.records import ItemKey, SampleRecord, TeacherAnswer, Verdict, item_key
from service.filters.specs import AgreementParams

# Every teacher's answer to the items of some samples.
SiblingAnswers = Callable[[Sequence[SampleRecord]], Iterable[TeacherAnswer]]


@dataclass(frozen=True)
class ItemOutcome:
    """How an item's teachers split: the majority group (teacher answers, lowest teacher first)."""

    majority: list[TeacherAnswer]
    answered: int  # teachers with an answer


def answers_from(samples: Sequence[SampleRecord]) -> SiblingAnswers:
    """A SiblingAnswers over these samples only (the pure entry point: every answer is in hand)."""
    known = [TeacherAnswer(item_key(s), s["teacher_index"], s["id"], s["teacher_answer"]) for s in samples]

    def lookup(chunk: Sequence[SampleRecord]) -> list[TeacherAnswer]:
        wanted = {item_key(s) for s in chunk}
        return [answer for answer in known if answer.item in wanted]

    return lookup


class TeacherAgreement:
    def __init__(self, params: AgreementParams, siblings: SiblingAnswers) -> None:
        self.params = params
        self.siblings = siblings
        self.pattern = re.compile(params.pattern) if params.pattern else None

    def _final(self, answer: str) -> str | None:
        """The answer compared: what `pattern` extracts (None: nothing to extract), else all of it."""
        return extract_answer(answer, self.pattern) if self.pattern else answer

    def _same(self, a: str, b: str) -> bool:
        # Both sides are teacher outputs, so the pattern extracts from each (a verifier's reference
        # is extracted from nothing).
        final_a, final_b = self._final(a), self._final(b)
        if final_a is None or final_b is None:
            return False
        return match_answer(final_a, final_b, self.params.mode, tolerance=self.params.tolerance).correct

    def outcome(self, answers: Sequence[TeacherAnswer]) -> ItemOutcome:
        """Group the answers (each joins the first group whose first answer it matches)."""
        groups: list[list[TeacherAnswer]] = []
        answered = sorted(
            (a for a in answers if a.answer and a.answer.strip()), key=lambda a: a.teacher_index
        )
        for answer in answered:
            assert answer.answer is not None
            for group in groups:
                first = group[0].answer
                assert first is not None
                if self._same(answer.answer, first):
                    group.append(answer)
                    break
            else:
                groups.append([answer])
        # The largest group; max keeps the first of equals, i.e. the lowest teacher index.
        majority = max(groups, key=len) if groups else []
        return ItemOutcome(majority=majority, answered=len(answered))

    def evaluate(self, samples: Sequence[SampleRecord]) -> list[Verdict]:
        by_item: dict[ItemKey, list[TeacherAnswer]] = {}
        for answer in self.siblings(samples):
            by_item.setdefault(answer.item, []).append(answer)
        outcomes: dict[ItemKey, ItemOutcome] = {}
        verdicts = []
        for sample in samples:
            key = item_key(sample)
            if key not in outcomes:
                outcomes[key] = self.outcome(by_item.get(key, []))
            verdicts.append(self.judge(sample, outcomes[key]))
        return verdicts

    def judge(self, sample: SampleRecord, outcome: ItemOutcome) -> Verdict:
        sid, teachers = sample["id"], sample["job_teachers"]
        if teachers < 2:
            return Verdict(sid, False, f"job {sample['job_id']} has one teacher: nothing to agree with")
        quorum = self.params.quorum or teachers
        if quorum > teachers:
            return Verdict(
                sid, False, f"quorum {quorum} is more than job {sample['job_id']}'s {teachers} teachers"
            )
        agreeing = len(outcome.majority)
        share = agreeing / teachers
        if agreeing < quorum:
            return Verdict(
                sid,
                False,
                f"teachers disagree: at most {agreeing} of {teachers} agree (quorum {quorum})",
                share,
            )
        majority_ids = [a.sample_id for a in outcome.majority]
        said = preview(outcome.majority[0].answer or "", 40)
        if sid not in majority_ids:
            if not (sample["teacher_answer"] or "").strip():
                return Verdict(
                    sid, False, f"no answer; {agreeing} of {teachers} teachers agree on {said!r}", share
                )
            return Verdict(
                sid, False, f"disagrees with {agreeing} of {teachers} teachers, who answer {said!r}", share
            )
        if self.params.keep == "majority" and sid != majority_ids[0]:
            first = outcome.majority[0]
            return Verdict(
                sid,
                False,
                f"same answer as sample {first.sample_id} (teacher {first.teacher_index}), kept once",
                share,
            )
        return Verdict(sid, True, f"{agreeing} of {teachers} teachers agree", share)

    def prime(self, samples: Sequence[SampleRecord]) -> None:
        """Nothing to remember: each chunk looks its items' answers up again."""
