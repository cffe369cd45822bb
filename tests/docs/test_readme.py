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
