"""`nr-archiver verify` end to end: the CLI in this process, the fake NerdGraph, a real influxd.

The archive is exported with `run`, damaged with InfluxQL and `/write`, and what `verify`
reports and repairs is checked against the fake's data model (tests/e2e.py) and with InfluxQL.
"""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import timedelta

import pytest
import requests

from archiver.windows import iso
from tests.e2e import ACCOUNT, Item, Spec, actual_points, ago, expected_points, floor, parse_iso
from tests.inprocess import InProcessCli


@pytest.fixture
def cli(inprocess_cli: InProcessCli) -> InProcessCli:
    """The CLI in this process, where a process of its own adds nothing (`cli.popen` still
    starts one)."""
    return inprocess_cli


JSON_KEYS = {
    "query", "target", "account_id", "since", "until", "windows", "checked", "missing",
    "different", "extra", "repaired", "pruned", "examples",
}  # fmt: skip
EVIL = "x' OR \"appName\" =~ /.*/ OR 'y"  # a facet value that tries to widen a statement
EVIL_LP = EVIL.replace(" ", "\\ ").replace(",", "\\,").replace("=", "\\=")


def tx_spec(database: str, **changes) -> Spec:
    spec = Spec(
        name="tx_by_app",
        nrql="SELECT count(*), average(duration) FROM Transaction FACET appName",
        event_type="Transaction",
        facets=("appName",),
        items=(Item("count", None, "count"), Item("average", "duration", "average.duration")),
        measurement="nr_tx",
        interval="5 minutes",
        interval_seconds=300,
        database=database,
        tags={"source": "newrelic"},
        extra={"start": iso(floor(ago(hours=2), 300))},
    )
    return replace(spec, **changes)


def write_lp(influxd, database: str, lines: list[str], rp: str = "autogen") -> None:
    response = requests.post(
        f"{influxd.url}/write",
        params={"db": database, "rp": rp, "precision": "s"},
        data="\n".join(lines).encode(),
        timeout=60,
    )
    assert response.status_code == 204, response.text


def verify(cli, *args: str) -> tuple[int, list[dict]]:
    result = cli("verify", "--json", *args)
    assert result.returncode in (0, 1), result.stdout + result.stderr
    return result.returncode, json.loads(result.stdout)


def query_points(influxd, spec: Spec) -> dict:
    """The points of the query's own series (static tag, no tag key the query does not write)."""
    return {
        key: fields
        for key, fields in actual_points(influxd, spec).items()
        if dict(key[0]).get("source") == "newrelic" and set(dict(key[0])) <= {"appName", "source"}
    }


def counts(row: dict) -> dict:
    keys = ("missing", "different", "extra", "repaired", "pruned")
    return {key: row[key] for key in keys}


def exported(cli, spec: Spec, database: str):
    status = cli.status()[(spec.name, f"{database}.autogen")]
    return parse_iso(status["exported_until"])


def test_verify_finds_repairs_and_prunes_exactly_the_damage(cli, influxd, influx_db, queries_dir):
    spec = tx_spec(influx_db)
    spec.write(queries_dir)
    assert cli("run").returncode == 0
    start, until = parse_iso(spec.extra["start"]), exported(cli, spec, influx_db)
    expected = expected_points(spec, start, until)
    assert actual_points(influxd, spec) == expected

    clean, rows = verify(cli)
    assert clean == 0
    (row,) = rows
    assert set(row) >= JSON_KEYS
    assert (row["query"], row["target"]) == (spec.name, f"{influx_db}.autogen")
    assert row["account_id"] == ACCOUNT
    assert counts(row) == dict.fromkeys(("missing", "different", "extra", "repaired", "pruned"), 0)
    assert row["checked"] == len(expected)
    assert (row["since"], row["until"]) == (iso(start), iso(until))
    assert row["windows"] >= 1

    # Damage: the points of two buckets deleted, a whole series dropped, one value
    # overwritten, a point of a facet New Relic never had, and points of other series (another
    # static tag value, an extra tag key) that are not this query's and must never be touched.
    t0 = int(start.timestamp())
    hole = (t0 + 600, t0 + 1200)
    influxd.query(f'DELETE FROM "nr_tx" WHERE time >= {hole[0]}s AND time < {hole[1]}s', influx_db)
    influxd.query('DROP SERIES FROM "nr_tx" WHERE "appName" = \'a=b\'', influx_db)
    missing = [
        key for key in expected if hole[0] <= key[1] < hole[1] or ("appName", "a=b") in key[0]
    ]
    overwritten_at = t0 + 3000
    write_lp(
        influxd,
        influx_db,
        [f"nr_tx,appName=checkout,source=newrelic count=99999.0 {overwritten_at}"],
    )
    write_lp(
        influxd,
        influx_db,
        [
            f"nr_tx,appName={EVIL_LP},source=newrelic count=1.0 {t0 + 300}",
            f"nr_tx,appName=checkout,source=grafana count=7.0 {t0 + 300}",
            f"nr_tx,appName=checkout,source=newrelic,user=bob count=7.0 {t0 + 300}",
        ],
    )

    damaged, (row,) = verify(cli)
    assert damaged == 1
    assert counts(row) == {"missing": len(missing), "different": 1, "extra": 1, "repaired": 0,
                           "pruned": 0}  # fmt: skip
    assert row["status"] == "differs"
    kinds = {example["kind"] for example in row["examples"]}
    assert kinds <= {"missing", "different", "extra"} and row["examples"]

    repaired, (row,) = verify(cli, "--repair")
    assert repaired == 1  # the extra point is still there
    assert row["repaired"] == len(missing) + 1 and row["pruned"] == 0 and row["remaining"] == 1
    evil_key = ((("appName", EVIL), ("source", "newrelic")), t0 + 300)
    assert query_points(influxd, spec) == {**expected, evil_key: {"count": 1.0}}

    pruned, (row,) = verify(cli, "--repair", "--prune")
    assert pruned == 0, row
    assert row["extra"] == 1 and row["pruned"] == 1 and row["remaining"] == 0
    assert query_points(influxd, spec) == expected
    others = influxd.query(
        'SELECT * FROM "nr_tx" WHERE "source" = \'grafana\' OR "user" = \'bob\' GROUP BY *',
        influx_db,
    )
    assert len(others) == 2  # the other series are untouched

    again, (row,) = verify(cli)
    assert again == 0
    assert row["missing"] == row["different"] == row["extra"] == 0

    # `status` shows the last verify of the target.
    last = cli.status()[(spec.name, f"{influx_db}.autogen")]["last_verify"]
    assert last["status"] == "ok" and last["checked"] == len(expected)
    assert (last["missing"], last["remaining"]) == (0, 0)
    table = cli("status").stdout
    assert f"LAST VERIFY\n{spec.name} → {influx_db}.autogen: verified " in table
    assert f"ok, {len(expected)} points checked, 0 missing" in table


def test_prune_never_deletes_a_point_another_retention_policy_holds(
    cli, influxd, influx_db, queries_dir
):
    """1.x DELETE has no retention-policy qualifier: the same point in another RP is kept."""
    spec = tx_spec(influx_db)
    spec.write(queries_dir)
    assert cli("run").returncode == 0
    t0 = int(parse_iso(spec.extra["start"]).timestamp())
    influxd.query(f'CREATE RETENTION POLICY "other" ON "{influx_db}" DURATION 30d REPLICATION 1')
    extra = f"nr_tx,appName={EVIL_LP},source=newrelic count=1.0 {t0 + 300}"
    write_lp(influxd, influx_db, [extra])
    write_lp(influxd, influx_db, [extra], rp="other")

    code, (row,) = verify(cli, "--repair", "--prune")
    assert code == 1
    assert row["extra"] == 1 and row["pruned"] == 0 and row["remaining"] == 1
    assert "other" in row["not_pruned"][0] and "retention policy" in row["not_pruned"][0]
    for rp in ("autogen", "other"):
        held = influxd.points(influx_db, "nr_tx", rp)
        assert any(p["tags"].get("appName") == EVIL for p in held), rp


def test_sample_asks_new_relic_only_for_the_sampled_windows(
    cli, fake_nr, influxd, influx_db, queries_dir
):
    # Without FACET a window holds 366 one-minute buckets: two days are 8 windows.
    spec = Spec(
        name="throughput",
        nrql="SELECT count(*) AS requests FROM Transaction",
        event_type="Transaction",
        facets=(),
        items=(Item("count", None, "requests"),),
        measurement="nr_throughput",
        interval="1 minute",
        interval_seconds=60,
        database=influx_db,
        extra={"start": iso(floor(ago(days=2), 3600))},
    )
    spec.write(queries_dir)
    assert cli("run").returncode == 0
    fake_nr.reset_log()

    code, (row,) = verify(cli, "--sample", "3", "--seed", "7")
    assert code == 0
    assert row["windows"] == len(row["sampled"]) == 3
    asked = sorted((r.since_ms // 1000, r.until_ms // 1000) for r in fake_nr.requests)
    sampled = []
    for text in row["sampled"]:
        since, until = text.strip("[)").split(", ")
        sampled.append((int(parse_iso(since).timestamp()), int(parse_iso(until).timestamp())))
    assert asked == sorted(sampled)
    assert row["nr_requests"] == 3

    # The same seed picks the same windows; the table names them too.
    fake_nr.reset_log()
    table = cli("verify", "--sample", "3", "--seed", "7")
    assert table.returncode == 0, table.stderr
    assert f"sampled 3 windows: {', '.join(row['sampled'])}" in table.stdout
    assert len(fake_nr.requests) == 3


def test_a_query_new_relic_rejects_is_reported_and_the_others_go_on(
    cli, fake_nr, influxd, influx_db, queries_dir
):
    good = tx_spec(influx_db)
    bad = tx_spec(influx_db, name="logins", nrql="SELECT count(*) FROM Login FACET provider",
                  measurement="nr_logins")  # fmt: skip
    good.write(queries_dir)
    bad.write(queries_dir)
    assert cli("run").returncode == 0
    message = "NRQL Syntax Error: Error at line 1 position 8, unexpected 'Login'"
    fake_nr.reject_nrql("FROM Login", message)

    code, rows = verify(cli)
    assert code == 1
    by_query = {row["query"]: row for row in rows}
    assert by_query["logins"]["status"] == "failed"
    assert message in by_query["logins"]["error"]
    assert by_query["tx_by_app"]["status"] == "ok"
    assert by_query["tx_by_app"]["checked"] > 0
    last = cli.status()[("logins", f"{influx_db}.autogen")]["last_verify"]
    assert last["status"] == "failed" and message in last["error"]


def test_a_dropped_retention_policy_is_all_missing_and_repair_recreates_it(
    cli, influxd, influx_db, queries_dir
):
    spec = tx_spec(influx_db, retention_policy="raw", extra={
        "start": iso(floor(ago(hours=1), 300)), "retention_duration": "30d"})  # fmt: skip
    spec.write(queries_dir)
    assert cli("run").returncode == 0
    start = parse_iso(spec.extra["start"])
    until = parse_iso(cli.status()[(spec.name, f"{influx_db}.raw")]["exported_until"])
    expected = expected_points(spec, start, until)
    influxd.query(f'DROP RETENTION POLICY "raw" ON "{influx_db}"')

    code, (row,) = verify(cli)
    assert code == 1
    assert (row["missing"], row["different"], row["extra"]) == (len(expected), 0, 0)

    code, (row,) = verify(cli, "--repair")
    assert code == 0
    assert row["repaired"] == len(expected) and row["remaining"] == 0
    assert actual_points(influxd, spec, "raw") == expected

    # Every verify left a point in nr_archiver (kind=verify) with its counts.
    rows = influxd.query(
        'SELECT "missing", "repaired", "remaining" FROM "nr_archiver" '
        'WHERE "kind" = \'verify\' GROUP BY "query", "target"',
        influx_db,
    )
    assert [(r["query"], r["target"]) for r in rows][-1] == (spec.name, f"{influx_db}.raw")
    assert {(r["missing"], r["repaired"], r["remaining"]) for r in rows} == {
        (len(expected), 0, len(expected)),
        (len(expected), len(expected), 0),
    }


def test_events_are_compared_at_nanosecond_precision(cli, influxd, influx_db, queries_dir):
    spec = Spec(
        name="slow_tx",
        nrql="SELECT duration, name, appName, host FROM Transaction",
        event_type="Transaction",
        facets=(),
        items=(),
        measurement="nr_events",
        interval="1 hour",
        interval_seconds=3600,
        database=influx_db,
        extra={"mode": "events", "tag_attributes": ["appName", "host"],
               "start": iso(floor(ago(hours=2), 3600))},
    )  # fmt: skip
    spec.write(queries_dir)
    assert cli("run").returncode == 0
    code, (row,) = verify(cli)
    assert code == 0 and row["checked"] > 0, row

    response = requests.get(
        f"{influxd.url}/query",
        params={"db": influx_db, "epoch": "ns", "q": 'SELECT * FROM "nr_events" LIMIT 1'},
        timeout=60,
    )
    first = response.json()["results"][0]["series"][0]["values"][0][0]
    influxd.query(f'DELETE FROM "nr_events" WHERE time = {first}', influx_db)
    code, (row,) = verify(cli)
    assert code == 1
    assert (row["missing"], row["different"], row["extra"]) == (1, 0, 0)
    assert row["examples"][0]["time_ns"] == first


def test_a_target_a_run_holds_is_not_verified(cli, influxd, influx_db, queries_dir, state_path):
    from datetime import timedelta

    from archiver.state.store import State

    spec = tx_spec(influx_db)
    spec.write(queries_dir)
    assert cli("run").returncode == 0
    state = State.open(f"sqlite:///{state_path}")
    held = state.acquire_lease(spec.name, f"{influx_db}.autogen", "elsewhere:1:x",
                               timedelta(minutes=5), ago())  # fmt: skip
    assert held
    code, (row,) = verify(cli)
    assert code == 1
    assert row["status"] == "busy" and row["windows"] == 0


def test_prune_without_repair_is_a_usage_error(cli, queries_dir, influx_db):
    tx_spec(influx_db).write(queries_dir)
    result = cli("verify", "--prune")
    assert result.returncode == 2
    assert "--prune deletes points only as part of a repair: add --repair" in result.stderr


def test_late_data_shows_as_different_and_is_repaired(
    cli, fake_nr, influxd, influx_db, queries_dir
):
    spec = tx_spec(influx_db)
    spec.write(queries_dir)
    assert cli("run").returncode == 0
    start, until = parse_iso(spec.extra["start"]), exported(cli, spec, influx_db)
    expected = expected_points(spec, start, until)
    late_since = int(until.timestamp()) - 900  # the newest three buckets got late events
    fake_nr.arrive_late(late_since)
    changed = {key for key in expected if key[1] >= late_since}
    assert changed

    code, (row,) = verify(cli)
    assert code == 1
    assert (row["missing"], row["different"], row["extra"]) == (0, len(changed), 0)

    code, (row,) = verify(cli, "--repair")
    assert code == 0 and row["repaired"] == len(changed) and row["remaining"] == 0
    late = {
        key: {name: value + 1 for name, value in fields.items()} if key in changed else fields
        for key, fields in expected.items()
    }
    assert actual_points(influxd, spec) == late


def test_since_and_until_narrow_the_range_and_never_pass_the_checkpoint(
    cli, fake_nr, influxd, influx_db, queries_dir
):
    spec = tx_spec(influx_db)
    spec.write(queries_dir)
    assert cli("run").returncode == 0
    start, until = parse_iso(spec.extra["start"]), exported(cli, spec, influx_db)
    fake_nr.reset_log()

    since = start + timedelta(minutes=32)  # aligned outward to the 5-minute buckets
    code, (row,) = verify(cli, "--since", iso(since), "--until", "2099-01-01")
    assert code == 0
    assert (row["since"], row["until"]) == (iso(start + timedelta(minutes=30)), iso(until))
    assert row["checked"] == len(expected_points(spec, start + timedelta(minutes=30), until))
    assert min(r.since_ms for r in fake_nr.requests) == (start.timestamp() + 1800) * 1000
    assert max(r.until_ms for r in fake_nr.requests) == until.timestamp() * 1000

    # --since before the exported range does not widen it
    code, (row,) = verify(cli, "--since", iso(start - timedelta(days=1)))
    assert code == 0 and row["since"] == iso(start)


def test_a_target_never_exported_is_reported_not_verified(cli, influx_db, queries_dir):
    tx_spec(influx_db).write(queries_dir)
    code, (row,) = verify(cli)
    assert code == 0
    assert row["status"] == "not exported" and row["windows"] == 0 and row["since"] is None


def test_verify_checks_each_account_of_an_account_ids_file_on_its_own(
    cli, fake_nr, influxd, influx_db, queries_dir
):
    other = 2222222
    fake_nr.accounts.add(other)
    spec = tx_spec(influx_db, tags={})
    spec = replace(spec, extra={**spec.extra, "account_ids": [ACCOUNT, other]})
    spec.write(queries_dir)
    assert cli("run").returncode == 0

    clean, rows = verify(cli)
    assert clean == 0
    assert {(row["query"], row["account_id"]) for row in rows} == {
        (f"tx_by_app@{ACCOUNT}", ACCOUNT),
        (f"tx_by_app@{other}", other),
    }
    assert all(row["checked"] > 0 and row["remaining"] == 0 for row in rows)

    # Only the other account's series are lost: only its verify sees them missing.
    influxd.query(f'DROP SERIES FROM "nr_tx" WHERE "account_id" = \'{other}\'', influx_db)
    damaged, rows = verify(cli)
    assert damaged == 1
    by_account = {row["account_id"]: row for row in rows}
    assert by_account[ACCOUNT]["missing"] == 0
    assert by_account[other]["missing"] == by_account[other]["checked"] > 0

    repaired, rows = verify(cli, "--repair")
    assert repaired == 0
    assert {row["account_id"]: row["repaired"] for row in rows} == {
        ACCOUNT: 0,
        other: by_account[other]["checked"],
    }
