"""Engine output off the terminal: `hardlabel generate` keeps vLLM's logs in a file, shown on failure.

vLLM logs ~70 INFO/WARNING lines to stdout while it starts and stops, from the CLI's process and
from its engine process, and its children print weight-loading bars and warnings to stderr; mixed
into a progress bar they bury it. While an `EngineLog` is open:

- vLLM's loggers write to the log file: `VLLM_LOGGING_CONFIG_PATH` names a logging config that
  sends them there, and the engine process inherits that environment variable;
- file descriptor 2 (what child processes and C++ code print to) goes to the log file as well,
  while the CLI's own console keeps the original stderr. This only when stderr is the process's
  real descriptor 2; under a test runner that captures sys.stderr, nothing is redirected.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from types import TracebackType
from typing import IO

# How many of the log's last lines a failure shows.
TAIL_LINES = 20


class EngineLog:
    """A context that routes engine output to `path`; `console_file` is where the CLI may print."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.console_file: IO[str] = sys.stderr
        self._config = path.with_suffix(".logging.json")
        self._saved_fd: int | None = None
        self._saved_env: str | None = None

    def __enter__(self) -> EngineLog:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text("", encoding="utf-8")
        self._config.write_text(json.dumps(_logging_config(self.path)), encoding="utf-8")
        self._saved_env = os.environ.get("VLLM_LOGGING_CONFIG_PATH")
        os.environ["VLLM_LOGGING_CONFIG_PATH"] = str(self._config)
        if _is_real_stderr():
            sys.stderr.flush()
            self._saved_fd = os.dup(2)
            self.console_file = open(self._saved_fd, "w", closefd=False, encoding="utf-8")
            log_fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
            os.dup2(log_fd, 2)
            os.close(log_fd)
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._saved_fd is not None:
            self.console_file.flush()
            sys.stderr.flush()
            os.dup2(self._saved_fd, 2)
            os.close(self._saved_fd)
            self._saved_fd = None
            self.console_file = sys.stderr
        if self._saved_env is None:
            os.environ.pop("VLLM_LOGGING_CONFIG_PATH", None)
        else:
            os.environ["VLLM_LOGGING_CONFIG_PATH"] = self._saved_env
        self._config.unlink(missing_ok=True)  # the engine read it at start; the log stays

    def tail(self) -> str:
        """The log's last lines, for a failure message."""
        try:
            lines = self.path.read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-TAIL_LINES:])


def _is_real_stderr() -> bool:
    try:
        return sys.stderr.fileno() == 2
    except (AttributeError, OSError, ValueError):  # a test runner's stand-in stream
        return False


def _logging_config(path: Path) -> dict[str, object]:
    """vLLM's own logging layout, into a file instead of stdout."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"engine": {"format": "%(levelname)s %(asctime)s %(name)s: %(message)s"}},
        "handlers": {
            "engine": {
                "class": "logging.FileHandler",
                "filename": str(path),
                "mode": "a",
                "encoding": "utf-8",
                "formatter": "engine",
            }
        },
        "loggers": {"vllm": {"handlers": ["engine"], "level": "INFO", "propagate": False}},
    }
