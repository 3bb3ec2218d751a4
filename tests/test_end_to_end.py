"""The CLI (in this process) against the fake NerdGraph server and a real influxd.

What landed in InfluxDB is compared with the contract's points computed from the fake's
data model (tests/e2e.py), for every facet and every bucket.
"""

from __future__ import annotations

import json
import re
from dataclasses import replace
from datetime import timedelta

import pytest

from archiver.windows import iso
from fakes.insights import FakeInsights
from fakes.nerdgraph import FakeNerdGraph, json_reply
from tests.e2e import (
    ACCOUNT,
    Item,
    Spec,
    actual_points,
    ago,
    cli_env,
    expected_points,
    floor,
    parse_iso,
)
from tests.faults import error_lines
from tests.inprocess import InProcessCli


@pytest.fixture
def cli(inprocess_cli: InProcessCli) -> InProcessCli:
    """The CLI in this process, where a process of its own adds nothing."""
    return inprocess_cli


def specs(database: str) -> list[Spec]:
    common = {"database": database}
    return [
        Spec(
            name="tx_percentiles",
            nrql="SELECT average(duration), percentile(duration, 95, 99), count(*) "
            "FROM Transaction FACET appName, host",
            event_type="Transaction",
            facets=("appName", "host"),
            items=(
                Item("average", "duration", "average.duration"),
                Item("percentile", "duration", "percentile.duration", ("95", "99")),
                Item("count", None, "count"),
            ),
            measurement="nr_transaction",
            interval="1 minute",
            interval_seconds=60,
            tags={"source": "newrelic"},
            **common,
        ),
        Spec(
            name="logins",
            nrql="SELECT count(*) AS 'logins' FROM Login FACET provider",
            event_type="Login",
            facets=("provider",),
            items=(Item("count", None, "logins"),),
            measurement="nr_logins",
            interval="5 minutes",
            interval_seconds=300,
            **common,
        ),
        Spec(
            name="throughput",
            nrql="SELECT count(*) AS requests, max(duration) AS slowest FROM Transaction",
            event_type="Transaction",
            facets=(),
            items=(Item("count", None, "requests"), Item("max", "duration", "slowest")),
            measurement="nr_throughput",
            interval="1m",
            interval_seconds=60,
            **common,
        ),
        Spec(
            name="app_errors",
            nrql="SELECT count(*), sum(duration) FROM TransactionError FACET appName",
            event_type="TransactionError",
            facets=("appName",),
            items=(Item("count", None, "count"), Item("sum", "duration", "sum.duration")),
            measurement="nr errors, by app",
            interval="5 minutes",
            interval_seconds=300,
            **common,
        ),
    ]


def test_two_runs_archive_exactly_the_contract_points_and_never_ask_twice(
    cli, fake_nr, influxd, influx_db, queries_dir
):
    start = floor(ago(hours=3), 300)
    all_specs = [replace(s, extra={"start": iso(start)}) for s in specs(influx_db)]
    for spec in all_specs:
        spec.write(queries_dir)

    first = cli("run")
    assert first.returncode == 0, first.stdout + first.stderr
    after_first = {q: parse_iso(row["exported_until"]) for (q, _), row in cli.status().items()}
    first_requests = len(fake_nr.requests)

    before = ago()
    second = cli("run")
    after = ago()
    assert second.returncode == 0, second.stdout + second.stderr
    status = cli.status()

    for spec in all_specs:
        until = parse_iso(status[(spec.name, f"{influx_db}.autogen")]["exported_until"])
        lag = timedelta(minutes=5)
        assert until in {
            floor(before - lag, spec.interval_seconds),
            floor(after - lag, spec.interval_seconds),
        }
        expected = expected_points(spec, start, until)
        assert expected, spec.name
        assert actual_points(influxd, spec) == expected, spec.name

    # The second run asked only for windows after what the first one exported.
    for request in fake_nr.requests[first_requests:]:
        asked = re.sub(r", count\(\w+\) AS '__nr_archiver_n_\d+'", "", request.nrql)
        spec = next(s for s in all_specs if asked.startswith(s.nrql))
        assert request.since_ms >= after_first[spec.name].timestamp() * 1000


def test_special_facet_values_round_trip_as_tags(cli, influxd, influx_db, queries_dir):
    spec = specs(influx_db)[0]
    spec.write(queries_dir)
    assert cli("run").returncode == 0
    values = {
        row["value"]
        for row in influxd.query(
            f'SHOW TAG VALUES FROM "{spec.measurement}" WITH KEY = "appName"', db=influx_db
        )
    }
    assert {"Call Center API", "billing,eu", "a=b", 'say "hi"', "Zürich ☃ 東京"} <= values
    assert "C:\\tmp" in values  # InfluxDB cannot store a trailing backslash: dropped
    field_types = {
        row["fieldKey"]: row["fieldType"]
        for row in influxd.query(f'SHOW FIELD KEYS FROM "{spec.measurement}"', db=influx_db)
    }
    assert set(field_types.values()) == {"float"}


def test_broken_file_and_rejected_nrql_do_not_stop_the_good_query(
    cli, fake_nr, influxd, influx_db, queries_dir
):
    good = specs(influx_db)[1]
    good.write(queries_dir)
    (queries_dir / "broken.yaml").write_text("nrql: [unclosed\n")
    rejected = Spec(
        name="rejected",
        nrql="SELECT count(*) FROM Transaction WHERE oops",
        event_type="Transaction",
        facets=(),
        items=(),
        measurement="nr_rejected",
        interval="5m",
        interval_seconds=300,
        database=influx_db,
    )
    rejected.write(queries_dir)
    message = "NRQL Syntax Error: Error at line 1 position 42, unexpected 'oops'"
    fake_nr.reject_nrql("WHERE oops", message)

    result = cli("run")

    assert result.returncode == 1
    output = result.stdout + result.stderr
    assert "broken.yaml" in output
    assert message in output
    assert "rejected" in output
    assert actual_points(influxd, good)  # the good file was archived
    status = cli.status()
    assert status[("rejected", f"{influx_db}.autogen")]["last_status"] == "failed"
    assert status[("rejected", f"{influx_db}.autogen")]["exported_until"] is None


def test_wrong_api_key_is_one_line_and_never_printed(cli, fake_nr, influx_db, queries_dir):
    specs(influx_db)[1].write(queries_dir)
    wrong_key = "NRAK-WRONGWRONGWRONGWRONG123"
    result = cli("run", NEW_RELIC_API_KEY=wrong_key, ARCHIVER_LOG_LEVEL="DEBUG")
    assert result.returncode == 2
    output = result.stdout + result.stderr
    [error] = error_lines(output)
    assert "NEW_RELIC_API_KEY" in error
    assert wrong_key not in output
    status = cli("status", "--json", NEW_RELIC_API_KEY=wrong_key)
    assert wrong_key not in status.stdout


def test_validate_names_every_broken_file_and_key(cli, queries_dir):
    (queries_dir / "good.yaml").write_text(
        "nrql: SELECT count(*) FROM Transaction\nmeasurement: m\ninterval: 1m\ndatabase: d\n"
    )
    (queries_dir / "typo.yaml").write_text(
        "nrql: SELECT count(*) FROM Transaction\nmeasurment: m\ninterval: 1m\ndatabase: d\n"
    )
    (queries_dir / "since.yaml").write_text(
        "nrql: SELECT count(*) FROM Transaction SINCE 1 day ago\nmeasurement: m\n"
        "interval: 1m\ndatabase: d\n"
    )
    (queries_dir / "interval.yaml").write_text(
        "nrql: SELECT count(*) FROM Transaction\nmeasurement: m\ninterval: 7 mins\ndatabase: d\n"
    )
    result = cli("validate")
    assert result.returncode == 1
    out = result.stdout
    assert "typo.yaml" in out and "measurment" in out
    assert "since.yaml" in out and "SINCE" in out
    assert "interval.yaml: key 'interval': '7 mins'" in out
    assert "good.yaml" not in out and "1 valid query, 4 problems" in out


def test_status_json_reports_every_target(cli, influx_db, queries_dir):
    specs(influx_db)[1].write(queries_dir)
    assert cli("run").returncode == 0
    rows = json.loads(cli("status", "--json").stdout)
    assert [(r["query"], r["target"], r["last_status"]) for r in rows] == [
        ("logins", f"{influx_db}.autogen", "ok")
    ]
    assert rows[0]["lag_seconds"] >= 5 * 60


def test_self_metrics_count_what_the_run_wrote(cli, influxd, influx_db, queries_dir):
    spec = specs(influx_db)[1]
    spec.write(queries_dir)
    assert cli("run").returncode == 0
    rows = influxd.points(influx_db, "nr_archiver")
    assert len(rows) == 1
    row = rows[0]
    assert row["tags"] == {
        "kind": "incremental",
        "query": "logins",
        "status": "ok",
        "target": f"{influx_db}.autogen",
    }
    written = len(actual_points(influxd, spec))
    assert row["fields"]["points"] == written > 0
    assert row["fields"]["failed"] == 0
    assert row["fields"]["nr_requests"] == row["fields"]["windows"] >= 1
    assert 5 * 60 <= row["fields"]["lag_seconds"] < 15 * 60


def test_no_self_metrics_flag(cli, influxd, influx_db, queries_dir):
    spec = specs(influx_db)[1]
    spec.write(queries_dir)
    assert cli("run", "--no-self-metrics").returncode == 0
    assert actual_points(influxd, spec)  # the run did write into this database
    assert influxd.points(influx_db, "nr_archiver") == []


def test_legacy_insights_api_archives_the_same_points(
    tmp_path, influxd, influx_db, queries_dir, monkeypatch, capsys
):
    start = floor(ago(hours=2), 300)
    chosen = [replace(s, extra={"start": iso(start)}) for s in specs(influx_db)[:2]]
    for spec in chosen:
        spec.write(queries_dir)
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
        assert result.returncode == 0, result.stdout + result.stderr
        assert insights.requests  # it went through the Insights API
    status = cli.status()
    for spec in chosen:
        until = parse_iso(status[(spec.name, f"{influx_db}.autogen")]["exported_until"])
        assert actual_points(influxd, spec) == expected_points(spec, start, until)


def real_shapes_spec(database: str) -> Spec:
    """TransactionError rows carry `appName` without a `facet` key (as New Relic's Go client
    fixture does); funnel buckets are `{"steps": [...]}`; Insights spells `uniquecount`."""
    return Spec(
        name="error_funnel",
        nrql="SELECT funnel(host, WHERE duration > 1 AS 'Slow', WHERE error IS true),"
        " uniqueCount(host) FROM TransactionError FACET appName",
        event_type="TransactionError",
        facets=("appName",),
        items=(
            Item("funnel", "host", "funnel.host", steps=("Slow", "step2")),
            Item("uniqueCount", "host", "uniqueCount.host"),
        ),
        measurement="nr_error_funnel",
        interval="5 minutes",
        interval_seconds=300,
        database=database,
    )


def test_real_answer_shapes_archive_every_point_through_both_apis(
    tmp_path, cli, influxd, influx_db, queries_dir, monkeypatch, capsys
):
    start = floor(ago(hours=1), 300)
    spec = replace(real_shapes_spec(influx_db), extra={"start": iso(start)})
    spec.write(queries_dir)
    result = cli("run")
    assert result.returncode == 0, result.stdout + result.stderr
    until = parse_iso(cli.status()[(spec.name, f"{influx_db}.autogen")]["exported_until"])
    expected = expected_points(spec, start, until)
    assert len({tags for tags, _ in expected}) > 1  # several apps, none overwriting another
    assert actual_points(influxd, spec) == expected

    insights_db = influx_db + "_insights"
    legacy = replace(spec, database=insights_db)
    legacy.write(queries_dir)
    with FakeInsights(accounts={ACCOUNT}).start() as insights:
        env = {**cli.env, "NEW_RELIC_QUERY_KEY": insights.api_key}
        env |= {
            "NEW_RELIC_INSIGHTS_URL": insights.url,
            "ARCHIVER_DB_URL": f"sqlite:///{tmp_path / 'legacy.db'}",
        }
        env.pop("NEW_RELIC_API_KEY")
        legacy_cli = InProcessCli(env, tmp_path, monkeypatch, capsys)
        assert legacy_cli("run").returncode == 0
    status = legacy_cli.status()[(spec.name, f"{insights_db}.autogen")]
    try:
        legacy_until = parse_iso(status["exported_until"])
        assert actual_points(influxd, legacy) == expected_points(legacy, start, legacy_until)
    finally:
        influxd.query(f'DROP DATABASE "{insights_db}"')


def test_a_list_value_is_left_out_with_a_warning_and_a_self_metric(
    cli, influxd, influx_db, queries_dir
):
    start = floor(ago(hours=1), 300)
    spec = Spec(
        name="login_users",
        nrql="SELECT count(*), uniques(host) FROM Login FACET provider",
        event_type="Login",
        facets=("provider",),
        items=(Item("count", None, "count"),),
        measurement="nr_login_users",
        interval="5 minutes",
        interval_seconds=300,
        database=influx_db,
        extra={"start": iso(start)},
    )
    spec.write(queries_dir)
    result = cli("run")
    assert result.returncode == 0, result.stderr
    output = result.stdout + result.stderr
    warnings = [line for line in output.splitlines() if "uniques.host" in line]
    assert len(warnings) == 1, output  # once per job, not once per window
    assert "login_users" in warnings[0] and "no line-protocol form" in warnings[0]
    until = parse_iso(cli.status()[(spec.name, f"{influx_db}.autogen")]["exported_until"])
    assert actual_points(influxd, spec) == expected_points(spec, start, until)
    [metric] = influxd.points(influx_db, "nr_archiver")
    assert metric["fields"]["dropped_keys"] == 1


class DisagreeingNerdGraph(FakeNerdGraph):
    """Answers rows whose `facet` and attribute disagree (never seen from New Relic)."""

    def _answer(self, api_key, request):
        reply = super()._answer(api_key, request)
        document = json.loads(reply.body)
        for row in document["data"]["actor"]["account"]["nrql"]["results"]:
            row["provider"] = "not " + str(row["provider"])
        return json_reply(reply.status, document, reply.outcome)


def test_a_facet_that_disagrees_with_its_attribute_fails_the_query_by_name(
    tmp_path, influxd, influx_db, queries_dir, monkeypatch, capsys
):
    spec = replace(specs(influx_db)[1], extra={"start": iso(floor(ago(hours=1), 300))})
    spec.write(queries_dir)
    with DisagreeingNerdGraph(accounts={ACCOUNT}).start() as fake:
        env = cli_env(
            nerdgraph_url=fake.url,
            api_key=fake.api_key,
            influx_url=influxd.url,
            db_url=f"sqlite:///{tmp_path / 'state.db'}",
            queries=queries_dir,
        )
        result = InProcessCli(env, tmp_path, monkeypatch, capsys)("run")
    assert result.returncode == 1
    [line] = error_lines(result.stdout + result.stderr)
    assert "logins" in line and "disagrees with its attribute provider" in line
    assert actual_points(influxd, spec) == {}
