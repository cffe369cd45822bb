"""`make test` brings what the tests need: Debian's Chromium for the UI tests, or a one-line instruction."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MAKE = shutil.which("make") or "/usr/bin/make"


def test_make_test_depends_on_the_browser_target() -> None:
    plan = subprocess.run([MAKE, "-n", "-p", "test"], cwd=ROOT, capture_output=True, text=True, check=False)
    rule = next(line for line in plan.stdout.splitlines() if line.startswith("test:"))
    assert "browser" in rule.split(":", 1)[1].split()


def test_without_chromium_and_without_root_it_says_what_to_install(tmp_path: Path) -> None:
    # A PATH with the shell's basic tools but neither chromium nor apt-get, and an `id` of a normal user.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("echo", "test", "["):
        found = shutil.which(tool)
        if found:
            (bin_dir / tool).symlink_to(found)
    (bin_dir / "id").write_text("#!/bin/sh\necho 1000\n")
    (bin_dir / "id").chmod(0o755)
    env = {**os.environ, "PATH": str(bin_dir)}
    done = subprocess.run(
        [MAKE, "-s", "browser"], cwd=ROOT, env=env, capture_output=True, text=True, check=False
    )
    assert done.returncode != 0
    assert done.stderr.splitlines()[0] == (
        "make test: the UI tests need Chromium at /usr/bin/chromium: run 'sudo apt-get install chromium'"
    )


def test_with_chromium_present_it_installs_nothing(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "chromium").write_text("#!/bin/sh\nexit 0\n")
    (bin_dir / "chromium").chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:/usr/bin:/bin"}
    done = subprocess.run(
        [MAKE, "-s", "browser"], cwd=ROOT, env=env, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0
    assert done.stdout == ""
    assert done.stderr == ""
