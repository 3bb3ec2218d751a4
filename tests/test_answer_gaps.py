"""Issue 11, items 5-7 end to end: the CLI (in this process) against the fake New Relic and a
real influxd, checked with InfluxQL. Empty-bucket percentiles never land as 0, `other: true`
archives the facets beyond LIMIT as `__other__` so totals add up, and New Relic's messages are
logged once per query and counted in `nr_archiver`."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from archiver.windows import iso
from fakes import data
from fakes.insights import FakeInsights
from tests.e2e import (
    ACCOUNT,
    Cli,
    Item,
    Spec,
    actual_points,
    ago,
    cli_env,
    expected_points,
    floor,
    parse_iso,
)
from tests.inprocess import InProcessCli


@pytest.fixture
def cli(inprocess_cli: InProcessCli) -> InProcessCli:
    """The CLI in this process, where a process of its own adds nothing."""
    return inprocess_cli


HELPER = "__nr_archiver_n_"


def field_keys(influxd, db: str, measurement: str) -> set[str]:
    return {row["fieldKey"] for row in influxd.query(f'SHOW FIELD KEYS FROM "{measurement}"', db)}


def exported_until(cli: Cli, name: str, target: str):
    return parse_iso(cli.status()[(name, target)]["exported_until"])


def test_buckets_without_samples_never_get_a_percentile(cli, influxd, influx_db, queries_dir):
    start = floor(ago(hours=3), 60)
    plain = Spec(
        name="tx_percentiles",
        nrql="SELECT percentile(duration, 95, 99), median(duration), count(*) FROM Transaction"
        " FACET appName",
        event_type="Transaction",
        facets=("appName",),
        items=(
            Item("percentile", "duration", "percentile.duration", ("95", "99")),
            Item("median", "duration", "median.duration", ("50",)),
            Item("count", None, "count"),
        ),
        measurement="nr_percentiles",
        interval="1 minute",
        interval_seconds=60,
        database=influx_db,
        extra={"start": iso(start)},
    )
    filtered = replace(
        plain,
        name="tx_filtered",
        nrql="SELECT filter(percentile(duration, 75), WHERE error IS true) AS 'p75',"
        " filter(count(*), WHERE error IS true) AS 'errors' FROM Transaction FACET appName",
        measurement="nr_filtered",
    )
    plain.write(queries_dir)
    filtered.write(queries_dir)

    result = cli("run")
    assert result.returncode == 0, result.stdout + result.stderr

    until = exported_until(cli, plain.name, f"{influx_db}.autogen")
    # Every point is the contract's: the model has no percentile for a bucket without samples.
    assert actual_points(influxd, plain) == expected_points(plain, start, until)
    empty = influxd.query('SELECT * FROM "nr_percentiles" WHERE "count" = 0', influx_db)
    assert empty  # New Relic answered {"95": 0, "99": 0} for these buckets
    for row in empty:
        assert {k: v for k, v in row.items() if "duration" in k and v is not None} == {}
    zeros = (
        'SELECT "percentile.duration.95" FROM "nr_percentiles" WHERE "percentile.duration.95" = 0'
    )
    assert influxd.query(zeros, influx_db) == []

    rows = influxd.query('SELECT "p75.75", "errors" FROM "nr_filtered"', influx_db)
    without = [row for row in rows if row["errors"] == 0]
    assert without and all(row["p75.75"] is None for row in without)  # was {"75": 0}
    assert all(row["p75.75"] > 0 for row in rows if row["errors"])
    assert any(row["errors"] for row in rows)

    for measurement in ("nr_percentiles", "nr_filtered"):  # the helper counts never land
        assert not [k for k in field_keys(influxd, influx_db, measurement) if HELPER in k]


def test_other_true_archives_the_rest_as_other_so_totals_add_up(
    cli, fake_nr, influxd, influx_db, queries_dir
):
    start = floor(ago(hours=2), 60)
    spec = Spec(
        name="apps_top3",
        nrql="SELECT count(*) FROM Transaction FACET appName LIMIT 3",
        event_type="Transaction",
        facets=("appName",),
        items=(Item("count", None, "count"),),
        measurement="nr_top3",
        interval="1 minute",
        interval_seconds=60,
        database=influx_db,
        extra={"start": iso(start), "other": True},
    )
    spec.write(queries_dir)

    result = cli("run")
    assert result.returncode == 0, result.stdout + result.stderr
    assert (
        f"apps_top3 → {influx_db}.autogen: New Relic answered 3 facets, as many as the query's"
        " LIMIT: the facets beyond it are archived together as __other__"
    ) in result.stdout + result.stderr
    until = exported_until(cli, spec.name, f"{influx_db}.autogen")

    apps = influxd.query('SHOW TAG VALUES FROM "nr_top3" WITH KEY = "appName"', influx_db)
    assert "__other__" in {row["value"] for row in apps}
    other = influxd.query(
        """SELECT "count" FROM "nr_top3" WHERE "appName" = '__other__'""", influx_db
    )
    assert sum(row["count"] for row in other) > 0  # Transaction has 7 apps: 4 beyond LIMIT 3

    begin, end = int(start.timestamp()), int(until.timestamp())
    every_app = data.facet_values("Transaction", ("appName",))
    expected = {
        bucket: float(
            sum(
                data.value("Transaction", app, bucket, "count", None, bucket_seconds=60)
                for app in every_app
            )
        )
        for bucket in range(begin, end, 60)
    }
    sums = influxd.query(
        f'SELECT sum("count") FROM "nr_top3" WHERE time >= {begin}s AND time < {end}s'
        " GROUP BY time(1m) fill(none)",
        influx_db,
    )
    assert {row["time"]: row["sum"] for row in sums} == expected

    [metrics] = influxd.query('SELECT * FROM "nr_archiver"', influx_db)
    assert metrics["facet_limit_hit"] == metrics["windows"] >= 1
    assert metrics["nr_messages"] == 0
    # otherResult was asked for (the fake only answers it when the query names it)
    assert fake_nr.requests and all(r.outcome == "ok" for r in fake_nr.requests)


def test_new_relic_messages_are_logged_once_per_query_and_counted(
    cli, fake_nr, influxd, influx_db, queries_dir
):
    warnings = [
        "Your query's results were limited to 2,000 results",
        "Data older than the retention period was not included",
    ]
    fake_nr.add_messages("FROM Login", warnings)
    content = {
        "nrql": "SELECT count(*) FROM Login FACET provider",
        "measurement": "nr_logins",
        "database": influx_db,
        "start": iso(floor(ago(hours=2), 300)),
        "targets": [
            {"retention_policy": "autogen", "interval": "1 minute"},
            {"retention_policy": "five", "interval": "5 minutes", "retention_duration": "2d"},
        ],
    }
    (queries_dir / "logins.yaml").write_text(yaml.safe_dump(content))
    events = {
        "nrql": "SELECT * FROM Login",
        "mode": "events",
        "tag_attributes": ["provider"],
        "measurement": "nr_login_events",
        "database": influx_db,
        "start": iso(floor(ago(hours=2), 300)),
    }
    (queries_dir / "login_events.yaml").write_text(yaml.safe_dump(events))

    result = cli("run")
    assert result.returncode == 0, result.stdout + result.stderr
    output = result.stdout + result.stderr
    for warning in warnings:  # two targets, several windows: said once per query
        assert output.count(f"logins: New Relic says: {warning}") == 1, output
        assert output.count(f"login_events: New Relic says: {warning}") == 1, output

    rows = influxd.query('SELECT * FROM "nr_archiver" GROUP BY "query", "target"', influx_db)
    assert sorted((row["query"], row["target"]) for row in rows) == [
        ("login_events", influx_db),
        ("logins", f"{influx_db}.autogen"),
        ("logins", f"{influx_db}.five"),
    ]
    assert all(row["nr_messages"] == 2 for row in rows)
    assert all(row["facet_limit_hit"] == 0 for row in rows)  # 3 providers, LIMIT MAX


def test_other_true_is_refused_with_the_insights_api(
    tmp_path: Path, influxd, influx_db, queries_dir, monkeypatch, capsys
):
    start = iso(floor(ago(hours=1), 300))
    base = {"measurement": "nr_x", "interval": "5 minutes", "database": influx_db, "start": start}
    other = {**base, "nrql": "SELECT count(*) FROM Login FACET provider", "other": True}
    plain = {**base, "nrql": "SELECT count(*) FROM Login", "measurement": "nr_y"}
    (queries_dir / "with_other.yaml").write_text(yaml.safe_dump(other))
    (queries_dir / "plain.yaml").write_text(yaml.safe_dump(plain))
    with FakeInsights(accounts={ACCOUNT}).start() as insights:
        env = cli_env(
            nerdgraph_url="http://127.0.0.1:9/unused",
            api_key="",
            influx_url=influxd.url,
            db_url=f"sqlite:///{tmp_path / 'state.db'}",
            queries=queries_dir,
        )
        env.pop("NEW_RELIC_API_KEY")
        env |= {"NEW_RELIC_QUERY_KEY": insights.api_key, "NEW_RELIC_INSIGHTS_URL": insights.url}
        cli = InProcessCli(env, tmp_path, monkeypatch, capsys)
        result = cli("run")
        nrqls = [r.nrql or "" for r in insights.requests]
    assert result.returncode == 1, result.stdout + result.stderr
    refusal = (
        f"{queries_dir / 'with_other.yaml'}: key 'other': `other: true` needs NerdGraph's"
        " otherResult, which the Insights query API does not answer: set NEW_RELIC_API_KEY"
        " (a user key) or remove `other: true`"
    )
    assert refusal in result.stdout + result.stderr
    assert nrqls and not [nrql for nrql in nrqls if "FACET" in nrql]  # only the plain query
    assert influxd.query('SELECT count(*) FROM "nr_y"', influx_db)

    validate = cli("validate")
    assert validate.returncode == 1
    assert refusal in validate.stdout
