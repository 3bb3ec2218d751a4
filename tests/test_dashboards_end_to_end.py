"""From a New Relic dashboard to Grafana, through the real CLI, the fake NerdGraph server and a
real influxd: `import dashboard` → `validate` → `run` (exact points) → `grafana`, whose every
panel query (with $timeFilter, $__interval and the template variables filled in as Grafana
does) returns the archived series.
"""

from __future__ import annotations

import json
import re
from dataclasses import replace
from datetime import timedelta

import pytest
import yaml

from archiver.cli import main
from fakes.dashboards import CHECKOUT_GUID, OTHER_ACCOUNT
from fakes.nerdgraph import FakeNerdGraph
from tests.e2e import ACCOUNT, Cli, Item, Spec, ago, cli_env, expected_points, floor

COUNT = (Item("count", None, "count"),)


def imported_specs(database: str) -> dict[str, Spec]:
    """What each imported file means, from the fake dashboard (fakes/dashboards.py)."""

    def spec(name, event_type, facets, items, interval, **extra) -> Spec:
        minutes = {"1 minute": 1, "5 minutes": 5, "15 minutes": 15}[interval]
        return Spec(
            name=name,
            nrql="",
            event_type=event_type,
            facets=facets,
            items=items,
            measurement=name,
            interval=interval,
            interval_seconds=minutes * 60,
            database=database,
            retention_policy=None,
            **extra,
        )

    duration = (
        Item("average", "duration", "average.duration"),
        Item("percentile", "duration", "percentile.duration", ("95", "99")),
    )
    lag = "ReplicationLag"
    specs = [
        spec("overview_throughput", "Transaction", ("appName",), COUNT, "5 minutes"),
        spec("overview_duration_s", "Transaction", ("appName", "host"), duration, "1 minute"),
        spec("overview_logins", "Login", ("provider", "success"), COUNT, "1 minute"),
        spec(
            "database_pages_replication_lag",
            lag,
            ("cluster",),
            (Item("max", "lag", "max.lag"),),
            "1 minute",
        ),
        spec(
            "database_pages_replication_lag_2",
            lag,
            ("cluster",),
            (Item("average", "lag", "average.lag"),),
            "1 minute",
        ),
        spec(BOTH_ACCOUNTS, "PageView", (), COUNT, "15 minutes"),
    ]
    return {s.name: s for s in specs}


BOTH_ACCOUNTS = "database_pages_page_views_both_accounts"  # accountIds [ACCOUNT, OTHER_ACCOUNT]


def expected(spec: Spec, since, until) -> dict:
    """The fake's points for a file; the both-accounts file's once per account, tagged with it
    (the fake answers every account from the same data model)."""
    if spec.name != BOTH_ACCOUNTS:
        return expected_points(spec, since, until)
    points = {}
    for account in (ACCOUNT, OTHER_ACCOUNT):
        tagged = replace(spec, tags={"account_id": str(account)})
        points |= expected_points(tagged, since, until)
    return points


def tags_of(spec: Spec) -> tuple[str, ...]:
    return (*spec.facets, "account_id") if spec.name == BOTH_ACCOUNTS else spec.facets


LIMITED = "database_pages_slowest_transactions"  # max(duration) ... FACET name LIMIT 5


@pytest.fixture
def fake_two_accounts():
    with FakeNerdGraph(accounts={ACCOUNT, OTHER_ACCOUNT}).start() as server:
        yield server


@pytest.fixture
def cli2(tmp_path, fake_two_accounts, influxd, queries_dir, state_path) -> Cli:
    env = cli_env(
        nerdgraph_url=fake_two_accounts.url,
        api_key=fake_two_accounts.api_key,
        influx_url=influxd.url,
        db_url=f"sqlite:///{state_path}",
        queries=queries_dir,
    )
    return Cli(env, tmp_path)


def test_import_validate_run_grafana(cli2, influxd, influx_db, queries_dir, tmp_path):
    imported = cli2("import", "dashboard", CHECKOUT_GUID, "--database", influx_db)
    assert imported.returncode == 0, imported.stderr
    specs = imported_specs(influx_db)
    written = sorted(path.stem for path in queries_dir.glob("*.yaml"))
    assert written == sorted([*specs, LIMITED])
    not_archived = [line for line in imported.stdout.splitlines() if "not archived" in line]
    assert [line.split("': ")[0] + "'" for line in not_archived] == [
        "not archived: page 'Overview', widget 'untitled viz.markdown'",
        "not archived: page 'Overview', widget 'Errors vs yesterday'",
        "not archived: page 'Database & pages', widget 'Recent page views'",
        "not archived: page 'Database & pages', widget 'Everything by everything'",
    ]
    both = yaml.safe_load((queries_dir / f"{BOTH_ACCOUNTS}.yaml").read_text())
    assert both["account_ids"] == [ACCOUNT, OTHER_ACCOUNT] and "account_id" not in both
    assert both["interval"] == "15 minutes"
    assert both["nrql"] == "SELECT count(*) FROM PageView"  # WITH TIMEZONE, SINCE... removed

    validated = cli2("validate")
    assert validated.returncode == 0, validated.stdout
    assert validated.stdout.strip().endswith(f"{len(specs) + 1} valid queries, 0 problems")

    since = floor(ago(hours=3), 3600)
    until = since + timedelta(hours=2)
    run = cli2("run", "--since", since.isoformat(), "--until", until.isoformat())
    assert run.returncode == 0, run.stderr
    for name, spec in specs.items():
        assert actual(influxd, spec) == expected(spec, since, until), name
    assert {point["tags"]["account_id"] for point in influxd.points(influx_db, BOTH_ACCOUNTS)} == {
        str(ACCOUNT),
        str(OTHER_ACCOUNT),
    }
    limited = influxd.points(influx_db, LIMITED)
    assert limited and len({point["tags"].get("name") for point in limited}) <= 5

    incremental = cli2("run", "--query", "overview_throughput")  # for the archiver's own row
    assert incremental.returncode == 0, incremental.stderr

    board_path = tmp_path / "board.json"
    made = cli2("grafana", "--out", str(board_path))
    assert made.returncode == 0, made.stderr
    board = json.loads(board_path.read_text())
    panels = {panel["title"].split(" (")[0]: panel for panel in board["panels"]}
    variables = {variable["name"]: variable for variable in board["templating"]["list"]}
    assert set(variables) == {
        *("appName", "host", "provider", "success", "cluster", "name", "account_id")
    }

    start_ms, end_ms = int(since.timestamp() * 1000), int(until.timestamp() * 1000) - 1
    for name, spec in specs.items():
        panel = panels[name]
        rows = []
        for target in panel["targets"]:
            query = grafana_fills(target["query"], start_ms, end_ms, panel["interval"], {})
            rows += influxd.query(query, db=influx_db)
        assert as_points(rows, tags_of(spec)) == expected(spec, since, until), name

    panel = panels[LIMITED]  # FACET name LIMIT 5: whatever New Relic answered, as archived
    rows = [
        row
        for target in panel["targets"]
        for row in influxd.query(
            grafana_fills(target["query"], start_ms, end_ms, panel["interval"], {}), db=influx_db
        )
    ]
    archived = {
        (tuple(sorted(point["tags"].items())), point["time"]): point["fields"] for point in limited
    }
    assert as_points(rows, ("name",)) == archived

    # one value chosen in a variable: only that series, even with commas and quotes in it
    panel = panels["overview_duration_s"]
    chosen = {"appName": ["billing,eu", 'say "hi"'], "host": [".*"]}
    rows = []
    for target in panel["targets"]:
        query = grafana_fills(target["query"], start_ms, end_ms, panel["interval"], chosen)
        rows += influxd.query(query, db=influx_db)
    assert {row["appName"] for row in rows} == {"billing,eu", 'say "hi"'}
    # the both-accounts panel: a series per account, and the account_id variable picks one
    panel = panels[BOTH_ACCOUNTS]
    [target] = panel["targets"]
    for chosen, accounts in (
        ({}, {ACCOUNT, OTHER_ACCOUNT}),
        ({"account_id": [str(ACCOUNT)]}, {ACCOUNT}),
    ):
        query = grafana_fills(target["query"], start_ms, end_ms, panel["interval"], chosen)
        rows = influxd.query(query, db=influx_db)
        assert {int(row["account_id"]) for row in rows} == accounts
    account_values = influxd.query(variables["account_id"]["query"])
    assert {row["value"] for row in account_values} == {str(ACCOUNT), str(OTHER_ACCOUNT)}
    for variable in variables.values():  # every variable's own query lists the tag's values
        values = influxd.query(variable["query"])
        assert values, variable["query"]

    now_ms = int(ago(seconds=0).timestamp() * 1000)
    archiver_rows = {}
    for title in ("Lag per query", "Failures", "Points per run", "New Relic requests"):
        panel = next(p for p in board["panels"] if p["title"].startswith(title))
        query = panel["targets"][0]["query"]
        archiver_rows[title] = influxd.query(
            grafana_fills(query, now_ms - 3_600_000, now_ms + 60_000, "1m", {}), db=influx_db
        )
    assert {row["query"] for row in archiver_rows["Lag per query"]} == {"overview_throughput"}
    assert all(row["lag_seconds"] < 7200 for row in archiver_rows["Lag per query"])
    assert {row["failed"] for row in archiver_rows["Failures"]} == {0}
    assert sum(row["points"] for row in archiver_rows["Points per run"]) > 0
    assert sum(row["nr_requests"] for row in archiver_rows["New Relic requests"]) > 0
    lag_panel = next(p for p in board["panels"] if p["title"].startswith("Lag per query"))
    steps = lag_panel["fieldConfig"]["defaults"]["thresholds"]["steps"]
    assert steps[-1] == {"color": "red", "value": 7200}


@pytest.fixture
def in_process(monkeypatch, fake_two_accounts, queries_dir, capsys):
    """`nr-archiver ARGS...` run in this process against the fake: (exit code, stdout, stderr)."""
    monkeypatch.setenv("NEW_RELIC_API_KEY", fake_two_accounts.api_key)
    monkeypatch.setenv("NEW_RELIC_NERDGRAPH_URL", fake_two_accounts.url)
    monkeypatch.setenv("ARCHIVER_QUERIES_DIR", str(queries_dir))

    def run(*args: str) -> tuple[int, str, str]:
        code = main(list(args))
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run


def test_import_refuses_to_overwrite_without_force(in_process, queries_dir):
    code, _, err = in_process("import", "dashboard", CHECKOUT_GUID, "--page", "Overview")
    assert code == 0, err
    before = {path.name: path.read_text() for path in queries_dir.glob("*.yaml")}
    assert len(before) == 3
    code, _, err = in_process("import", "dashboard", CHECKOUT_GUID, "--page", "Overview")
    assert code == 2
    assert err.startswith("nr-archiver: error: 3 file(s) already exist: ")
    assert "use --force" in err
    assert {p.name: p.read_text() for p in queries_dir.glob("*.yaml")} == before
    code, _, err = in_process(
        "import", "dashboard", CHECKOUT_GUID, "--page", "Overview", "--force", "--database", "x"
    )
    assert code == 0, err
    assert sorted(p.name for p in queries_dir.glob("*.yaml")) == sorted(before)  # same names
    assert all("database: x" in p.read_text() for p in queries_dir.glob("*.yaml"))


def test_dry_run_prints_files_and_writes_nothing(in_process, queries_dir):
    code, out, err = in_process(
        "import", "dashboard", CHECKOUT_GUID, "--page", "Overview", "--dry-run"
    )
    assert code == 0, err
    assert f"--- {queries_dir / 'overview_throughput.yaml'}" in out
    assert "nrql: SELECT count(*) FROM Transaction FACET appName" in out
    assert "would write 3 query file(s)" in out
    assert list(queries_dir.iterdir()) == []


def test_unknown_dashboard_is_one_line_and_exit_1(in_process):
    code, _, err = in_process("import", "dashboard", "NOPE")
    assert code == 1
    assert err == (
        "nr-archiver: error: New Relic has no entity with GUID 'NOPE' that this API key can see: "
        "copy the GUID from the dashboard's metadata (the 'See metadata' menu)\n"
    )


# -- Grafana's substitutions -----------------------------------------------------------------


def grafana_fills(query: str, start_ms: int, end_ms: int, interval: str, chosen: dict) -> str:
    """What Grafana's InfluxDB data source sends: the time filter in ms, the interval, and each
    multi-value variable as a regex alternation of escaped values (All: the allValue `.*`)."""
    query = query.replace("$timeFilter", f"time >= {start_ms}ms and time <= {end_ms}ms")
    query = query.replace("$__interval", interval)

    def variable(match: re.Match) -> str:
        values = chosen.get(match.group(1), [".*"])
        if values == [".*"]:
            return ".*"
        escaped = [re.sub(r"([\\/^$*+?.()|\[\]{}])", r"\\\1", value) for value in values]
        return escaped[0] if len(escaped) == 1 else "(" + "|".join(escaped) + ")"

    return re.sub(r"\$(\w+)", variable, query)


def actual(influxd, spec: Spec) -> dict:
    return {
        (tuple(sorted(row["tags"].items())), row["time"]): row["fields"]
        for row in influxd.points(spec.database, spec.measurement)
    }


def as_points(rows: list[dict], facets: tuple[str, ...]) -> dict:
    points = {}
    for row in rows:
        tags = tuple(sorted((facet, row[facet]) for facet in facets if row.get(facet)))
        fields = {
            key: value
            for key, value in row.items()
            if key not in ("time", *facets) and value is not None
        }
        points.setdefault((tags, row["time"]), {}).update(fields)
    return points
