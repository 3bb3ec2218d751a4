"""The docs keep up with the code: every command has help text and a README section."""

import re
from pathlib import Path

import pytest

from archiver.cli import build_parser

README = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")
HEADINGS = re.findall(r"^###? (.+)$", README, flags=re.MULTILINE)


def subcommands():
    parser = build_parser()
    action = next(a for a in parser._actions if a.dest == "command")
    return action.choices


@pytest.mark.parametrize("name", sorted(subcommands()))
def test_every_command_has_help_and_a_readme_section(name):
    command = next(a for a in build_parser()._actions if a.dest == "command")
    assert {a.dest: a.help for a in command._choices_actions}.get(name), f"{name} has no help"
    assert any(name in heading.split() for heading in HEADINGS), f"no README heading for {name}"
    assert f"nr-archiver {name}" in README


def variables_the_code_reads() -> set[str]:
    code = "".join(p.read_text() for p in (Path(__file__).parent.parent / "archiver").glob("*.py"))
    return set(re.findall(r'"((?:NEW_RELIC|INFLUX|ARCHIVER)_[A-Z_]+)"', code))


@pytest.mark.parametrize("variable", sorted(variables_the_code_reads()))
def test_every_environment_variable_the_code_reads_is_documented(variable):
    assert f"`{variable}`" in README


def test_quick_start_is_the_two_commands():
    quick_start = README.split("## Quick start", 1)[1].split("##", 1)[0]
    assert "make demo" in quick_start and "make test" in quick_start
