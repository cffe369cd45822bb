"""The README's promises: its two commands, and a configuration table that matches the settings."""

from __future__ import annotations

import re
from pathlib import Path

from service.settings import settings_reference_markdown

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def test_readme_shows_the_two_commands() -> None:
    assert "make demo" in README
    assert "make test" in README


def test_configuration_table_is_generated_from_settings() -> None:
    match = re.search(r"<!-- settings:begin -->\n(.*?)\n<!-- settings:end -->", README, flags=re.S)
    assert match, "README has the generated settings section"
    assert match.group(1) == settings_reference_markdown(), "run `make docs` to refresh the README table"


def test_readme_screenshots_exist() -> None:
    for image in re.findall(r"\]\((docs/img/[^)]+)\)", README):
        assert (Path(__file__).resolve().parents[2] / image).is_file(), image


def _bash_blocks() -> list[str]:
    return re.findall(r"```bash\n(.*?)```", README, flags=re.S)


def test_every_hardlabel_command_in_the_readme_exists() -> None:
    import click

    from service.cli import main

    seen = set()
    for block in _bash_blocks():
        for words in re.findall(
            r"(?:^|\$\(|&& )hardlabel ((?:[a-z][a-z-]*)(?: [a-z][a-z-]*)?)", block, flags=re.M
        ):
            name, *rest = words.split()
            command = main.commands.get(name)
            assert command is not None, f"`hardlabel {name}` in README is not a command"
            if isinstance(command, click.Group) and rest:
                assert rest[0] in command.commands, f"`hardlabel {words}` in README is not a command"
            seen.add(name)
    assert {"models", "up", "submit", "filter", "demo"} <= seen


def test_files_the_readme_points_to_exist() -> None:
    root = Path(__file__).resolve().parents[2]
    paths = set(re.findall(r"\b(examples/[\w./-]+\.(?:yaml|json|jsonl))", README))
    assert "examples/smollm2_addition.yaml" in paths
    for path in paths:
        assert (root / path).is_file(), path


def test_the_tour_runs_on_the_real_model() -> None:
    tour = README[README.index("## A 5-minute tour") : README.index("## Models")]
    assert "hardlabel models pull smollm2-135m-instruct" in tour
    assert "hardlabel models prune" in tour
    assert '"type": "verifier"' in tour
    assert "tiny-model" not in tour, "the tiny random model is for unit tests, not the tour"
