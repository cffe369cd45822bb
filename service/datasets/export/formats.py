"""Training formats as Arrow columns, built vectorised from a batch of flat rows.

- `prompt_completion`: TRL's conversational prompt–completion (`prompt`: [system?, user],
  `completion`: [assistant]) — SFTTrainer then computes the loss on the completion only.
- `messages`: one conversation per row (`messages`: [system?, user, assistant]).
- `alpaca`: `instruction` (the question), `input` (empty), `output` (the answer), plus `system`
  when some row of the dataset has a system prompt.
- `preference`: TRL's conversational preference format (`prompt`: [system?, user], `chosen` and
  `rejected`: [assistant]) for DPO-style trainers, from PAIR_SCHEMA batches (see preference.py).

With provenance, every format gets the PROVENANCE_SCHEMA columns after its own (the preference
format's name the chosen answer's sample, plus `rejected_sample_id`): `source` (teacher |
ground_truth) always; a ground-truth row has no sample or teacher, and names its job and item only
when it came from the version's seed data.

With soft labels (not for `preference`), rows get SOFT_LABEL_SCHEMA's columns last (soft_labels.py).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa

from service.datasets.export.soft_labels import SOFT_LABEL_SCHEMA, SOURCE_COLUMN, soft_label_columns

FORMATS = ("prompt_completion", "messages", "alpaca", "preference")
FLAT_SCHEMA = pa.schema([("question", pa.string()), ("answer", pa.string()), ("system", pa.string())])
PAIR_SCHEMA = pa.schema(
    [("question", pa.string()), ("chosen", pa.string()), ("rejected", pa.string()), ("system", pa.string())]
)
# Where a row came from: teacher or ground truth, its sample, the sample's job, the job's teacher
# model and the item index.
PROVENANCE_SCHEMA = pa.schema(
    [
        ("source", pa.string()),
        ("sample_id", pa.int64()),
        ("job_id", pa.int64()),
        ("teacher", pa.string()),
        ("item_index", pa.int64()),
    ]
)
PAIR_PROVENANCE_SCHEMA = pa.schema([*PROVENANCE_SCHEMA, pa.field("rejected_sample_id", pa.int64())])
MESSAGE = pa.struct([("role", pa.string()), ("content", pa.string())])


def provenance_schema(fmt: str) -> pa.Schema:
    return PAIR_PROVENANCE_SCHEMA if fmt == "preference" else PROVENANCE_SCHEMA


def source_schema(fmt: str, *, provenance: bool = False) -> pa.Schema:
    """The schema of the batches format_batch takes for `fmt` (what rows.py / preference.py read)."""
    base = PAIR_SCHEMA if fmt == "preference" else FLAT_SCHEMA
    return pa.schema([*base, *provenance_schema(fmt)]) if provenance else base


class SoftLabelsUnsupported(ValueError):
    """Soft labels were asked for a format that has no single completion to align them with."""


def check_soft_labels(fmt: str, soft_labels: bool) -> None:
    """Raises SoftLabelsUnsupported for `preference` with soft labels (two answers, one prompt)."""
    if soft_labels and fmt == "preference":
        raise SoftLabelsUnsupported(
            "soft labels are exported with the prompt_completion, messages or alpaca formats, not preference"
        )


def format_schema(
    fmt: str, *, has_system: bool, provenance: bool = False, soft_labels: bool = False
) -> pa.Schema:
    check_soft_labels(fmt, soft_labels)
    fields: list[tuple[str, pa.DataType]]
    if fmt == "prompt_completion":
        fields = [("prompt", pa.list_(MESSAGE)), ("completion", pa.list_(MESSAGE))]
    elif fmt == "messages":
        fields = [("messages", pa.list_(MESSAGE))]
    elif fmt == "alpaca":
        fields = [("instruction", pa.string()), ("input", pa.string()), ("output", pa.string())]
        fields += [("system", pa.string())] if has_system else []
    elif fmt == "preference":
        fields = [
            ("prompt", pa.list_(MESSAGE)),
            ("chosen", pa.list_(MESSAGE)),
            ("rejected", pa.list_(MESSAGE)),
        ]
    else:
        raise ValueError(f"unknown format {fmt!r} (expected one of {', '.join(FORMATS)})")
    extra = [(f.name, f.type) for f in provenance_schema(fmt)] if provenance else []
    extra += [(f.name, f.type) for f in SOFT_LABEL_SCHEMA] if soft_labels else []
    return pa.schema(fields + extra)


def message_lists(system: pa.Array, turns: Sequence[tuple[str, pa.Array]]) -> pa.ListArray:
    """Per row: a system message where `system` is not null, then one message per turn.

    Built with index arithmetic (no per-row Python): every message's content is taken from the
    concatenation [system..., turn 0..., turn 1...] at a computed position.
    """
    n = len(system)
    has_system = np.asarray(system.is_valid(), dtype=bool) if n else np.zeros(0, dtype=bool)
    extra = has_system.astype(np.int64)
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(extra + len(turns), out=offsets[1:])
    total = int(offsets[-1])
    source = np.empty(total, dtype=np.int64)
    roles = np.empty(total, dtype=np.int64)
    rows = np.arange(n, dtype=np.int64)
    system_rows = rows[has_system]
    source[offsets[system_rows]] = system_rows
    roles[offsets[system_rows]] = 0
    starts = offsets[:-1] + extra
    for j in range(len(turns)):
        source[starts + j] = (j + 1) * n + rows
        roles[starts + j] = j + 1
    contents = pa.concat_arrays(
        [system.cast(pa.string()), *(column.cast(pa.string()) for _, column in turns)]
    )
    role_names = pa.array(["system", *(role for role, _ in turns)], pa.string())
    messages = pa.StructArray.from_arrays(
        [role_names.take(pa.array(roles)), contents.take(pa.array(source))], fields=list(MESSAGE)
    )
    return pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), messages, type=pa.list_(MESSAGE))


def format_batch(
    batch: pa.RecordBatch,
    fmt: str,
    *,
    has_system: bool,
    provenance: bool = False,
    soft_labels: bool = False,
) -> pa.RecordBatch:
    """A batch of source_schema(fmt, provenance=…) rows in training format `fmt` (schema:
    format_schema(fmt, ...)); with `provenance` its provenance columns are passed through, with
    `soft_labels` its `soft_labels` (hex bytea) column becomes SOFT_LABEL_SCHEMA's columns."""
    question, system = batch.column("question"), batch.column("system")
    schema = format_schema(fmt, has_system=has_system, provenance=provenance, soft_labels=soft_labels)
    no_system = pa.nulls(len(batch), pa.string())
    columns: list[pa.Array]
    if fmt == "prompt_completion":
        columns = [
            message_lists(system, [("user", question)]),
            message_lists(no_system, [("assistant", batch.column("answer"))]),
        ]
    elif fmt == "messages":
        columns = [message_lists(system, [("user", question), ("assistant", batch.column("answer"))])]
    elif fmt == "preference":
        columns = [
            message_lists(system, [("user", question)]),
            message_lists(no_system, [("assistant", batch.column("chosen"))]),
            message_lists(no_system, [("assistant", batch.column("rejected"))]),
        ]
    else:
        empty = pa.array([""] * len(batch), pa.string())
        columns = [question, empty, batch.column("answer")] + ([system] if has_system else [])
    if provenance:
        columns += [batch.column(f.name).cast(f.type) for f in provenance_schema(fmt)]
    if soft_labels:
        columns += soft_label_columns(batch.column(SOURCE_COLUMN))
    return pa.RecordBatch.from_arrays(columns, schema=schema)
