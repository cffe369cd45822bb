"""Whether an answer matches its reference: the one rule the verifier filter, the evaluation scorers,
the demo and the benches share, so "correct" means the same when teacher labels are filtered and when
students are scored.

Modes (the names the API, the CLI and stored runs use):

- ``exact`` — equal as written once surrounding whitespace is trimmed.
- ``normalized`` — equal after `normalize_answer` (SQuAD style, below). When both sides are plain
  numbers ("17", "17.0", "1,000") they are compared as numbers instead, within tolerance, so "17.0"
  is 17 and "3.5" is never 35. A reference that normalises to nothing ("?!") must match exactly,
  or every punctuation-only answer would agree with it.
- ``numeric`` — the last number of the answer equals the reference (a number, or the last number
  of its text) within an absolute ``tolerance`` (default 1e-6) or a ``relative_tolerance``
  (default 0): ``math.isclose(got, want, abs_tol=tolerance, rel_tol=relative_tolerance)``.
- ``regex`` — ``normalized`` on the final answer a ``pattern`` extracts (the pattern is required).

Any mode given a ``pattern`` first extracts the final answer: group 1 of the pattern's last match,
or the whole match when the pattern has no group. No match (or a group that took no part) is wrong.

Normalisation (`normalize_answer`): Unicode NFKC; case folded; punctuation and symbols (Unicode
categories P* and S*) deleted, except a "." or "," between two digits (a decimal point or a
thousands separator: "3.5" stays "3.5"); the English articles "a", "an", "the" dropped as whole
words unless nothing else is left (so the choice "A" stays "a"); whitespace collapsed to single
spaces and trimmed. "The Eiffel Tower!" and "eiffel tower" are the same answer.

Numbers (`last_number`): an optional sign, digits with optional thousands separators in groups of
three ("1,000"), an optional decimal part and exponent (".5", "-3.5", "2e-3"); a Unicode minus
sign counts as "-". The last one written is the answer: "12 + 7 = 19" → 19, "x = 4." → 4.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

Mode = Literal["exact", "normalized", "numeric", "regex"]
MODES: tuple[Mode, ...] = ("exact", "normalized", "numeric", "regex")
DEFAULT_TOLERANCE = 1e-6

NUMBER = re.compile(r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:[eE][-+]?\d+)?|[-+]?\.\d+")
_PLAIN_NUMBER = re.compile(rf"\s*(?:{NUMBER.pattern})\s*")
_ARTICLES = re.compile(r"\b(?:a|an|the)\b")
_WHITESPACE = re.compile(r"\s+")
_MINUS_SIGNS = str.maketrans({"\u2212": "-"})


def check_mode(name: str) -> Mode:
    """`name` as a mode.

    Raises:
        ValueError: not one of `MODES` (the message lists them).
    """
    for mode in MODES:
        if name == mode:
            return mode
    raise ValueError(f"unknown scoring method {name!r} (known: {', '.join(MODES)})")


def _is_punctuation(text: str, index: int) -> bool:
    char = text[index]
    if unicodedata.category(char)[0] not in "PS":
        return False
    # A decimal point or thousands separator belongs to its number.
    between_digits = 0 < index < len(text) - 1 and text[index - 1].isdecimal() and text[index + 1].isdecimal()
    return not (char in ".," and between_digits)


def normalize_answer(text: str) -> str:
    """`text` as the ``normalized`` mode compares it (the rule is in the module docstring)."""
    folded = unicodedata.normalize("NFKC", text).casefold()
    kept = "".join(char for index, char in enumerate(folded) if not _is_punctuation(folded, index))
    words = _WHITESPACE.sub(" ", kept).strip()
    without_articles = _WHITESPACE.sub(" ", _ARTICLES.sub(" ", words)).strip()
    return without_articles or words


def last_number(text: str) -> float | None:
    """The last number written in `text` ("so the total is $1,234.50." → 1234.5), or None."""
    matches = NUMBER.findall(text.translate(_MINUS_SIGNS))
    if not matches:
        return None
    return float(matches[-1].replace(",", ""))


def is_plain_number(text: str) -> bool:
    """Whether `text` is one number and nothing else (surrounding whitespace aside)."""
    return _PLAIN_NUMBER.fullmatch(text.translate(_MINUS_SIGNS)) is not None


def format_number(value: float) -> str:
    """`value` as people write it: 12 rather than 12.0."""
    return str(int(value)) if value.is_integer() and abs(value) < 1e15 else f"{value:g}"


def extract_answer(text: str, pattern: str | re.Pattern[str]) -> str | None:
    """Group 1 of `pattern`'s last match in `text` (the whole match without a group), or None."""
    matches = list(re.finditer(pattern, text))
    if not matches:
        return None
    last = matches[-1]
    return last.group(1) if last.re.groups else last.group(0)


@dataclass(frozen=True)
class AnswerMatch:
    """A verdict and the reason people read ("answer 61 ≠ reference 62")."""

    correct: bool
    reason: str


def _shown(text: str, limit: int) -> str:
    flat = _WHITESPACE.sub(" ", text).strip()
    return flat if len(flat) <= limit else flat[: limit - 1].rstrip() + "…"


def _reference_number(reference: object) -> float | None:
    if isinstance(reference, int | float) and not isinstance(reference, bool):
        return float(reference)
    return last_number(str(reference))


def _numeric(answer: str, reference: object, tolerance: float, relative_tolerance: float) -> AnswerMatch:
    got = last_number(answer)
    if got is None:
        return AnswerMatch(False, f"no number in the answer {_shown(answer, 40)!r}")
    want = _reference_number(reference)
    if want is None:
        return AnswerMatch(False, f"reference {_shown(str(reference), 40)!r} is not a number")
    same = math.isclose(got, want, abs_tol=tolerance, rel_tol=relative_tolerance)
    relation = "=" if same else "≠"
    return AnswerMatch(same, f"answer {format_number(got)} {relation} reference {format_number(want)}")


def match_answer(
    answer: str,
    reference: object,
    mode: Mode | str = "normalized",
    *,
    pattern: str | re.Pattern[str] | None = None,
    tolerance: float = DEFAULT_TOLERANCE,
    relative_tolerance: float = 0.0,
) -> AnswerMatch:
    """Whether `answer` matches `reference` by `mode` (see the module docstring).

    Args:
        reference: the reference answer; a non-string one is compared as `str(reference)`, and a
            number as itself in the numeric comparison.
        pattern: extracts the final answer from `answer` first (required for ``regex``).

    Raises:
        ValueError: an unknown mode, or ``regex`` without a pattern.
    """
    checked = check_mode(mode)
    if pattern is not None:
        extracted = extract_answer(answer, pattern)
        if extracted is None:
            shown = pattern if isinstance(pattern, str) else pattern.pattern
            return AnswerMatch(False, f"no final answer matching /{_shown(shown, 60)}/ in the answer")
        answer = extracted
    elif checked == "regex":
        raise ValueError("the regex scoring method needs a pattern")
    written = str(reference)
    if checked == "numeric" or (checked != "exact" and is_plain_number(answer) and is_plain_number(written)):
        return _numeric(answer, reference, tolerance, relative_tolerance)
    if checked == "exact":
        same = answer.strip() == written.strip()
    else:
        expected = normalize_answer(written)
        same = normalize_answer(answer) == expected if expected else answer.strip() == written.strip()
    relation = "=" if same else "≠"
    return AnswerMatch(same, f"answer {_shown(answer, 60)!r} {relation} reference {_shown(written, 60)!r}")


def answers_match(
    answers: Sequence[str],
    references: Sequence[object],
    mode: Mode | str = "normalized",
    *,
    pattern: str | None = None,
    tolerance: float = DEFAULT_TOLERANCE,
    relative_tolerance: float = 0.0,
) -> list[bool]:
    """Whether each answer matches its reference (`match_answer` over two parallel sequences).

    Raises:
        ValueError: an unknown mode, ``regex`` without a pattern, a pattern that does not compile,
            or sequences of different lengths.
    """
    checked = check_mode(mode)
    if len(answers) != len(references):
        raise ValueError(f"{len(answers)} predictions for {len(references)} references")
    if checked == "regex" and not pattern:
        raise ValueError("the regex scoring method needs a pattern")
    try:
        compiled = re.compile(pattern) if pattern else None
    except re.error as exc:
        raise ValueError(f"invalid regex pattern: {exc}") from exc
    return [
        match_answer(
            answer,
            reference,
            checked,
            pattern=compiled,
            tolerance=tolerance,
            relative_tolerance=relative_tolerance,
        ).correct
        for answer, reference in zip(answers, references, strict=True)
    ]
