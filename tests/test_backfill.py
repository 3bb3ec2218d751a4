"""Backfills, several targets, retention-aware ranges, lookback, reset and dry runs.

The CLI (in this process; a real one where it is killed) against the fake NerdGraph server
and a real influxd, as in test_end_to_end.
"""

from __future__ import annotations

import signal
from dataclasses import replace
from datetime import timedelta

import pytest

from archiver.state.store import State
from archiver.windows import iso
from fakes import events
from tests.e2e import (
    Item,
    Spec,
    actual_points,
    ago,
    expected_points,
    floor,
    parse_iso,
)
from tests.faults import wait_until
from tests.inprocess import InProcessCli


@pytest.fixture
def cli(inprocess_cli: InProcessCli) -> InProcessCli:
    """The CLI in this process, where a process of its own adds nothing (`cli.popen` still
    starts one)."""
    return inprocess_cli


def tx_spec(database: str, **changes) -> Spec:
    spec = Spec(
        name="tx",
        nrql="SELECT average(duration), count(*) FROM Transaction FACET appName, host",
        event_type="Transaction",
        facets=("appName", "host"),
        items=(Item("average", "duration", "average.duration"), Item("count", None, "count")),
        measurement="nr_tx",
        interval="1 minute",
        interval_seconds=60,
        database=database,
    )
    return replace(spec, **changes)


def logins_spec(database: str, **changes) -> Spec:
    spec = Spec(
        name="logins",
        nrql="SELECT count(*) AS logins FROM Login FACET provider",
        event_type="Login",
        facets=("provider",),
        items=(Item("count", None, "logins"),),
        measurement="nr_logins",
        interval="1 hour",
        interval_seconds=3600,
        database=database,
    )
    return replace(spec, **changes)


def ok(result) -> str:
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    return output


def test_backfill_archives_the_range_and_leaves_the_checkpoint_alone(
    cli, influxd, influx_db, queries_dir
):
    incremental_start = floor(ago(hours=1), 60)
    spec = tx_spec(influx_db, extra={"start": iso(incremental_start)})
    spec.write(queries_dir)
    ok(cli("run"))
    checkpoint_before = cli.status()[("tx", f"{influx_db}.autogen")]["exported_until"]

    since, until = floor(ago(hours=30), 60), floor(ago(hours=26), 60)
    output = ok(cli("run", "--since", iso(since), "--until", iso(until)))

    assert "backfilled" in output
    assert cli.status()[("tx", f"{influx_db}.autogen")]["exported_until"] == checkpoint_before
    expected = expected_points(spec, since, until)
    expected |= expected_points(spec, incremental_start, parse_iso(checkpoint_before))
    assert actual_points(influxd, spec) == expected


def test_backfill_killed_then_restarted_completes_without_asking_twice(
    cli, fake_nr, influxd, influx_db, queries_dir, state_path
):
    spec = tx_spec(influx_db)
    spec.write(queries_dir)
    fake_nr.latency = 0.3  # slow answers, so the kill lands mid-backfill
    since, until = floor(ago(days=2), 60), floor(ago(hours=1), 60)
    args = ("run", "--since", iso(since), "--until", iso(until))

    process = cli.popen(*args)
    wait_until(lambda: len(fake_nr.requests) >= 3, 60, "three New Relic requests")
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=120)
    assert process.returncode == -signal.SIGKILL

    state = State.open(f"sqlite:///{state_path}")
    written_before = state.windows_written("tx", f"{influx_db}.autogen")
    assert written_before, "the kill came before any window was written"
    requests_before = len(fake_nr.requests)

    fake_nr.latency = 0.0
    ok(cli(*args))

    for request in fake_nr.requests[requests_before:]:
        for w_since, w_until in written_before:
            assert not (
                request.since_ms < w_until.timestamp() * 1000
                and w_since.timestamp() * 1000 < request.until_ms
            ), "a window already written was requested again"
    assert actual_points(influxd, spec) == expected_points(spec, since, until)
    assert state.checkpoint("tx", f"{influx_db}.autogen") is None


def test_backfill_older_than_new_relic_holds_writes_nothing_older(
    cli, influxd, influx_db, queries_dir
):
    spec = logins_spec(influx_db)
    spec.write(queries_dir)
    before = ago()
    output = ok(cli("run", "--since", "10d"))
    after = ago()

    assert "older than New Relic keeps 8d" in output
    times = [row["time"] for row in influxd.points(influx_db, "nr_logins")]
    assert times and min(times) >= (before - timedelta(days=8)).timestamp()

    # What it wrote is exact: the zeros of expired buckets are never archived. The run's "now"
    # lies between `before` and `after`, which may straddle an hour.
    def expected_at(now):
        first = floor(now - timedelta(days=8), 3600) + timedelta(hours=1)
        return expected_points(spec, first, floor(now - timedelta(minutes=5), 3600))

    assert actual_points(influxd, spec) in (expected_at(before), expected_at(after))


def test_a_one_hour_retention_policy_gets_its_last_hour_and_no_error(
    cli, influxd, influx_db, queries_dir
):
    spec = tx_spec(influx_db, retention_policy="hour", extra={"retention_duration": "1h"})
    spec.write(queries_dir)
    output = ok(cli("run", "--since", "1d"))

    assert "older than the retention policy keeps" in output
    times = [row["time"] for row in influxd.points(influx_db, "nr_tx", "hour")]
    assert times
    assert min(times) >= ago(hours=1).timestamp() - 60


def test_two_targets_hold_the_one_minute_and_one_hour_series(cli, influxd, influx_db, queries_dir):
    start = floor(ago(hours=5), 3600)
    spec = logins_spec(
        influx_db,
        interval="1 minute",
        interval_seconds=60,
        retention_policy=None,
        extra={
            "start": iso(start),
            "targets": [
                {"retention_policy": "raw", "interval": "1m", "retention_duration": "2d"},
                {"retention_policy": "rollup", "interval": "1h", "retention_duration": "104w"},
            ],
        },
    )
    spec.write(queries_dir)
    ok(cli("run"))

    status = cli.status()
    raw_until = parse_iso(status[("logins", f"{influx_db}.raw")]["exported_until"])
    hour_until = parse_iso(status[("logins", f"{influx_db}.rollup")]["exported_until"])
    assert hour_until == floor(raw_until, 3600) or hour_until == floor(ago(minutes=5), 3600)
    raw = replace(spec, retention_policy="raw")
    rollup = replace(spec, retention_policy="rollup", interval_seconds=3600)
    assert actual_points(influxd, raw) == expected_points(raw, start, raw_until)
    assert actual_points(influxd, rollup) == expected_points(rollup, start, hour_until)


def test_lookback_re_exports_the_last_stretch(cli, fake_nr, influx_db, queries_dir):
    spec = tx_spec(
        influx_db, extra={"start": iso(floor(ago(hours=1), 60)), "lookback": "15 minutes"}
    )
    spec.write(queries_dir)
    ok(cli("run"))
    checkpoint = parse_iso(cli.status()[("tx", f"{influx_db}.autogen")]["exported_until"])
    first = len(fake_nr.requests)
    ok(cli("run"))
    assert (
        fake_nr.requests[first].since_ms == (checkpoint - timedelta(minutes=15)).timestamp() * 1000
    )


def test_reset_moves_a_checkpoint_and_prints_old_and_new(cli, influx_db, queries_dir):
    tx_spec(influx_db, extra={"start": iso(floor(ago(hours=1), 60))}).write(queries_dir)
    ok(cli("run"))
    old = cli.status()[("tx", f"{influx_db}.autogen")]["exported_until"]
    to = iso(floor(ago(hours=3), 60))
    output = ok(cli("reset", "--query", "tx", "--to", to))
    assert output.strip() == f"tx → {influx_db}.autogen: checkpoint {old} → {to}"
    assert cli.status()[("tx", f"{influx_db}.autogen")]["exported_until"] == to


def test_reset_of_an_unknown_query_is_a_usage_error(cli, influx_db, queries_dir):
    tx_spec(influx_db).write(queries_dir)
    result = cli("reset", "--query", "nope", "--to", "1h")
    assert result.returncode == 2
    assert "nope" in result.stderr


def test_dry_run_prints_the_plan_and_touches_nothing(
    cli, fake_nr, influxd, influx_db, queries_dir, tmp_path
):
    tx_spec(influx_db).write(queries_dir)
    since = floor(ago(hours=10), 60)
    output = ok(cli("run", "--since", iso(since), "--dry-run"))

    assert f"tx → {influx_db}.autogen" in output
    assert f"SINCE {int(since.timestamp() * 1000)} UNTIL" in output
    assert "LIMIT MAX" in output and "TIMESERIES 1 minute" in output
    assert fake_nr.requests == []
    assert influx_db not in {row["name"] for row in influxd.query("SHOW DATABASES")}
    assert not (tmp_path / "state.db").exists()


def test_output_file_gets_the_line_protocol_and_nothing_else_moves(
    cli, fake_nr, influxd, influx_db, queries_dir, tmp_path
):
    spec = tx_spec(influx_db)
    spec.write(queries_dir)
    since, until = floor(ago(hours=3), 60), floor(ago(hours=2), 60)
    output = tmp_path / "out.lp"
    ok(cli("run", "--since", iso(since), "--until", iso(until), "--output", str(output)))

    lines = output.read_text(encoding="utf-8").splitlines()
    assert len(lines) == len(expected_points(spec, since, until))
    assert all(line.startswith("nr_tx,") for line in lines)
    assert influx_db not in {row["name"] for row in influxd.query("SHOW DATABASES")}
    assert not (tmp_path / "state.db").exists()

    stdout = cli("run", "--since", iso(since), "--until", iso(until), "--output", "-")
    assert stdout.returncode == 0
    assert stdout.stdout.splitlines() == lines  # logs went to stderr


def test_events_query_archives_every_event_exactly_once(
    cli, fake_nr, influxd, influx_db, queries_dir
):
    (queries_dir / "busy.yaml").write_text(
        "nrql: SELECT duration, name, appName, host FROM BusyTransaction\n"
        "mode: events\ntag_attributes: [appName, host]\n"
        f"measurement: nr_busy\ndatabase: {influx_db}\n"
    )
    since, until = floor(ago(hours=2), 60), floor(ago(hours=1) - timedelta(minutes=20), 60)
    output = ok(cli("run", "--since", iso(since), "--until", iso(until)))

    expected = events.events(
        "BusyTransaction", int(since.timestamp() * 1000), int(until.timestamp() * 1000)
    )
    assert len(expected) > 5000  # more than one answer can hold: the window was split
    rows = influxd.query('SELECT count("duration") FROM "nr_busy"', db=influx_db)
    assert rows[0]["count"] == sum(1 for e in expected if e.get("duration") is not None)
    stored = influxd.query('SELECT * FROM "nr_busy"', db=influx_db)
    assert len(stored) == len(expected)
    assert "backfilled" in output
    assert len(fake_nr.requests) >= 3  # capped, then two halves


def test_nested_metric_event_attributes_are_archived(cli, influxd, influx_db, queries_dir):
    """`SELECT * FROM Metric` events carry `"newrelic.internal.usage": {"count", "type"}`."""
    (queries_dir / "usage.yaml").write_text(
        "nrql: SELECT * FROM Metric\nmode: events\ntag_attributes: [appName]\n"
        f"measurement: nr_usage\ndatabase: {influx_db}\n"
    )
    since, until = floor(ago(hours=2), 60), floor(ago(hours=1), 60)
    ok(cli("run", "--since", iso(since), "--until", iso(until)))
    expected = events.events("Metric", int(since.timestamp() * 1000), int(until.timestamp() * 1000))
    assert expected
    rows = influxd.query(
        'SELECT count("newrelic.internal.usage.count") AS n, sum("newrelic.internal.usage.count")'
        ' AS total, count("newrelic.internal.usage.type") AS types FROM "nr_usage"',
        db=influx_db,
    )
    usage = [e["newrelic.internal.usage"] for e in expected]
    assert rows[0]["n"] == rows[0]["types"] == len(expected)
    assert rows[0]["total"] == sum(u["count"] for u in usage)
