"""length: text length in characters or tokens within [min, max]."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from service.filters.builtin.base import PerSampleFilter, field_label
from service.filters.records import SampleRecord, Verdict, field_text
from service.filters.specs import LengthParams

# Without a tokenizer a "token" is a word or a punctuation mark: close to what BPE tokenizers
# produce for English prose, and free of any model dependency.
_TOKEN = re.compile(r"\w+|[^\w\s]")


def regex_token_count(text: str) -> int:
    return sum(1 for _ in _TOKEN.finditer(text))


def tokenizer_token_count(path: str) -> Callable[[str], int]:
    """A counter using the `tokenizers` library on a tokenizer.json (or a folder holding one)."""
    from tokenizers import Tokenizer  # worker-only dependency, imported lazily

    file = Path(path)
    if file.is_dir():
        file = file / "tokenizer.json"
    if not file.is_file():
        raise FileNotFoundError(f"no tokenizer.json at {path}")
    tokenizer = Tokenizer.from_file(str(file))
    return lambda text: len(tokenizer.encode(text, add_special_tokens=False).ids)


class LengthCheck(PerSampleFilter):
    def __init__(self, params: LengthParams) -> None:
        self.params = params
        if params.unit == "chars":
            self.count: Callable[[str], int] = len
        elif params.tokenizer:
            self.count = tokenizer_token_count(params.tokenizer)
        else:
            self.count = regex_token_count

    def judge(self, sample: SampleRecord) -> Verdict:
        p = self.params
        length = self.count(field_text(sample, p.field))
        what = f"{field_label(p.field)} has {length:,} {p.unit}"
        if p.min is not None and length < p.min:
            return Verdict(sample["id"], False, f"{what}, fewer than min {p.min:,}", float(length))
        if p.max is not None and length > p.max:
            return Verdict(sample["id"], False, f"{what}, more than max {p.max:,}", float(length))
        low = "" if p.min is None else f"{p.min:,}"
        high = "" if p.max is None else f"{p.max:,}"
        return Verdict(sample["id"], True, f"{what}, within [{low}, {high}]", float(length))
