"""`reset` (issue 10, item 7): never to the future, aligned like `run`, and a dry run."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import timedelta

import pytest

from archiver.cli import main
from archiver.windows import iso
from tests.e2e import ago, floor
from tests.inprocess import env, tx  # noqa: F401 (env: the fixture below)

pytestmark = pytest.mark.usefixtures("env")


def exported_until(capsys, influx_db: str) -> str | None:
    capsys.readouterr()
    assert main(["status", "--json"]) == 0
    [row] = json.loads(capsys.readouterr().out)
    assert row["target"] == f"{influx_db}.autogen"
    return row["exported_until"]


@pytest.mark.parametrize(
    "to",
    ["2030-01-01", iso(ago(minutes=-10)), str(int(ago(hours=-2).timestamp()))],
    ids=["date", "iso", "epoch"],
)
def test_reset_to_the_future_is_refused(to, influx_db, queries_dir, state_path, capsys):
    tx(influx_db).write(queries_dir)
    before = iso(floor(ago(hours=3), 60))
    assert main(["reset", "--query", "tx", "--to", before]) == 0
    capsys.readouterr()

    assert main(["reset", "--query", "tx", f"--to={to}"]) == 2

    [error] = capsys.readouterr().err.strip().splitlines()
    assert error.startswith(f"nr-archiver: error: --to {to} is in the future (")
    assert exported_until(capsys, influx_db) == before


def test_reset_aligns_to_the_interval_and_says_so(influx_db, queries_dir, capsys):
    replace(tx(influx_db), interval="1 hour", interval_seconds=3600).write(queries_dir)
    hour = floor(ago(hours=5), 3600)
    asked = hour + timedelta(minutes=7, seconds=30)
    capsys.readouterr()

    assert main(["reset", "--query", "tx", "--to", iso(asked)]) == 0

    assert capsys.readouterr().out == (
        f"tx → {influx_db}.autogen: checkpoint none → {iso(hour)} "
        f"(--to {iso(asked)} aligned down to the 1 hour interval)\n"
    )
    assert exported_until(capsys, influx_db) == iso(hour)


def test_reset_dry_run_prints_old_and_new_and_changes_nothing(
    influx_db, queries_dir, state_path, capsys
):
    tx(influx_db).write(queries_dir)
    assert main(["reset", "--query", "tx", "--dry-run", "--to", "3h"]) == 0
    assert "checkpoint none → " in capsys.readouterr().out
    assert not state_path.exists()  # not even created

    old, new = floor(ago(hours=3), 60), floor(ago(hours=1), 60)
    assert main(["reset", "--query", "tx", "--to", iso(old)]) == 0
    capsys.readouterr()
    assert main(["reset", "--query", "tx", "--to", iso(new), "--dry-run"]) == 0
    assert capsys.readouterr().out == (
        f"tx → {influx_db}.autogen: checkpoint {iso(old)} → {iso(new)} (dry run: nothing changed)\n"
    )
    assert exported_until(capsys, influx_db) == iso(old)
