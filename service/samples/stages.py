"""The default stage of a selection: the recipe's answer stage.

A recipe document (generator.recipe) names it in `answer_stage`; otherwise it is the last stage
that is not a judge (a judge stage has `judges: <stage>`). Only those two keys are read here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.db.models import Job, Recipe, Sample


def recipe_answer_stage(spec: dict[str, Any]) -> str | None:
    """The recipe's answer stage, or None when the document names no usable stage."""
    chosen = spec.get("answer_stage")
    if isinstance(chosen, str) and chosen:
        return chosen
    stages = spec.get("stages")
    if not isinstance(stages, list):
        return None
    names = [
        stage["name"]
        for stage in stages
        if isinstance(stage, dict) and isinstance(stage.get("name"), str) and stage.get("judges") is None
    ]
    return names[-1] if names else None


def answer_stages(session: Session, job_ids: Sequence[int]) -> dict[int, str | None]:
    """Each existing job's answer stage (None where its recipe does not tell)."""
    rows = session.execute(
        select(Job.id, Recipe.spec).join(Recipe, Recipe.id == Job.recipe_id).where(Job.id.in_(list(job_ids)))
    ).all()
    return {job_id: recipe_answer_stage(spec or {}) for job_id, spec in rows}


def stages_present(session: Session, job_ids: Sequence[int]) -> list[str]:
    rows = session.scalars(
        select(Sample.stage).where(Sample.job_id.in_(list(job_ids))).distinct().order_by(Sample.stage)
    )
    return list(rows)


def resolve_stage(
    session: Session, job_ids: Sequence[int], stage: str | None, loc: Sequence[str | int]
) -> str:
    """`stage`, or the jobs' common answer stage; a 422 at `loc` (the selection) when jobs are
    missing or the stage cannot be told."""
    from service.errors import ValidationProblem

    by_job = answer_stages(session, job_ids)
    missing = sorted(set(job_ids) - set(by_job))
    if missing:
        listed = ", ".join(str(m) for m in missing)
        raise ValidationProblem.at((*loc, "job_ids"), f"no such job: {listed}")
    if stage is not None:
        return stage
    known = {name for name in by_job.values() if name is not None}
    if len(known) > 1:
        detail = ", ".join(f"job {job}: {name}" for job, name in sorted(by_job.items()))
        raise ValidationProblem.at(
            (*loc, "stage"), f"the jobs' answer stages differ ({detail}); give a stage"
        )
    if len(known) == 1:
        return known.pop()
    present = stages_present(session, job_ids)
    if len(present) == 1:
        return present[0]
    raise ValidationProblem.at(
        (*loc, "stage"),
        f"cannot tell the answer stage; give one of: {', '.join(present) or '(no samples yet)'}",
    )
