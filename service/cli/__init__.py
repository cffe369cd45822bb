"""The `hardlabel` command line. Each sub-command lives in its own module of this package."""

from __future__ import annotations

import importlib

import click

# Modules that define sub-commands; each exposes `commands: list[click.Command]`.
COMMAND_MODULES: list[str] = [
    "worker",
    "generate",
    "tiny_model",
    "models",
    "train",
    "serve",
    "jobs",
    "runs",
    "tokens",
    "export",
    "curation",
    "demo",
]


class CliError(click.ClickException):
    """A user error: printed as one line (`error: ...`), exit code 2, no traceback."""

    exit_code = 2

    def show(self, file: object = None) -> None:
        click.echo(f"error: {self.format_message()}", err=True)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="hardlabel")
def main() -> None:
    """hardlabel: hard-label distillation of LLMs (teacher samples → curation → student SFT)."""


for _name in COMMAND_MODULES:
    for _command in importlib.import_module(f"service.cli.{_name}").commands:
        main.add_command(_command)
