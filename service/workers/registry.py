"""Task kind → handler. Kinds (generate, filter, train, freeze) register here; the runner stays as is.

Handlers are named by import path and imported on first use, so choosing a kind never drags in
the heavy libraries of the others (vllm, torch, trl load only in workers that run them).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from service.workers.context import TaskContext, TaskOutcome

TaskHandler = Callable[[TaskContext], TaskOutcome]

# kind → "module:function" (or a callable registered at runtime).
HANDLERS: dict[str, str | TaskHandler] = {
    "generate": "service.workers.generate:run_generate_task",
    "filter": "service.workers.filter:run_filter_task",
    "train": "service.workers.train:run_train_task",
    "freeze": "service.workers.freeze:run_freeze_task",
}


def register_handler(kind: str, handler: str | TaskHandler) -> None:
    """Add or replace the handler of ``kind`` (an import path "module:function" or a callable)."""
    HANDLERS[kind] = handler


def known_kinds() -> list[str]:
    return sorted(HANDLERS)


def get_handler(kind: str) -> TaskHandler:
    """The handler of ``kind``.

    Raises:
        KeyError: no handler for ``kind``.
    """
    handler = HANDLERS[kind]
    if isinstance(handler, str):
        module_name, _, attribute = handler.partition(":")
        resolved: TaskHandler = getattr(importlib.import_module(module_name), attribute)
        HANDLERS[kind] = resolved
        return resolved
    return handler
