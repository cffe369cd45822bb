"""Service configuration, read from the environment (prefix ``HARDLABEL_``)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Every knob of the service. The README's configuration table is generated from this model."""

    model_config = SettingsConfigDict(env_prefix="HARDLABEL_", extra="ignore")

    database_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL of the Postgres database (postgresql+psycopg://...). "
        "Unset: the CLI starts an embedded Postgres under `home`.",
    )
    home: Path = Field(
        default=Path(".hardlabel"),
        description="State folder: embedded Postgres data, model cache, exports, training outputs.",
    )
    host: str = Field(default="127.0.0.1", description="Address the API binds to.")
    port: int = Field(default=8000, ge=1, le=65535, description="Port the API binds to.")
    public_url: str | None = Field(
        default=None, description="URL printed for users (defaults to http://host:port)."
    )
    metrics_public: bool = Field(
        default=False,
        description="Serve `/metrics` on the API port without a bearer token (for Prometheus scrapers, "
        "which rarely carry one; it holds counts, ages and worker host names, never secrets or sample "
        "text). Off: it needs a viewer token, like every other route.",
    )
    metrics_port: int | None = Field(
        default=None,
        ge=1,
        le=65535,
        description="Also serve the Prometheus metrics without a token on this port (same address as "
        "the API), from `hardlabel serve` and `hardlabel up`; keep it reachable only by the scraper. "
        "Unset: metrics only at `/metrics` on the API port.",
    )
    max_request_bytes: int = Field(
        default=32 * 1024 * 1024, ge=1024, description="Largest request body the API accepts."
    )
    max_page_size: int = Field(default=500, ge=1, le=10_000, description="Largest page a list returns.")
    default_page_size: int = Field(default=50, ge=1, description="Page size when none is asked for.")
    shard_size: int = Field(default=256, ge=1, description="Items per generation shard (queue task).")
    chunk_size: int = Field(
        default=64, ge=1, description="Items a worker generates and commits in one fenced transaction."
    )
    lease_seconds: float = Field(default=60.0, gt=0, description="How long a claimed task's lease lasts.")
    heartbeat_seconds: float = Field(
        default=10.0, gt=0, description="How often a worker extends the lease of its running tasks."
    )
    reaper_seconds: float = Field(
        default=15.0, gt=0, description="How often a worker requeues tasks whose lease expired."
    )
    poll_seconds: float = Field(
        default=1.0, gt=0, description="How long an idle worker waits between claims."
    )
    max_attempts: int = Field(default=5, ge=1, description="Claims of a task before it is failed.")
    retry_backoff_seconds: float = Field(
        default=5.0, ge=0, description="Base of the exponential backoff before a requeued task runs again."
    )
    worker_kinds: str = Field(
        default="generate,filter,train,freeze", description="Task kinds a worker claims (comma-separated)."
    )
    vllm_kv_cache_bytes: int | None = Field(
        default=None,
        description="KV cache size for vLLM teachers when the job sets none (needed on CPU; e.g. 268435456).",
    )
    teacher_idle_seconds: float = Field(
        default=300.0,
        ge=0,
        description="How long a worker keeps a teacher engine loaded with no task using it; then it is "
        "closed (its GPU memory freed) and the next job reloads it. 0: keep it until the worker stops.",
    )
    log_level: str = Field(default="INFO", description="Python log level of the API and workers.")


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings (cached: the environment is read once)."""
    return Settings()


def settings_reference_markdown() -> str:
    """The README's configuration table, generated from Settings so the two cannot drift."""
    lines = ["| variable | default | what it does |", "| --- | --- | --- |"]
    for name, field in Settings.model_fields.items():
        default = field.default
        shown = "unset" if default is None else f"`{default}`"
        lines.append(f"| `HARDLABEL_{name.upper()}` | {shown} | {field.description or ''} |")
    return "\n".join(lines)
