"""`hardlabel serve` (the API) and `hardlabel up` (database + API + a worker, for one machine)."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import click

from service.cli import CliError
from service.cli.database import resolve_database
from service.settings import Settings, get_settings

if TYPE_CHECKING:
    import uvicorn

# A worker asked to stop finishes its chunk first; after this long it is killed.
WORKER_STOP_GRACE_SECONDS = 60.0
# A worker that keeps dying is restarted with a growing delay, up to this long.
WORKER_MAX_RESTART_DELAY_SECONDS = 30.0


def bind_socket(host: str, port: int) -> socket.socket:
    """The listening socket, bound before anything starts so a busy port is a one-line error."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise CliError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    sock.set_inheritable(True)
    return sock


def public_url(settings: Settings, sock: socket.socket) -> str:
    if settings.public_url:
        return settings.public_url.rstrip("/")
    host, port = sock.getsockname()[:2]
    shown = "127.0.0.1" if host in ("0.0.0.0", "") else f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}"


def build_server(settings: Settings) -> uvicorn.Server:
    import uvicorn

    from service.app import create_app

    class ApiServer(uvicorn.Server):
        """uvicorn, except that SIGINT/SIGTERM make `run()` return instead of being re-raised once
        the server has shut down (which would kill the process, or print a traceback from the event
        loop, before `hardlabel up` has stopped its worker)."""

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            if threading.current_thread() is not threading.main_thread():
                yield
                return
            previous = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
            try:
                yield
            finally:
                for sig, handler in previous.items():
                    signal.signal(sig, handler)

    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    config = uvicorn.Config(
        create_app(settings),
        log_level=settings.log_level.lower(),
        proxy_headers=True,
        server_header=False,
    )
    return ApiServer(config)


@contextlib.contextmanager
def metrics_port(server: uvicorn.Server, host: str, port: int | None) -> Iterator[str | None]:
    """With HARDLABEL_METRICS_PORT: the API's metrics registry, served without a token on that port
    while the block runs (yields its URL; None when no port is set). A busy port is a CliError."""
    if port is None:
        yield None
        return
    from fastapi import FastAPI

    from service.metrics import start_metrics_server

    app = server.config.app
    assert isinstance(app, FastAPI)
    try:
        httpd, _ = start_metrics_server(app.state.metrics_registry, host, port)
    except OSError as exc:
        raise CliError(f"cannot serve metrics on {host}:{port}: {exc.strerror or exc}") from exc
    bound = httpd.server_address[1]
    shown = "127.0.0.1" if host in ("0.0.0.0", "") else f"[{host}]" if ":" in host else host
    try:
        yield f"http://{shown}:{bound}/metrics"
    finally:
        httpd.shutdown()
        httpd.server_close()


def run_server(server: uvicorn.Server, sock: socket.socket) -> None:
    """Serve until SIGINT/SIGTERM; a failed start-up (e.g. database gone) is a CliError."""
    server.run(sockets=[sock])
    if not server.started:
        raise CliError("the API did not start (see the log above)")


@click.command("serve")
@click.option("--host", default=None, help="Address to bind (default: HARDLABEL_HOST or 127.0.0.1).")
@click.option(
    "--port", type=click.IntRange(0, 65535), default=None, help="Port (default: HARDLABEL_PORT or 8000)."
)
def serve(host: str | None, port: int | None) -> None:
    """Run the REST API (starts the embedded Postgres when HARDLABEL_DATABASE_URL is unset)."""
    settings = resolve_database(get_settings(), command=None)
    sock = bind_socket(host or settings.host, settings.port if port is None else port)
    click.echo(f"hardlabel API on {public_url(settings, sock)} (docs at /docs)", err=True)
    server = build_server(settings)
    with metrics_port(server, host or settings.host, settings.metrics_port) as metrics_url:
        if metrics_url:
            click.echo(f"metrics (no token) on {metrics_url}", err=True)
        run_server(server, sock)


class WorkerSupervisor:
    """Runs `hardlabel worker` for all task kinds as a child process and restarts it if it dies.

    The child runs in its own session, so Ctrl-C in the terminal reaches only `hardlabel up`, which
    then stops the worker the documented way (SIGTERM: finish the chunk, release the shard).
    """

    def __init__(
        self, settings: Settings, *, env: Mapping[str, str] | None = None, log_path: Path | None = None
    ) -> None:
        assert settings.database_url
        self.command = [
            sys.executable,
            "-c",
            "from service.cli import main; main()",
            "worker",  # every kind in HARDLABEL_WORKER_KINDS that this installation can run
        ]
        self.env = {**os.environ, **(env or {}), "HARDLABEL_DATABASE_URL": settings.database_url}
        # `hardlabel demo` sends the worker's output to a file so it does not break its progress bars.
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._supervise, name="worker-supervisor", daemon=True)

    def start(self) -> None:
        self._spawn()
        self._thread.start()

    def _spawn(self) -> None:
        if self.log_path is None:
            self.process = subprocess.Popen(self.command, env=self.env, start_new_session=True)
            return
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.command, env=self.env, start_new_session=True, stdout=log, stderr=subprocess.STDOUT
            )

    def _supervise(self) -> None:
        delay = 1.0
        while not self._stopping.is_set():
            process = self.process
            assert process is not None
            started = time.monotonic()
            code = process.wait()
            if self._stopping.is_set():
                return
            # A worker that ran a while before dying gets restarted quickly; a crash loop backs off.
            delay = (
                1.0 if time.monotonic() - started > 60 else min(delay * 2, WORKER_MAX_RESTART_DELAY_SECONDS)
            )
            click.echo(f"worker exited with code {code}; restarting in {delay:.0f}s", err=True)
            if self._stopping.wait(delay):
                return
            self._spawn()

    def stop(self, grace_seconds: float = WORKER_STOP_GRACE_SECONDS) -> int | None:
        """SIGTERM (the worker finishes its chunk), then SIGKILL after the grace period or a
        second Ctrl-C. Killing loses nothing: the shard resumes from its last checkpoint."""
        self._stopping.set()
        process = self.process
        if process is None or process.poll() is not None:
            return process.returncode if process else None
        process.send_signal(signal.SIGTERM)
        try:
            return process.wait(timeout=grace_seconds)
        except subprocess.TimeoutExpired:
            click.echo("the worker did not stop in time; killing it (its shard will resume)", err=True)
        except KeyboardInterrupt:
            click.echo("killing the worker now (its shard will resume)", err=True)
        process.kill()
        return process.wait()


def first_admin_token(settings: Settings) -> str | None:
    """On a database without tokens, create an admin token and return its secret (else None)."""
    from sqlalchemy import func, select

    from service.auth import issue_token
    from service.db.models import ApiToken
    from service.db.session import transaction

    assert settings.database_url
    with transaction(settings.database_url) as session:
        # One `up` at a time decides: concurrent first starts must not both mint a token.
        session.execute(select(func.pg_advisory_xact_lock(func.hashtext("hardlabel-first-admin-token"))))
        if session.scalar(select(func.count()).select_from(ApiToken)):
            return None
        _, secret = issue_token(session, role="admin", name="admin (created by hardlabel up)")
        return secret


@click.command("up")
@click.option("--host", default=None, help="Address to bind (default: HARDLABEL_HOST or 127.0.0.1).")
@click.option(
    "--port", type=click.IntRange(0, 65535), default=None, help="Port (default: HARDLABEL_PORT or 8000)."
)
@click.option("--no-worker", is_flag=True, help="Run only the database and the API.")
def up(host: str | None, port: int | None, no_worker: bool) -> None:
    """Database + API + one worker for every task kind, in one command (Ctrl-C stops everything)."""
    settings = resolve_database(get_settings(), command=None)
    sock = bind_socket(host or settings.host, settings.port if port is None else port)
    url = public_url(settings, sock)
    secret = first_admin_token(settings)
    click.echo(f"hardlabel is up: {url}  (review UI: {url}/ui · API docs: {url}/docs)")
    if secret:
        click.echo("admin token (shown once, keep it; more with `hardlabel token create`):")
        click.echo(f"  export HARDLABEL_TOKEN={secret}")
    else:
        click.echo(
            "tokens exist already: use yours, or create one with `hardlabel token create --role admin`"
        )
    sys.stdout.flush()
    server = build_server(settings)
    supervisor = None if no_worker else WorkerSupervisor(settings)
    try:
        with metrics_port(server, host or settings.host, settings.metrics_port) as metrics_url:
            if metrics_url:
                click.echo(f"metrics (no token) on {metrics_url}", err=True)
            if supervisor is not None:
                supervisor.start()
            run_server(server, sock)
    finally:
        if supervisor is not None:
            click.echo("stopping the worker (it finishes its current chunk)…", err=True)
            # A second Ctrl-C or SIGTERM while waiting: kill the worker at once.
            previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
            try:
                supervisor.stop()
            finally:
                signal.signal(signal.SIGTERM, previous)
        click.echo("stopped", err=True)


commands: list[click.Command] = [serve, up]
