"""`pip install .` gives a working archiver: the wheel carries the Alembic migrations.

The wheel is built once for this module from a copy of what it is made of (so the checkout gets
no build/ folder), installed into a fresh venv (its dependencies come from this interpreter's
site-packages), and the venv's `nr-archiver` runs from a folder outside the checkout with no
PYTHONPATH: `db upgrade`, `validate` and a real `run` from the fake NerdGraph server into influxd.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import venv
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from archiver import app, settings
from archiver.state import migrate
from archiver.state.migrate import migrations_dir
from tests.e2e import REPO, ago, cli_env, floor, parse_iso
from tests.faults import assert_exact, small_spec

SOURCES = ("pyproject.toml", "README.md", "archiver", "migrations")


@dataclass(frozen=True)
class Installed:
    wheel: Path
    venv: Path

    @property
    def bin(self) -> Path:
        return self.venv / "bin"

    def run(self, *args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(self.bin / args[0]), *args[1:]],
            env=env,
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=120,
        )


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    root = tmp_path_factory.mktemp("install")
    source = root / "source"
    source.mkdir()
    for name in SOURCES:
        if (REPO / name).is_dir():
            ignore = shutil.ignore_patterns("__pycache__", "*.py[co]")
            shutil.copytree(REPO / name, source / name, ignore=ignore)
        else:
            shutil.copy2(REPO / name, source / name)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    # Not from the checkout, nor with it on PYTHONPATH: pip would take a stray
    # nr_archiver.egg-info there for an installed nr-archiver and install nothing.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    build = subprocess.run(
        [*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(root / "dist"), str(source)],
        capture_output=True,
        text=True,
        env=env,
        cwd=root,
        timeout=300,
    )
    assert build.returncode == 0, build.stdout + build.stderr
    (wheel,) = (root / "dist").glob("nr_archiver-*.whl")

    environment = root / "venv"
    venv.create(environment, system_site_packages=True, with_pip=False)
    python = environment / "bin" / "python"
    install = subprocess.run(
        [*pip, "--python", str(python), "install", "--no-deps", "--no-index", str(wheel)],
        capture_output=True,
        text=True,
        env=env,
        cwd=root,
        timeout=300,
    )
    assert install.returncode == 0, install.stdout + install.stderr
    return Installed(wheel, environment)


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A working folder outside the checkout."""
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    assert REPO not in folder.parents
    return folder


def plain_env(env: dict[str, str], installed: Installed) -> dict[str, str]:
    """No PYTHONPATH: only the venv can provide `archiver`."""
    env = {k: v for k, v in env.items() if k != "PYTHONPATH"}
    env["PATH"] = f"{installed.bin}{os.pathsep}{os.environ.get('PATH', '')}"
    return env


def test_the_wheel_holds_the_migrations_as_package_data(installed):
    names = set(zipfile.ZipFile(installed.wheel).namelist())
    expected = {
        f"archiver/migrations/{path.relative_to(REPO / 'migrations').as_posix()}"
        for path in (REPO / "migrations").rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    }
    assert {"archiver/migrations/env.py", "archiver/migrations/script.py.mako"} <= expected
    assert expected <= names, sorted(expected - names)
    assert not [name for name in names if name.startswith("migrations/")], "a top-level package"


def test_the_wheel_holds_every_module_of_the_package(installed):
    """pyproject.toml lists the packages by name: a new subpackage must not be left out."""
    names = set(zipfile.ZipFile(installed.wheel).namelist())
    modules = {
        path.relative_to(REPO).as_posix()
        for path in (REPO / "archiver").rglob("*.py")
        if "__pycache__" not in path.parts
    }
    assert modules <= names, f"add to [tool.setuptools] packages: {sorted(modules - names)}"


def test_archiver_is_imported_from_the_venv_not_the_checkout(installed, outside):
    probe = "import archiver.state.migrate as s; print(s.__file__); print(s.migrations_dir())"
    env = plain_env({"PATH": os.environ["PATH"], "HOME": str(outside)}, installed)
    result = installed.run("python", "-c", probe, env=env, cwd=outside)
    assert result.returncode == 0, result.stderr
    module, migrations = map(Path, result.stdout.split())
    assert installed.venv in module.parents, module
    assert migrations == module.parents[1] / "migrations"
    assert (migrations / "versions").is_dir()


def test_help_works_from_the_venv(installed, outside):
    env = plain_env({"PATH": os.environ["PATH"], "HOME": str(outside)}, installed)
    result = installed.run("nr-archiver", "--help", env=env, cwd=outside)
    assert result.returncode == 0, result.stderr
    assert "usage: nr-archiver" in result.stdout
    assert "db" in result.stdout and "run" in result.stdout


def test_upgrade_validate_and_a_real_run_from_the_installed_wheel(
    installed, outside, fake_nr, influxd, influx_db
):
    queries = outside / "queries"
    queries.mkdir()
    start = floor(ago(hours=2), 300)
    spec = small_spec("logins", influx_db, start)
    spec.write(queries)
    env = plain_env(
        cli_env(
            nerdgraph_url=fake_nr.url,
            api_key=fake_nr.api_key,
            influx_url=influxd.url,
            db_url=f"sqlite:///{outside / 'state.db'}",
            queries=queries,
        ),
        installed,
    )

    upgrade = installed.run("nr-archiver", "db", "upgrade", env=env, cwd=outside)
    assert upgrade.returncode == 0, upgrade.stdout + upgrade.stderr
    assert "latest schema" in upgrade.stdout

    validate = installed.run("nr-archiver", "validate", env=env, cwd=outside)
    assert validate.returncode == 0, validate.stdout + validate.stderr

    run = installed.run("nr-archiver", "run", env=env, cwd=outside)
    assert run.returncode == 0, run.stdout + run.stderr

    status = installed.run("nr-archiver", "status", "--json", env=env, cwd=outside)
    assert status.returncode == 0, status.stderr
    (row,) = json.loads(status.stdout)
    assert_exact(influxd, spec, start, parse_iso(row["exported_until"]))


def test_a_checkout_uses_its_top_level_migrations(monkeypatch):
    monkeypatch.setattr(migrate, "_configured_migrations", None)
    app.use_state_of(settings.load({}))
    assert migrations_dir() == REPO / "migrations"


def test_archiver_migrations_dir_still_overrides(monkeypatch, tmp_path):
    monkeypatch.setattr(migrate, "_configured_migrations", None)
    app.use_state_of(settings.load({"ARCHIVER_MIGRATIONS_DIR": str(tmp_path)}))
    assert migrations_dir() == tmp_path
