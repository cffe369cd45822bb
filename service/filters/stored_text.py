"""Text a request asks us to store must fit Postgres: `text` and `jsonb` cannot hold NUL (U+0000).

Such input is a 422 naming the field, never a database error (a 500).
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator

NUL = "\x00"


def no_nul(value: str) -> str:
    if NUL in value:
        raise ValueError("contains a NUL character (U+0000), which cannot be stored")
    return value


def no_nul_anywhere(value: Any) -> Any:
    """`value` unchanged; raises ValueError when a string anywhere inside it (keys too) holds NUL."""
    if isinstance(value, str):
        no_nul(value)
    elif isinstance(value, dict):
        for key, item in value.items():
            no_nul_anywhere(key)
            no_nul_anywhere(item)
    elif isinstance(value, list | tuple):
        for item in value:
            no_nul_anywhere(item)
    return value


StoredText = Annotated[str, AfterValidator(no_nul)]
