"""Fixtures of the worker tests: the queue tests' own database, a tiny vLLM teacher, small recipes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

# The queue tests' factories (an isolated database, jobs as the API creates them) serve here too.
from tests.service.queue.queue_factories import clean_queue, queue_db_url

__all__ = ["clean_queue", "queue_db_url", "tiny_teacher"]


@pytest.fixture(scope="session")
def tiny_teacher(tiny_model_dir: Path) -> dict[str, Any]:
    """A job's teacher config: real vLLM on the tiny model, sized for CPU tests (ENV.md)."""
    return {
        "model": str(tiny_model_dir),
        "engine": "vllm",
        "dtype": "float32",
        "enforce_eager": True,
        "max_model_len": 512,
        "kv_cache_memory_bytes": 256 << 20,
        "max_num_seqs": 64,
    }
