"""Training formats as Arrow columns, built vectorised from a batch of flat rows.

- `prompt_completion`: TRL's conversational prompt–completion (`prompt`: [system?, user],
  `completion`: [assistant]) — SFTTrainer then computes the loss on the completion only.
- `messages`: one conversation per row (`messages`: [system?, user, assistant]).
- `alpaca`: `instruction` (the question), `input` (empty), `output` (the answer), plus `system`
  when some row of the dataset has a system prompt.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa

FORMATS = ("prompt_completion", "messages", "alpaca")
FLAT_SCHEMA = pa.schema([("question", pa.string()), ("answer", pa.string()), ("system", pa.string())])
MESSAGE = pa.struct([("role", pa.string()), ("content", pa.string())])


def format_schema(fmt: str, *, has_system: bool) -> pa.Schema:
    if fmt == "prompt_completion":
        return pa.schema([("prompt", pa.list_(MESSAGE)), ("completion", pa.list_(MESSAGE))])
    if fmt == "messages":
        return pa.schema([("messages", pa.list_(MESSAGE))])
    if fmt == "alpaca":
        fields = [("instruction", pa.string()), ("input", pa.string()), ("output", pa.string())]
        return pa.schema(fields + ([("system", pa.string())] if has_system else []))
    raise ValueError(f"unknown format {fmt!r} (expected one of {', '.join(FORMATS)})")


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


def format_batch(batch: pa.RecordBatch, fmt: str, *, has_system: bool) -> pa.RecordBatch:
    """A batch of FLAT_SCHEMA rows in training format `fmt` (schema: format_schema(fmt, ...))."""
    question, answer, system = batch.column("question"), batch.column("answer"), batch.column("system")
    schema = format_schema(fmt, has_system=has_system)
    if fmt == "prompt_completion":
        no_system = pa.nulls(len(batch), pa.string())
        columns = [
            message_lists(system, [("user", question)]),
            message_lists(no_system, [("assistant", answer)]),
        ]
    elif fmt == "messages":
        columns = [message_lists(system, [("user", question), ("assistant", answer)])]
    else:
        empty = pa.array([""] * len(batch), pa.string())
        columns = [question, empty, answer] + ([system] if has_system else [])
    return pa.RecordBatch.from_arrays(columns, schema=schema)
