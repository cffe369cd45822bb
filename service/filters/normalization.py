"""Text normalisation shared by the dedup, near-dup and decontamination filters.

One definition, so "the same text" means the same thing everywhere: Unicode NFKC, then optionally
lower case, punctuation (anything neither a word character nor space, and `_`) replaced by a space,
and runs of whitespace collapsed to one space with the ends stripped.

Whether an answer is *correct* is another question, with its own rule (articles dropped, numbers
compared as numbers): `answers.match`, which the verifier filter and the evaluation share.
"""

from __future__ import annotations

import re
import unicodedata

_PUNCTUATION = re.compile(r"[^\w\s]|_")
_WHITESPACE = re.compile(r"\s+")


def normalize_text(text: str, *, case: bool = True, whitespace: bool = True, punctuation: bool = True) -> str:
    """`text` normalised; each flag turns one step on (case folding, whitespace, punctuation)."""
    out = unicodedata.normalize("NFKC", text)
    if case:
        out = out.casefold()
    if punctuation:
        out = _PUNCTUATION.sub(" ", out)
    if whitespace:
        out = _WHITESPACE.sub(" ", out).strip()
    return out


def normalized_words(text: str) -> list[str]:
    """The words of `text` after full normalisation (the unit of n-gram overlap)."""
    return normalize_text(text).split()


def preview(text: str, limit: int = 60) -> str:
    """`text` on one line, cut to `limit` characters with an ellipsis: for reasons people read."""
    flat = _WHITESPACE.sub(" ", text).strip()
    return flat if len(flat) <= limit else flat[: limit - 1].rstrip() + "…"
