"""The service the demo drives: the API in a thread of this process, a worker child process, a token.

The same pieces as `hardlabel up` (service.cli.serve): the database is resolved by the caller, the
API is uvicorn on a socket bound up front, and `WorkerSupervisor` runs `hardlabel worker` for every
task kind, here with its output in a log file so it does not break the demo's progress bars.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

from service.cli import CliError
from service.cli.serve import WorkerSupervisor, bind_socket, build_server, public_url
from service.settings import Settings

if TYPE_CHECKING:
    import uvicorn

DEFAULT_PORT = 8000
START_TIMEOUT_SECONDS = 60.0


def nvidia_gpu() -> bool:
    """Whether an NVIDIA driver answers (the Makefile's test); needs no torch import."""
    if shutil.which("nvidia-smi") is None:
        return False
    try:
        return subprocess.run(["nvidia-smi", "-L"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def bind_demo_socket(host: str, port: int | None) -> socket.socket:
    """The given port; without one, 8000 when it is free, else any free port."""
    if port is not None:
        return bind_socket(host, port)
    try:
        return bind_socket(host, DEFAULT_PORT)
    except CliError:
        return bind_socket(host, 0)


def create_admin_token(database_url: str, name: str = "hardlabel demo") -> str:
    """A new admin token; returns its secret (stored hashed, shown once)."""
    from service.auth import issue_token
    from service.db.session import transaction

    with transaction(database_url) as session:
        _, secret = issue_token(session, role="admin", name=name)
    return secret


class DemoService:
    """API + worker + token on a resolved database (`settings.database_url` set)."""

    def __init__(
        self, settings: Settings, sock: socket.socket, worker_log: Path, worker_env: dict[str, str]
    ) -> None:
        assert settings.database_url
        self.settings = settings
        self.sock = sock
        self.url = public_url(settings, sock)
        self.worker_log = worker_log
        self.worker_env = worker_env
        self.server: uvicorn.Server | None = None
        self.thread: threading.Thread | None = None
        self.supervisor: WorkerSupervisor | None = None
        self.token = ""

    def start(self) -> None:
        """Token, API (waits until it accepts requests), worker.

        Raises:
            CliError: the API did not start.
        """
        assert self.settings.database_url
        self.token = create_admin_token(self.settings.database_url)
        # The demo polls every half second: access logs would drown the narration.
        self.server = build_server(self.settings.model_copy(update={"log_level": "WARNING"}))
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, name="hardlabel-api", daemon=True
        )
        self.thread.start()
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise CliError("the API did not start (see the log above)")
            time.sleep(0.05)
        self.supervisor = WorkerSupervisor(self.settings, env=self.worker_env, log_path=self.worker_log)
        self.supervisor.start()

    @property
    def worker_pid(self) -> int | None:
        process = self.supervisor.process if self.supervisor else None
        return process.pid if process else None

    def serve_forever(self) -> None:
        """Until Ctrl-C or SIGTERM (a KeyboardInterrupt here) or the API stops."""
        while self.thread is not None and self.thread.is_alive():
            self.thread.join(0.5)

    def stop(self) -> None:
        """The worker first (it finishes its chunk), then the API."""
        if self.supervisor is not None:
            self.supervisor.stop()
        if self.server is not None:
            self.server.should_exit = True
        if self.thread is not None:
            self.thread.join(10)
        self.sock.close()
