"""Teacher engines behind one Protocol (see base.py). Heavy backends are imported only when built."""

from __future__ import annotations

from generator.engines.base import Engine, TeacherConfig


def build_engine(config: TeacherConfig) -> Engine:
    """The engine `config.engine` names: "vllm" (offline, in this process) or "openai" (a server)."""
    if config.engine == "vllm":
        from generator.engines.vllm_engine import VLLMEngine

        return VLLMEngine(config)
    from generator.engines.openai_engine import OpenAIEngine

    return OpenAIEngine(config)


__all__ = ["Engine", "TeacherConfig", "build_engine"]
