"""`status` tells the truth (issue 10, items 5, 6, 14): in process, real influxd and SQLite."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from archiver import status
from archiver.cli import main
from archiver.sinks import choose
from archiver.state.store import State
from archiver.windows import iso
from tests.e2e import ago, floor
from tests.inprocess import env, tx  # noqa: F401 (env: the fixture below)

pytestmark = pytest.mark.usefixtures("env")


def status_json(capsys) -> dict[tuple[str, str], dict]:
    capsys.readouterr()
    assert main(["status", "--json"]) == 0
    return {(row["query"], row["target"]): row for row in json.loads(capsys.readouterr().out)}


def status_text(capsys) -> str:
    capsys.readouterr()
    assert main(["status"]) == 0
    return capsys.readouterr().out


def test_status_shows_an_influxdb_outage(influx_db, queries_dir, monkeypatch, capsys):
    tx(influx_db, start=iso(floor(ago(hours=1), 60))).write(queries_dir)
    assert main(["run"]) == 0
    monkeypatch.setenv("INFLUX_URL", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setitem(choose.open_sink.__kwdefaults__, "sleep", lambda seconds: None)

    assert main(["run"]) == 1

    row = status_json(capsys)[("tx", f"{influx_db}.autogen")]
    assert row["last_status"] == "failed"
    assert row["last_error"].startswith("InfluxDB is unreachable, nothing was exported")
    assert row["exported_until"] is not None  # the checkpoint of the good run stays
    assert row["last_pass"]["exit_code"] == 1
    assert row["last_pass"]["error"] == row["last_error"]
    last = status_text(capsys).splitlines()[-1]
    assert last.startswith("last pass: ")
    assert "(incremental) failed (exit 1): InfluxDB is unreachable" in last


def test_status_shows_a_refused_key(fake_nr, influx_db, queries_dir, monkeypatch, capsys):
    tx(influx_db).write(queries_dir)
    monkeypatch.setenv("NEW_RELIC_API_KEY", "NRAK-REVOKEDREVOKEDREVOKED")
    assert main(["run"]) == 2
    row = status_json(capsys)[("tx", f"{influx_db}.autogen")]
    assert row["last_status"] == "failed" and "NEW_RELIC_API_KEY" in row["last_error"]
    assert row["last_pass"]["exit_code"] == 2
    assert "NEW_RELIC_API_KEY" in row["last_pass"]["error"]
    assert "NRAK-REVOKEDREVOKEDREVOKED" not in status_text(capsys)


def test_status_shows_a_broken_queries_folder(queries_dir, capsys):
    (queries_dir / "broken.yaml").write_text("nrql: [unclosed\n")
    assert main(["run"]) == 1
    text = status_text(capsys)
    assert "no query has run yet" in text
    assert text.splitlines()[-1].startswith("last pass: ")
    assert "failed (exit 1): no valid query file to run: " in text and "broken.yaml" in text


def test_status_shows_a_missing_queries_folder_run(queries_dir, monkeypatch, capsys):
    monkeypatch.setenv("ARCHIVER_QUERIES_DIR", str(queries_dir / "nope"))
    assert main(["run"]) == 2
    assert "(incremental) failed (exit 2): queries folder" in status_text(capsys)


def test_a_backfill_is_not_an_incremental_result(fake_nr, influx_db, queries_dir, capsys):
    tx(influx_db).write(queries_dir)
    since = floor(ago(hours=30), 3600)
    until = since + timedelta(hours=3)
    assert main(["run", "--since", iso(since), "--until", iso(until)]) == 0

    row = status_json(capsys)[("tx", f"{influx_db}.autogen")]
    assert (row["kind"], row["exported_until"], row["last_status"]) == ("incremental", None, None)
    [backfill] = row["backfills"]
    assert backfill["state"] == "done" and backfill["percent"] == 100
    assert (backfill["since"], backfill["until"]) == (iso(since), iso(until))
    assert (backfill["requested_since"], backfill["requested_until"]) == (iso(since), iso(until))
    assert backfill["resumable"] is False and backfill["last_status"] == "ok"
    lines = status_text(capsys).splitlines()
    assert lines[0].split()[:3] == ["QUERY", "TARGET", "KIND"]
    incremental, done = lines[1].split(), lines[2].split()
    assert incremental[2:4] == ["incremental", "never"] and incremental[-1] == "-"
    assert done[2:4] == ["backfill", "100%"] and done[-1] == "done"


def test_a_partial_backfill_shows_how_far_and_how_to_resume(
    fake_nr, influx_db, queries_dir, capsys
):
    tx(influx_db).write(queries_dir)
    since = floor(ago(hours=30), 3600)
    until = since + timedelta(hours=4)
    # The first window (before the facet count is known, LIMIT MAX): 4 buckets; fail the next.
    fake_nr.reject_nrql(f"SINCE {int((since + timedelta(minutes=4)).timestamp() * 1000)} ")
    assert main(["run", "--since", iso(since), "--until", iso(until)]) == 1

    [backfill] = status_json(capsys)[("tx", f"{influx_db}.autogen")]["backfills"]
    assert backfill["state"] == "partial" and backfill["resumable"] is True
    assert (backfill["done_seconds"], backfill["total_seconds"], backfill["percent"]) == (
        4 * 60,
        4 * 3600,
        1,
    )
    assert backfill["last_status"] == "failed" and "NRQL Syntax Error" in backfill["last_error"]
    command = f"nr-archiver run --query tx --since {iso(since)} --until {iso(until)}"
    assert backfill["resume_command"] == command
    text = status_text(capsys)
    assert f"resume tx → {influx_db}.autogen: {command}" in text
    assert "1% of " in text and " partial (failed) " in text
    assert text.splitlines()[-1].endswith("(backfill) failed (exit 1): see the failed rows above")


@pytest.mark.parametrize("folder", ["missing", "empty"])
def test_status_prints_the_state_whatever_the_queries_folder(
    folder, influx_db, queries_dir, monkeypatch, capsys
):
    tx(influx_db, start=iso(floor(ago(hours=1), 60))).write(queries_dir)
    assert main(["run"]) == 0
    (queries_dir / "tx.yaml").unlink()
    if folder == "missing":
        queries_dir.rmdir()
    capsys.readouterr()

    assert main(["status"]) == 0
    out, err = capsys.readouterr()
    assert f"tx (no file)  {influx_db}.autogen  incremental" in out
    [warning] = err.strip().splitlines()
    expected = "does not exist" if folder == "missing" else "has no *.yaml files"
    assert warning.startswith("nr-archiver: warning: queries folder") and expected in warning


def test_a_backfill_held_by_a_live_process_is_running(state_path):
    now = datetime.now(UTC).replace(microsecond=0)
    state = State.open(f"sqlite:///{state_path}")
    run = state.start_run("backfill", now)
    export = state.start_export(run, "q", "t", now)
    holder = "another-host:1:abcdef01"  # not this host: alive until its lease expires
    rng = (now - timedelta(hours=2), now)
    backfill = state.open_backfill(
        "q", "t", ("2h", "now"), rng, holder=holder, export_id=export, now=now
    )
    state.record_window(
        export, "q", "t", rng[0], rng[0] + timedelta(hours=1), 1, now, backfill_id=backfill
    )
    assert state.acquire_lease("q", "t", holder, timedelta(minutes=10), now)

    [row] = status.collect(state, [], now)
    [running] = row.backfills
    assert (running.state, running.percent, running.resumable) == ("running", 50, True)
    later = now + timedelta(minutes=11)  # the lease expired: its holder is gone
    [stale] = status.collect(state, [], later)[0].backfills
    assert stale.state == "partial"
    assert stale.resume_command == "nr-archiver run --query q --since 2h"


def test_status_shows_a_query_without_an_account(influx_db, queries_dir, monkeypatch, capsys):
    tx(influx_db).write(queries_dir)
    monkeypatch.delenv("NEW_RELIC_ACCOUNT_ID")
    assert main(["run"]) == 2
    row = status_json(capsys)[("tx", f"{influx_db}.autogen")]
    assert row["last_status"] == "failed" and "NEW_RELIC_ACCOUNT_ID" in row["last_error"]
    assert row["last_pass"]["exit_code"] == 2
