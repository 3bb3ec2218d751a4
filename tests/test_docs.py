"""The docs keep up with the code: `--help` and README agree.

Everything is read from what `nr-archiver ... --help` prints (argparse's public output), never
from argparse's internals.
"""

import contextlib
import io
import re
from pathlib import Path

import pytest

from archiver.arguments import build_parser

ROOT = Path(__file__).parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")
HEADINGS = re.findall(r"^###? (.+)$", README, flags=re.MULTILINE)


@pytest.fixture(autouse=True)
def wide_help(monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")  # one line per entry is easier to read back


def help_of(*command: str) -> str:
    """What `nr-archiver COMMAND... --help` prints."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args([*command, "--help"])
    assert exit_info.value.code == 0
    return out.getvalue()


def entries(text: str, section: str, indent: int = 2) -> dict[str, str]:
    """{invocation: help} of one section of a help text (`options:`, `positional arguments:`)."""
    if f"\n{section}\n" not in text:
        return {}
    body = text.split(f"\n{section}\n", 1)[1].split("\n\n", 1)[0]
    found: dict[str, str] = {}
    current = None
    for line in body.splitlines():
        depth = len(line) - len(line.lstrip(" "))
        if depth == indent:
            invocation, _, help_text = line.strip().partition("  ")
            current = invocation
            found[current] = help_text.strip()
        elif depth > indent and current is not None:
            found[current] = f"{found[current]} {line.strip()}".strip()
    return found


def description_of(text: str) -> str:
    """The paragraph between the usage and the first section."""
    paragraph = text.split("\n\n")[1].strip()
    return "" if paragraph.splitlines()[0].endswith(":") else paragraph


def subcommands(*command: str) -> dict[str, str]:
    """{name: one-line help} of the commands (or actions) `nr-archiver COMMAND... --help` lists."""
    return entries(help_of(*command), "positional arguments:", indent=4)


COMMANDS = sorted(subcommands())
COMMAND_PATHS = [(name,) for name in COMMANDS] + [
    (name, action) for name in COMMANDS for action in subcommands(name)
]


def test_the_commands_are_read_from_the_help():
    assert {"run", "validate", "status", "reset", "db", "schedule", "health"} <= set(COMMANDS)
    assert list(subcommands("db")) == ["upgrade"]


@pytest.mark.parametrize("name", COMMANDS)
def test_every_command_has_help_and_a_readme_section(name):
    assert subcommands()[name], f"{name} has no one-line help in nr-archiver --help"
    assert any(name in heading.split() for heading in HEADINGS), f"no README heading for {name}"
    assert f"nr-archiver {name}" in README


@pytest.mark.parametrize("path", COMMAND_PATHS, ids=" ".join)
def test_every_command_has_a_description_and_every_argument_help(path):
    text = help_of(*path)
    assert description_of(text), f"nr-archiver {' '.join(path)} --help has no description"
    arguments = {**entries(text, "positional arguments:"), **entries(text, "options:")}
    assert arguments
    undocumented = [name for name, help_text in arguments.items() if not help_text]
    assert not undocumented, f"no help for {undocumented} in nr-archiver {' '.join(path)}"


def options_in_help() -> list[str]:
    options = set()
    for path in [(), *COMMAND_PATHS]:
        for invocation in entries(help_of(*path), "options:"):
            options.update(re.findall(r"--[a-z][a-z0-9-]*", invocation))
    return sorted(options - {"--help"})


@pytest.mark.parametrize("option", options_in_help())
def test_every_option_in_help_is_in_the_readme(option):
    assert re.search(rf"`[^`\n]*{option}\b", README), f"README does not mention `{option}`"


def readme_variables() -> set[str]:
    table = README.split("## Configuration", 1)[1].split("\n\n", 2)[1]
    return set(re.findall(r"^\| `([A-Z_]+)`", table, flags=re.MULTILINE)) | set(
        re.findall(r"^\| `[A-Z_]+`, `([A-Z_]+)`", table, flags=re.MULTILINE)
    )


def help_variables() -> set[str]:
    epilog = help_of().split("environment variables", 1)[1]
    return set(re.findall(r"^  ([A-Z][A-Z0-9_]+)\s", epilog, flags=re.MULTILINE))


def test_help_lists_the_environment_variables_of_the_readme():
    assert "NEW_RELIC_API_KEY" in readme_variables()
    assert help_variables() == readme_variables()


def test_help_names_the_options_that_replace_variables():
    text = help_of()
    assert "ARCHIVER_QUERIES_DIR" in entries(text, "options:")["--queries-dir DIR"]
    assert "ARCHIVER_DB_URL" in entries(text, "options:")["--db-url URL"]


def variables_the_code_reads() -> set[str]:
    code = "".join(p.read_text() for p in (ROOT / "archiver").glob("*.py"))
    return set(re.findall(r'"((?:NEW_RELIC|INFLUX|ARCHIVER)_[A-Z_]+)"', code))


@pytest.mark.parametrize("variable", sorted(variables_the_code_reads()))
def test_every_environment_variable_the_code_reads_is_documented(variable):
    assert f"`{variable}`" in README


def test_quick_start_is_the_two_commands():
    quick_start = README.split("## Quick start", 1)[1].split("##", 1)[0]
    assert "make demo" in quick_start and "make test" in quick_start
