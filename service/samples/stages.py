"""The default stage of a selection: the jobs' answer stage.

Each job stores it at submission (`job.answer_stage`, what generator.recipe's `Recipe.answer_stage`
says: the recipe's `answer_stage`, else its last stage that is not a judge), so it is decided in
one place and never re-derived from the recipe document.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.db.models import Job, Sample


def answer_stages(session: Session, job_ids: Sequence[int]) -> dict[int, str | None]:
    """Each existing job's answer stage, as fixed when it was submitted (None where none was)."""
    rows = session.execute(select(Job.id, Job.answer_stage).where(Job.id.in_(list(job_ids)))).all()
    return {job_id: stage for job_id, stage in rows}


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
