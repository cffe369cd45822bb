"""docker-compose.yml is checked against the code, since no Docker engine runs in CI.

Every service must exist with the right build/image, every command must be a real console script and
a real `hardlabel` sub-command with real options, and every HARDLABEL_* variable a real setting.
"""

from __future__ import annotations

import shlex
import tomllib
from pathlib import Path
from typing import Any

import click
import pytest
import yaml

from service.cli import main as cli_main
from service.settings import Settings
from service.workers.registry import known_kinds

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES: dict[str, Any] = COMPOSE["services"]
GPU_SERVICES = ("worker-generate", "worker-train")


def _command(service: dict[str, Any]) -> list[str]:
    command = service.get("command")
    assert command, "every hardlabel service states its command"
    return shlex.split(command) if isinstance(command, str) else list(command)


def test_services_present() -> None:
    assert set(SERVICES) == {"postgres", "migrate", "api", "worker-generate", "worker-train"}


def test_postgres_has_healthcheck_and_volume() -> None:
    postgres = SERVICES["postgres"]
    assert "pg_isready" in " ".join(postgres["healthcheck"]["test"])
    assert any(v.endswith(":/var/lib/postgresql/data") for v in postgres["volumes"])
    assert "pgdata" in COMPOSE["volumes"]


def test_startup_order() -> None:
    assert SERVICES["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    for name in ("api", *GPU_SERVICES):
        assert SERVICES[name]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"


@pytest.mark.parametrize("name", GPU_SERVICES)
def test_gpu_workers_reserve_gpus_and_cache_models(name: str) -> None:
    service = SERVICES[name]
    devices = service["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia"
    assert "gpu" in devices[0]["capabilities"]
    assert any(v.startswith("models:") for v in service["volumes"])
    assert "container_name" not in service, "a fixed name would forbid --scale"
    assert "ports" not in service


def test_build_contexts_and_flavors() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    flavors = {
        name: s["build"]["args"]["FLAVOR"] for name, s in SERVICES.items() if isinstance(s.get("build"), dict)
    }
    assert flavors == {"migrate": "api", "worker-generate": "gpu", "worker-train": "gpu"}
    for flavor in set(flavors.values()):
        assert f"{flavor})" in dockerfile, f"Dockerfile handles FLAVOR={flavor}"
    for name, service in SERVICES.items():
        if name == "postgres":
            continue
        assert service["image"].startswith("hardlabel:"), name
        build = service.get("build")
        if build:
            assert (ROOT / build["context"] / "Dockerfile").exists()
    # The api service reuses the image the migrate service builds.
    assert SERVICES["api"]["image"] == SERVICES["migrate"]["image"]


def _check_click_args(command: click.Command, args: list[str], where: str) -> None:
    if isinstance(command, click.Group):
        assert args, f"{where}: a sub-command is required"
        sub = command.get_command(click.Context(command), args[0])
        assert sub is not None, f"{where}: unknown sub-command {args[0]!r}"
        _check_click_args(sub, args[1:], f"{where} {args[0]}")
        return
    options = {opt for param in command.params for opt in getattr(param, "opts", [])}
    for arg in args:
        if arg.startswith("--"):
            assert arg.split("=")[0] in options, f"{where}: unknown option {arg}"
    # Parse for real: wrong values or missing arguments fail here.
    command.make_context(where, list(args), resilient_parsing=False)


@pytest.mark.parametrize("name", ["migrate", "api", *GPU_SERVICES])
def test_commands_exist(name: str) -> None:
    argv = _command(SERVICES[name])
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    if argv[0] == "alembic":
        config = argv[argv.index("-c") + 1]
        # The image copies alembic.ini and migrations/ to /app (see Dockerfile).
        assert config == "/app/alembic.ini"
        assert "COPY alembic.ini /app/alembic.ini" in (ROOT / "Dockerfile").read_text()
        assert argv[-2:] == ["upgrade", "head"]
        return
    assert argv[0] in scripts, f"{argv[0]} is not a console script of the project"
    _check_click_args(cli_main, argv[1:], argv[0])
    if "--kinds" in argv:  # checked when the worker starts, not by click: check it here
        kinds = argv[argv.index("--kinds") + 1].split(",")
        assert set(kinds) <= set(known_kinds()), f"{name}: {kinds} names a task kind no worker has"


def test_default_worker_kinds_are_real() -> None:
    assert set(Settings().worker_kinds.split(",")) == set(known_kinds())


def _environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    return dict(env) if isinstance(env, dict) else dict(item.split("=", 1) for item in env)


@pytest.mark.parametrize("name", ["migrate", "api", *GPU_SERVICES])
def test_environment_names_real_settings(name: str) -> None:
    env = _environment(SERVICES[name])
    fields = {f"HARDLABEL_{field.upper()}" for field in Settings.model_fields}
    hardlabel_vars = {key for key in env if key.startswith("HARDLABEL_")}
    assert "HARDLABEL_DATABASE_URL" in hardlabel_vars
    assert hardlabel_vars <= fields, f"not settings: {sorted(hardlabel_vars - fields)}"
    assert "@postgres:5432/" in env["HARDLABEL_DATABASE_URL"], "workers and api reach the compose postgres"
