"""Start-up: commands that need no state database import neither SQLAlchemy nor Alembic.

A fresh interpreter is the only way to see what a command imports, hence the subprocess.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
HEAVY = ("sqlalchemy", "alembic", "pydantic", "requests", "tenacity")
PROBE = """
import contextlib, io, sys
from archiver import cli
with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
    try:
        cli.main(sys.argv[1:])
    except SystemExit:
        pass
print(" ".join(sorted({name.split(".")[0] for name in sys.modules})))
"""


@pytest.mark.parametrize("argv", [["--help"], ["health"], ["run", "--help"]], ids=" ".join)
def test_command_imports_no_database_or_http_library(argv, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO), "ARCHIVER_QUERIES_DIR": str(tmp_path)}
    probe = subprocess.run(
        [sys.executable, "-c", PROBE, *argv],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60, check=True,
    )  # fmt: skip
    imported = set(probe.stdout.split())
    assert "archiver" in imported
    assert imported.isdisjoint(HEAVY), sorted(imported & set(HEAVY))
