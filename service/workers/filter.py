"""The `filter` task: apply a filter run's filters to its frozen selection, chunk by chunk.

A run makes one pass over the selection per sample order its filters need (by id; by judge score
for dedup filters that keep the best-scored copy). Each chunk's verdicts are written with
`INSERT … ON CONFLICT (sample_id, filter_name) DO UPDATE` in the same fenced transaction as the
task's cursor and the run's progress and counts. The cursor counts sample evaluations across
passes (pass p covers positions [p·size, (p+1)·size)). A resumed task re-reads its current pass
from the start and *primes* the stateful filters with the samples before the cursor (no writes),
so dedup and near-dup state is exactly what it would have been without the interruption.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Sequence
from contextlib import ExitStack
from typing import Any

from pydantic import TypeAdapter, ValidationError
from sqlalchemy.orm import Session

from service.db.models import FilterRun
from service.db.session import transaction
from service.events import record_event
from service.filters import repository
from service.filters.builtin import JudgeScorer, SampleFilter, build_filter
from service.filters.normalization import preview
from service.filters.records import SampleRecord, TeacherAnswer, Verdict
from service.filters.specs import JUDGE_VARIABLES, FilterSpec, JudgeScoreFilter
from service.samples.selection import ResolvedSelection, resolved_conditions
from service.workers.context import PermanentTaskError, TaskContext, TaskOutcome

# Samples per fenced write. Filters are cheap per sample, so chunks are far larger than generation's.
DEFAULT_CHUNK_SIZE = 2000

_SPEC: TypeAdapter[FilterSpec] = TypeAdapter(FilterSpec)


def _load_run(session: Session, run_id: int) -> tuple[dict[str, Any], dict[str, dict[str, int]]]:
    run = session.get(FilterRun, run_id)
    if run is None:
        raise PermanentTaskError(f"filter run {run_id} does not exist")
    return dict(run.spec), {name: dict(c) for name, c in (run.counts or {}).items()}


def _judge_scorer(ctx: TaskContext, spec: JudgeScoreFilter, engines: ExitStack) -> JudgeScorer:
    """The judge pass of a judge_score filter: the teacher scores each sample's current text."""
    from generator.engines.base import GenerationRequest, SamplingSpec, TeacherConfig
    from generator.parsers import ScoreParser, engine_json_schema, parse_completion
    from generator.templates import TemplateError, compile_template
    from service.workers.teachers import TEACHERS, TeacherLoadError

    judge = spec.params.judge
    assert judge is not None
    config = TeacherConfig.model_validate(judge.teacher)
    if config.engine == "vllm" and config.kv_cache_memory_bytes is None and ctx.settings.vllm_kv_cache_bytes:
        config = config.model_copy(update={"kv_cache_memory_bytes": ctx.settings.vllm_kv_cache_bytes})
    try:
        engine = engines.enter_context(TEACHERS.use(config))
    except TeacherLoadError as exc:
        raise PermanentTaskError(f"filter {spec.verdict_name!r}: {exc}") from exc
    templates = [
        (m.role, compile_template(m.content, name=f"judge.messages[{i}]", variables=JUDGE_VARIABLES))
        for i, m in enumerate(judge.messages)
    ]
    parser = ScoreParser(type="score", min=judge.score_min, max=judge.score_max, structured=judge.structured)
    schema = engine_json_schema(parser)

    def score(samples: Sequence[SampleRecord]) -> list[tuple[float | None, str | None]]:
        outcomes: list[tuple[float | None, str | None]] = [(None, None)] * len(samples)
        requests, asked = [], []
        for i, sample in enumerate(samples):
            context = {
                "question": sample["question"],
                "answer": sample["answer"] or "",
                "inputs": sample["inputs"],
            }
            try:
                messages = [
                    {"role": role, "content": template.render(context)} for role, template in templates
                ]
            except TemplateError as exc:
                outcomes[i] = (None, f"judge prompt failed: {exc}")
                continue
            sampling = SamplingSpec(
                temperature=judge.temperature, max_tokens=judge.max_tokens, seed=judge.seed + sample["id"]
            )
            requests.append(GenerationRequest(messages=messages, sampling=sampling, json_schema=schema))
            asked.append(i)
        if requests:
            ctx.check_lease()
            for i, result in zip(asked, engine.generate(requests), strict=True):
                reply = result.completions[0].text if result.completions else ""
                parsed = parse_completion(parser, reply)
                if parsed.ok:
                    outcomes[i] = (float(parsed.values[0]), None)
                else:
                    outcomes[i] = (None, f"judge reply {preview(reply, 40)!r}: {parsed.error}")
        return outcomes

    return score


def _build_filters(
    ctx: TaskContext, specs: Sequence[FilterSpec], engines: ExitStack
) -> list[tuple[str, SampleFilter]]:
    def reference_texts(dataset_ids: Sequence[int], field: str) -> Iterator[tuple[str, str]]:
        with transaction(ctx.database_url) as session:
            yield from repository.dataset_row_texts(session, dataset_ids, field)

    def sibling_answers(samples: Sequence[SampleRecord]) -> list[TeacherAnswer]:
        return ctx.with_retry(lambda session: repository.sibling_answers(session, samples))

    built = []
    for spec in specs:
        scorer = None
        if isinstance(spec, JudgeScoreFilter) and spec.params.judge is not None:
            scorer = _judge_scorer(ctx, spec, engines)
        try:
            built.append((spec.verdict_name, build_filter(spec, reference_texts, scorer, sibling_answers)))
        except (ValueError, OSError) as exc:  # missing eval set / tokenizer, unreadable file
            raise PermanentTaskError(f"filter {spec.verdict_name!r}: {exc}") from exc
    return built


def run_filter_task(ctx: TaskContext) -> TaskOutcome:
    """Handler of `filter` tasks (see the module docstring)."""
    task = ctx.task
    if task.filter_run_id is None:
        raise PermanentTaskError(f"task {task.id} has no filter run")
    run_id = task.filter_run_id
    spec, counts = ctx.with_retry(lambda s: _load_run(s, run_id))
    try:
        specs = {s.verdict_name: s for s in (_SPEC.validate_python(f) for f in spec["filters"])}
        selection = ResolvedSelection.model_validate(spec["selection"])
    except (ValidationError, KeyError) as exc:
        raise PermanentTaskError(f"filter run {run_id} has an unreadable spec: {exc}") from exc
    conditions = resolved_conditions(selection)
    size = int(spec["selection_size"])
    chunk_size = int(task.payload.get("chunk_size") or DEFAULT_CHUNK_SIZE)
    cursor = task.cursor
    for name in specs:
        counts.setdefault(name, {"passed": 0, "failed": 0})
    with ExitStack() as engines:  # teachers of judge passes, held until the task ends
        return _run_passes(ctx, run_id, spec, specs, conditions, size, chunk_size, cursor, counts, engines)


def _run_passes(
    ctx: TaskContext,
    run_id: int,
    spec: dict[str, Any],
    specs: dict[str, FilterSpec],
    conditions: list[Any],
    size: int,
    chunk_size: int,
    cursor: int,
    counts: dict[str, dict[str, int]],
    engines: ExitStack,
) -> TaskOutcome:
    for pass_index, plan in enumerate(spec["passes"]):
        base, end_of_pass = pass_index * size, (pass_index + 1) * size
        if cursor >= end_of_pass:
            continue
        order = plan["order"]
        filters = _build_filters(ctx, [specs[name] for name in plan["filters"]], engines)
        position, after = base, None
        while True:
            ctx.check_lease()
            records, last = ctx.with_retry(
                functools.partial(
                    repository.read_chunk, conditions=conditions, order=order, after=after, limit=chunk_size
                )
            )
            if not records:
                break
            end = min(position + len(records), end_of_pass)
            skip = max(cursor - position, 0)
            if skip:  # judged before an interruption: replay into stateful filters only
                for _, sample_filter in filters:
                    sample_filter.prime(records[:skip])
            todo = records[skip:]
            if todo:
                verdicts: list[tuple[str, Verdict]] = []
                for name, sample_filter in filters:
                    for verdict in sample_filter.evaluate(todo):
                        verdicts.append((name, verdict))
                        counts[name]["passed" if verdict.passed else "failed"] += 1
                _write_chunk(ctx, run_id, verdicts, end, counts)
                cursor = end
            position, after = position + len(records), last
            if ctx.stop_requested:
                return TaskOutcome.STOPPED
        cursor = max(cursor, end_of_pass)
        _finish_pass(ctx, run_id, pass_index, plan, cursor, counts)
        if ctx.stop_requested and pass_index + 1 < len(spec["passes"]):
            return TaskOutcome.STOPPED
    return TaskOutcome.DONE


def _write_chunk(
    ctx: TaskContext,
    run_id: int,
    verdicts: list[tuple[str, Verdict]],
    end: int,
    counts: dict[str, dict[str, int]],
) -> None:
    def write(session: Session, committed: int) -> None:
        if committed >= end:  # this chunk committed already (its answer was lost): nothing to redo
            return
        repository.upsert_verdicts(session, run_id, verdicts)
        repository.save_progress(session, run_id, ctx.task.id, end, counts)

    ctx.fenced(write)


def _finish_pass(
    ctx: TaskContext,
    run_id: int,
    pass_index: int,
    plan: dict[str, Any],
    cursor: int,
    counts: dict[str, dict[str, int]],
) -> None:
    """Checkpoint the end of a pass (the cursor jumps to it if samples vanished) and record it."""
    summary = ", ".join(
        f"{name}: {counts[name]['passed']:,} passed / {counts[name]['failed']:,} failed"
        for name in plan["filters"]
    )

    def write(session: Session, committed: int) -> None:
        repository.save_progress(session, run_id, ctx.task.id, max(committed, cursor), counts)
        record_event(
            session,
            "pass_done",
            f"pass {pass_index + 1} (order {plan['order']}) done: {summary}",
            filter_run_id=run_id,
            task_id=ctx.task.id,
            data={"pass": pass_index, "counts": {name: counts[name] for name in plan["filters"]}},
        )

    ctx.fenced(write)
