"""The agreement filter's rule, pure: how teachers' answers group, quorums, ties, keep modes."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import TypeAdapter, ValidationError

from service.filters.builtin import apply_filter
from service.filters.records import SampleRecord, sample_record
from service.filters.specs import FilterSpec

SPEC: TypeAdapter[FilterSpec] = TypeAdapter(FilterSpec)


def item(answers: list[str | None], *, item_index: int = 0, first_id: int = 1) -> list[SampleRecord]:
    """One item of a job whose teachers (one per answer, in order) wrote `answers`."""
    return [
        sample_record(
            first_id + t,
            "q",
            answer,
            job_id=1,
            item_index=item_index,
            teacher_index=t,
            job_teachers=len(answers),
        )
        for t, answer in enumerate(answers)
    ]


def verdicts(samples: list[SampleRecord], **params: Any) -> list[tuple[bool, str]]:
    spec = SPEC.validate_python({"type": "agreement", "params": params})
    by_id = apply_filter(spec, samples)
    return [(by_id[s["id"]].passed, by_id[s["id"]].reason) for s in samples]


@pytest.mark.parametrize(
    ("answers", "params", "expected"),
    [
        (["Paris", "paris."], {}, [True, True]),
        (["Paris", "paris."], {"mode": "exact"}, [False, False]),
        (["The answer is 42", "42.0"], {"mode": "numeric"}, [True, True]),
        (["41", "42"], {"mode": "numeric"}, [False, False]),
        (["41", "42"], {"mode": "numeric", "tolerance": 1.0}, [True, True]),
        (["x", "x", "y"], {}, [False, False, False]),  # default quorum: every teacher
        (["x", "x", "y"], {"quorum": 2}, [True, True, False]),
        (["x", "y", "x"], {"quorum": 2, "keep": "majority"}, [True, False, False]),
        (["y", "x", "x"], {"quorum": 2, "keep": "majority"}, [False, True, False]),
        (["x", None, "x"], {"quorum": 2}, [True, False, True]),
        (["x", "  ", "x"], {}, [False, False, False]),  # a blank answer agrees with nothing
        (["Answer: 7", "so it is 7"], {"pattern": r"(\d+)"}, [True, True]),
        (["a", "b", "b", "a"], {"quorum": 2}, [True, False, False, True]),  # a tie: the first teacher's side
    ],
)
def test_agreement_rule(answers: list[str | None], params: dict[str, Any], expected: list[bool]) -> None:
    assert [passed for passed, _ in verdicts(item(answers), **params)] == expected


def test_reasons_say_how_many_agree() -> None:
    assert verdicts(item(["x", "y", "x"]), quorum=2) == [
        (True, "2 of 3 teachers agree"),
        (False, "disagrees with 2 of 3 teachers, who answer 'x'"),
        (True, "2 of 3 teachers agree"),
    ]
    assert verdicts(item(["x", "y"])) == [(False, "teachers disagree: at most 1 of 2 agree (quorum 2)")] * 2
    assert verdicts(item(["x", "x"]), keep="majority")[1] == (
        False,
        "same answer as sample 1 (teacher 0), kept once",
    )


def test_items_are_judged_apart_and_one_teacher_jobs_have_nothing_to_agree_with() -> None:
    samples = item(["1", "1"], item_index=0, first_id=1) + item(["2", "3"], item_index=1, first_id=3)
    assert [passed for passed, _ in verdicts(samples)] == [True, True, False, False]
    alone = [sample_record(9, "q", "x", job_id=4, job_teachers=1)]
    assert verdicts(alone) == [(False, "job 4 has one teacher: nothing to agree with")]
    assert verdicts(item(["x", "x"]), quorum=3) == [(False, "quorum 3 is more than job 1's 2 teachers")] * 2


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"quorum": 1}, "quorum"),
        ({"mode": "regex"}, "mode"),
        ({"pattern": "("}, "pattern"),
        ({"keep": "all"}, "keep"),
    ],
)
def test_bad_params_are_refused_naming_the_field(params: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as raised:
        SPEC.validate_python({"type": "agreement", "params": params})
    assert raised.value.errors()[0]["loc"][-1] == field
