"""Seeds derived from stable hashes, so the same recipe reproduces the same samples anywhere.

Python's `hash()` is salted per process; sha256 of the parts is not.
"""

from __future__ import annotations

import hashlib

# Servers take 31-bit seeds; vLLM gives completion k of an n-request the seed `seed + k`, so leave room.
_SEED_RANGE = 2**31 - 256


def derive_seed(*parts: object) -> int:
    """A seed in [0, 2**31 - 256) that depends only on `parts` (their `repr`)."""
    digest = hashlib.sha256("\x1f".join(repr(part) for part in parts).encode()).digest()
    return int.from_bytes(digest[:8], "big") % _SEED_RANGE
