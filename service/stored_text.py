"""Text a request asks us to store must fit Postgres: one rule for every text field.

`text` and `jsonb` cannot hold NUL (U+0000), and nothing UTF-8 can hold a lone surrogate
(U+D800–U+DFFF, which JSON's `\\ud800` escapes produce). Such input is a 422 naming the field,
never a database or encoding error (a 500). The app applies `storable_text_problem` to every
string a request brings (service/dependencies.py); `StoredText` states it in schemas as well.
Text a teacher wrote is kept rather than refused: `with_unstorable_replaced` swaps each such
character for U+FFFD (service/workers/sample_store.py).
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import AfterValidator

NUL = "\x00"
REPLACEMENT = "\ufffd"
# In a Python str from JSON a valid pair is already one code point: any surrogate left is lone.
_SURROGATE = re.compile("[\ud800-\udfff]")


def storable_text_problem(value: str) -> str | None:
    """Why `value` cannot be stored as text, or None when it can."""
    if NUL in value:
        return "contains a NUL character (U+0000), which cannot be stored"
    surrogate = _SURROGATE.search(value)
    if surrogate is not None:
        return f"contains a lone surrogate (U+{ord(surrogate[0]):04X}), which is not valid Unicode text"
    return None


def storable_text(value: str) -> str:
    """`value` unchanged; raises ValueError when it holds NUL or a lone surrogate."""
    problem = storable_text_problem(value)
    if problem is not None:
        raise ValueError(problem)
    return value


def with_unstorable_replaced(value: str) -> str:
    """`value` with each NUL and lone surrogate replaced by U+FFFD; everything else kept as is."""
    if NUL in value:
        value = value.replace(NUL, REPLACEMENT)
    return _SURROGATE.sub(REPLACEMENT, value)


def storable_anywhere(value: Any) -> Any:
    """`value` unchanged; raises ValueError when a string anywhere inside it (keys too) is not storable."""
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            storable_text(item)
        elif isinstance(item, dict):
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, list | tuple):
            pending.extend(item)
    return value


StoredText = Annotated[str, AfterValidator(storable_text)]
