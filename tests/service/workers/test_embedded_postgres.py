"""The embedded default database: start, reuse, migrate, recover from kills, never loosen permissions."""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from sqlalchemy import create_engine, text

from service.embedded_db import (
    HANDLES_FILE,
    EmbeddedPostgresError,
    ensure_database,
    remove_embedded_postgres,
    start_embedded_postgres,
    stop_embedded_postgres,
)
from service.settings import Settings
from tests.service.workers.worker_factories import ROOT


@pytest.fixture(scope="module")
def state_root() -> Iterator[Path]:
    """A state folder like `.hardlabel/` (not under pytest's 0700 tmp: as root that would be refused)."""
    root = ROOT / ".tmp" / f"embedded-{uuid.uuid4().hex[:8]}"
    root.mkdir(parents=True)
    yield root
    for config in list(root.rglob("postgresql.conf")):  # every data folder the tests made
        remove_embedded_postgres(config.parent)
    shutil.rmtree(root, ignore_errors=True)


def server_pid(data_dir: Path) -> int | None:
    try:
        return int((data_dir / "postmaster.pid").read_text().splitlines()[0])
    except FileNotFoundError:
        return None


def is_running(pid: int) -> bool:
    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)  # init may reap it late
    except psutil.NoSuchProcess:
        return False


def answers(url: str) -> bool:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return bool(conn.execute(text("SELECT 1")).scalar_one() == 1)
    finally:
        engine.dispose()


def in_subprocess(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_ensure_database_starts_migrates_and_reuses(state_root: Path) -> None:
    settings = Settings(database_url=None, home=state_root / "home")
    url = ensure_database(settings)
    assert "host=" in url  # a Unix socket: the embedded server listens on no TCP port
    engine = create_engine(url)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM alembic_version")).scalar_one() == 1
        assert conn.execute(text("SELECT to_regclass('task') IS NOT NULL")).scalar_one()
    engine.dispose()
    pid = server_pid(state_root / "home" / "postgres")
    assert ensure_database(settings) == url  # reused: same server, same database
    assert server_pid(state_root / "home" / "postgres") == pid
    data = state_root / "home" / "postgres"
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    assert runtime is not None
    assert Path(runtime).exists()


def test_an_orphaned_server_is_reused_then_stopped_by_its_last_user(state_root: Path) -> None:
    data_dir = state_root / "orphan"
    # A process starts the server and is killed: the server runs on, its dead PID stays registered.
    killed = in_subprocess(
        f"""
        import os, signal
        from pathlib import Path
        from service.embedded_db import start_embedded_postgres
        print(start_embedded_postgres(Path({str(data_dir)!r})), flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    url = killed.stdout.strip()
    orphan = server_pid(data_dir)
    assert orphan is not None
    assert psutil.pid_exists(orphan)
    dead = json.loads((data_dir / HANDLES_FILE).read_text())
    assert len(dead) == 1
    assert not psutil.pid_exists(dead[0])

    # The next user reuses the orphan, prunes the dead PID, and (as its last user) stops it at exit.
    reused = in_subprocess(
        f"""
        from pathlib import Path
        from service.embedded_db import start_embedded_postgres
        print(start_embedded_postgres(Path({str(data_dir)!r})))
        """
    )
    assert reused.returncode == 0, reused.stderr
    assert reused.stdout.strip() == url
    assert server_pid(data_dir) is None
    assert not is_running(orphan)
    assert json.loads((data_dir / HANDLES_FILE).read_text()) == []


def test_a_killed_server_is_started_again(state_root: Path) -> None:
    data_dir = state_root / "killed"
    url = start_embedded_postgres(data_dir, stop_at_exit=False)
    pid = server_pid(data_dir)
    assert pid is not None
    process = psutil.Process(pid)
    process.kill()
    process.wait(timeout=10)
    assert (data_dir / "postmaster.pid").exists()  # stale
    assert start_embedded_postgres(data_dir, stop_at_exit=False) == url
    assert server_pid(data_dir) not in (None, pid)
    assert answers(url)
    stop_embedded_postgres(data_dir)
    assert server_pid(data_dir) is None


def test_permissions_outside_the_state_folder_are_never_loosened(state_root: Path) -> None:
    private = state_root / "private"
    private.mkdir(mode=0o700)
    private.chmod(0o700)
    data_dir = private / "home" / "postgres"
    before = {folder: folder.stat().st_mode for folder in data_dir.parents if folder.exists()}
    if os.geteuid() == 0:
        # As root the server runs as an unprivileged user, which cannot enter a 0700 folder.
        with pytest.raises(EmbeddedPostgresError, match=r"cannot enter .*private.*HARDLABEL_HOME"):
            start_embedded_postgres(data_dir)
        assert not data_dir.parent.exists()  # refused before creating anything
    else:
        url = start_embedded_postgres(data_dir, stop_at_exit=False)
        assert answers(url)
        stop_embedded_postgres(data_dir)
    assert stat.S_IMODE(private.stat().st_mode) == 0o700
    assert {folder: folder.stat().st_mode for folder in before} == before
