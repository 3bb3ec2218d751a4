"""`import dashboard`: widget NRQL → query files, on real dashboards (tests/dashboards/golden)
served by `responses` at the HTTP boundary, and on small hand-made widgets."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import responses
import yaml

from archiver import queries
from archiver.cli import main
from archiver.dashboards import importer
from archiver.dashboards.nrql_clean import NotArchivable, clean
from archiver.errors import AuthError, ConfigError, NewRelicError
from archiver.newrelic.nerdgraph import DASHBOARD_GRAPHQL, NerdGraphClient
from archiver.queries.nrql import select_items, top_level_clauses
from tests.clocks import FakeClock

URL = "https://api.newrelic.com/graphql"
KEY = "NRAK-TEST0123456789ABCDEFGHIJKLM"
GOLDEN = Path(__file__).parent / "dashboards" / "golden"
GUID = "MXxWSVp8REFTSEJPQVJEfDE"


def golden(name: str) -> dict[str, Any]:
    return json.loads((GOLDEN / name).read_text(encoding="utf-8"))


def answer(entity: Any) -> dict[str, Any]:
    return {"data": {"actor": {"entity": entity}}}


def fetched(entity: dict[str, Any], fake_time: FakeClock) -> dict[str, Any]:
    """The entity, asked for through the real client and served over (faked) HTTP."""
    with responses.RequestsMock() as mock:
        mock.post(URL, json=answer(entity))
        client = NerdGraphClient(URL, KEY, sleep=fake_time.sleep, clock=fake_time)
        got = client.dashboard(GUID)
        body = json.loads(mock.calls[0].request.body)
    assert body == {"query": DASHBOARD_GRAPHQL, "variables": {"guid": GUID}}
    return got


# -- NRQL ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("nrql", "cleaned", "interval"),
    [
        pytest.param(
            "SELECT count(*) FROM Transaction SINCE 1 day ago TIMESERIES 5 minutes",
            "SELECT count(*) FROM Transaction",
            timedelta(minutes=5),
            id="timeseries-step",
        ),
        pytest.param(
            "SELECT count(*) from Transaction TIMESERIES 1 hour  since today COMPARE WITH 1 week "
            "ago",
            "SELECT count(*) from Transaction",
            timedelta(hours=1),
            id="compare-with-line",
        ),
        pytest.param(
            "SELECT max(duration) FROM Transaction WHERE (transactionType = 'Web') SINCE 1 week "
            "ago LIMIT 5 EXTRAPOLATE FACET name",
            "SELECT max(duration) FROM Transaction WHERE (transactionType = 'Web') LIMIT 5 "
            "FACET name",
            timedelta(minutes=1),
            id="extrapolate-limit-kept",
        ),
        pytest.param(
            "FROM Metric SELECT average(x) TIMESERIES 2 days since 2 months ago",
            "FROM Metric SELECT average(x)",
            timedelta(minutes=1),
            id="step-longer-than-a-day",
        ),
        pytest.param(
            "SELECT count(*) FROM T TIMESERIES 7 minutes UNTIL 10 minutes ago",
            "SELECT count(*) FROM T",
            timedelta(minutes=1),
            id="step-not-dividing-a-day",
        ),
        pytest.param(
            "SELECT count(*) FROM T TIMESERIES AUTO",
            "SELECT count(*) FROM T",
            timedelta(minutes=1),
            id="timeseries-auto",
        ),
        pytest.param(
            "SELECT count(*) FROM T TIMESERIES 15 minutes SLIDE BY 5 minutes",
            "SELECT count(*) FROM T",
            timedelta(minutes=15),
            id="slide-by",
        ),
        pytest.param(
            "SELECT count(*) FROM T WHERE name = 'since 1 day ago' WITH TIMEZONE "
            "'America/Los_Angeles' -- a comment\n SINCE yesterday",
            "SELECT count(*) FROM T WHERE name = 'since 1 day ago'",
            timedelta(minutes=1),
            id="quotes-comments-timezone",
        ),
        pytest.param(
            "SELECT count(*) FROM T WHERE x IN (SELECT y FROM U WHERE n = 'until now') "
            "TIMESERIES 30 minutes",
            "SELECT count(*) FROM T WHERE x IN (SELECT y FROM U WHERE n = 'until now')",
            timedelta(minutes=30),
            id="subquery-without-time-clause",
        ),
    ],
)
def test_clean_removes_the_time_clauses(nrql, cleaned, interval):
    result = clean(nrql)
    assert (result.nrql, result.interval) == (cleaned, interval)


@pytest.mark.parametrize(
    ("nrql", "reason"),
    [
        pytest.param("SELECT * FROM PageView SINCE 1 hour ago", r"SELECT \* lists", id="select-*"),
        pytest.param(
            "SELECT max(rpm) FROM (SELECT count(*) AS rpm FROM T TIMESERIES 1 minute) "
            "SINCE 1 hour ago TIMESERIES 10 minutes",
            "the nested query in FROM has its own",
            id="nested-aggregation-with-inner-timeseries",
        ),
        pytest.param(
            "SELECT name, duration FROM Transaction", "raw attributes", id="raw-attributes"
        ),
        pytest.param(
            "SELECT count(*) FROM T WHERE d > (SELECT average(d) FROM T SINCE 1 day ago)",
            "a subquery has its own .*: New Relic does not run subqueries as a TIMESERIES",
            id="subquery-with-since",
        ),
        pytest.param(
            "SELECT count(*) FROM T FACET a, b, c, d, e, f", "6 FACET attributes", id="6-facets"
        ),
        pytest.param("SELECT count(*) FROM T WHERE a = 'x", "unterminated", id="broken-quote"),
        pytest.param(
            "SELECT count(*) FROM T WHERE appName IN ({{apps}}) TIMESERIES",
            "uses the dashboard variable {{apps}}",
            id="dashboard-variable",
        ),
    ],
)
def test_clean_refuses_what_cannot_be_archived(nrql, reason):
    with pytest.raises(NotArchivable, match=reason):
        clean(nrql)


def test_the_scanner_splits_clauses_and_select_items_at_depth_zero():
    nrql = (
        "FROM Transaction SELECT count(*) AS 'n, all', percentile(duration, 95, 99.5), "
        "average(x) * 100 AS cpu, rate(count(*), 1 minute) WHERE a IN ('SINCE', 'x') "
        "COMPARE WITH 1 week ago"
    )
    assert [c.keyword for c in top_level_clauses(nrql)] == [
        "FROM",
        "SELECT",
        "WHERE",
        "COMPARE WITH",
    ]
    items = select_items(nrql)
    assert [(i.function, i.arguments, i.alias) for i in items] == [
        ("count", ("*",), "n, all"),
        ("percentile", ("duration", "95", "99.5"), None),
        (None, (), "cpu"),
        ("rate", ("count(*)", "1 minute"), None),
    ]


# -- real dashboards ---------------------------------------------------------------------------


def test_a_real_quickstart_dashboard(tmp_path, fake_time):
    entity = fetched(golden("newrelic-quickstarts-dotnet.json"), fake_time)
    plan = importer.plan(entity, GUID, importer.Options(out=tmp_path))
    files = {f.name: yaml.safe_load(f.text) for f in plan.files}
    assert len(files) == 19
    assert files["transactions_throughput_today_compared_with_1_week_ago"]["nrql"] == (
        "SELECT count(*) from Transaction"
    )
    assert files["transactions_throughput_today_compared_with_1_week_ago"]["interval"] == "1 hour"
    assert files["transactions_top_5_slowest_transactions"]["nrql"] == (
        "SELECT max(duration) FROM Transaction WHERE (transactionType = 'Web') LIMIT 5 FACET name"
    )
    assert files["errors_transactions_errors_today_compared_with_1_week_ago"]["interval"] == (
        "10 minutes"
    )
    # the same widget on two pages: two names; accountId 0 is the template's placeholder
    assert {"net_app_overview_errors_overview", "errors_errors_overview"} <= set(files)
    assert all(not {"account_id", "account_ids"} & set(content) for content in files.values())
    overview = files["net_app_overview_transactions_overview"]
    assert overview["description"] == (
        f"From New Relic dashboard '.NET' ({GUID}), page '.NET App Overview', "
        "widget 'Transactions Overview'"
    )
    assert overview["measurement"] == overview["name"] == "net_app_overview_transactions_overview"
    assert [str(s) for s in plan.skipped] == [
        "page '.NET App Overview', widget 'untitled viz.markdown': markdown text, no query"
    ] * 4
    written = importer.write(plan, force=False)
    loaded = queries.load_dir(tmp_path)  # what `validate` does
    assert (len(loaded.queries), loaded.problems) == (len(written), [])


def test_real_dashboards_with_account_ids(tmp_path, fake_time):
    entity = fetched(golden("terraform-provider-dashboard-data-account.json"), fake_time)
    plan = importer.plan(entity, GUID, importer.Options(out=tmp_path))
    assert plan.files == []
    assert [s.widget for s in plan.skipped] == [
        "title (query 1)",
        "title (query 2)",
        "Other Title (query 1)",
        "Other Title (query 2)",
    ]
    assert all("no aggregate function" in s.reason for s in plan.skipped)
    page = golden("terraform-provider-page-one.json")
    entity = fetched({"name": "Memory", "pages": [page]}, fake_time)
    plan = importer.plan(entity, GUID, importer.Options(out=tmp_path, retention_policy="raw"))
    [only] = plan.files
    content = yaml.safe_load(only.text)
    assert content["account_id"] == 3806526
    assert "account_ids" not in content  # one account: account_id, as before
    assert content["interval"] == "1 minute"  # TIMESERIES 2 days does not divide a day
    assert content["retention_policy"] == "raw"
    assert content["nrql"] == (
        "FROM Metric SELECT average(apm.service.memory.physical) as avgMem "
        "WHERE appName='Dummy App'"
    )


# -- hand-made widgets -------------------------------------------------------------------------


def widget(title: str, viz: str, *queries_: dict, **raw: Any) -> dict:
    if queries_:
        raw["nrqlQueries"] = list(queries_)
    return {"title": title, "visualization": {"id": viz}, "rawConfiguration": raw}


def dashboard(*widgets: dict, page: str = "Main") -> dict:
    return {"name": "Shop", "pages": [{"name": page, "widgets": list(widgets)}]}


def test_several_accounts_give_one_account_ids_file(tmp_path):
    entity = dashboard(
        widget(
            "Orders",
            "viz.line",
            {"accountIds": [22, 11, 22, 0], "query": "SELECT count(*) FROM O FACET shop"},
        ),
        widget("Refunds", "viz.line", {"accountIds": [33], "query": "SELECT count(*) FROM R"}),
        widget("Any", "viz.line", {"accountIds": [0], "query": "SELECT count(*) FROM A"}),
        # the account_id tag of account_ids would collide with this facet: listed, not written
        widget(
            "Per account",
            "viz.line",
            {"accountIds": [11, 22], "query": "SELECT count(*) FROM O FACET account_id"},
        ),
    )
    plan = importer.plan(entity, GUID, importer.Options(out=tmp_path))
    orders, refunds, any_account = plan.files
    assert "\naccount_ids: [22, 11]\n" in orders.text  # inline, in the widget's order
    content = yaml.safe_load(orders.text)
    assert (content["name"], content["measurement"]) == ("main_orders", "main_orders")
    assert "account_id" not in content
    assert content["description"].endswith("widget 'Orders'")
    assert yaml.safe_load(refunds.text)["account_id"] == 33
    assert "account_ids" not in yaml.safe_load(refunds.text)
    assert not {"account_id", "account_ids"} & set(yaml.safe_load(any_account.text))
    [skipped] = plan.skipped
    assert skipped.widget == "Per account"
    assert "FACET account_id would collide" in skipped.reason
    importer.write(plan, force=False)
    loaded = queries.load_dir(tmp_path)  # what `validate` does
    assert loaded.problems == []
    [query] = [q for q in loaded.queries if q.name == "main_orders"]
    assert query.accounts(None) == (22, 11)
    assert [query.job_name(a) for a in query.accounts(None)] == ["main_orders@22", "main_orders@11"]


def test_compare_with_billboards_and_markdown_are_listed_not_written():
    entity = dashboard(
        widget(
            "Now vs last week",
            "viz.billboard",
            {
                "accountId": 1,
                "query": "SELECT count(*) FROM T SINCE 1 hour ago COMPARE WITH 1 week ago",
            },
        ),
        widget("Notes", "viz.markdown", text="# hi"),
        widget("Custom", "abc.custom-viz", other={"visible": False}),
        widget(
            "Trend",
            "viz.line",
            {"accountId": 1, "query": "SELECT count(*) FROM T TIMESERIES COMPARE WITH 1 week ago"},
        ),
    )
    plan = importer.plan(entity, GUID, importer.Options(out=Path("/nonexistent")))
    assert [f.name for f in plan.files] == ["main_trend"]
    assert [(s.widget, s.reason.split(":")[0]) for s in plan.skipped] == [
        ("Now vs last week", "a billboard that compares with an earlier period (COMPARE WITH)"),
        ("Notes", "markdown text, no query"),
        ("Custom", "no NRQL query (visualization abc.custom-viz)"),
    ]


def test_what_validate_rejects_is_listed_with_its_message():
    entity = dashboard(
        widget("Tags", "viz.line", {"accountId": 1, "query": "SELECT count(*) FROM T FACET time"})
    )
    plan = importer.plan(entity, GUID, importer.Options(out=Path("/nonexistent")))
    assert plan.files == []
    [skipped] = plan.skipped
    assert skipped.reason == (
        "key 'nrql': FACET attribute 'time' cannot be an InfluxDB tag: 'time' is reserved by "
        "InfluxDB"
    )


def test_names_avoid_other_files_and_keep_their_own(tmp_path):
    (tmp_path / "main_orders.yaml").write_text(
        "nrql: SELECT count(*) FROM X\nmeasurement: x\ninterval: 1m\ndatabase: d\n"
    )
    query = {"accountId": 1, "query": "SELECT count(*) FROM O TIMESERIES"}
    entity = dashboard(widget("Orders", "viz.line", query, query))
    first = importer.plan(entity, GUID, importer.Options(out=tmp_path))
    assert [(f.name, f.replaces) for f in first.files] == [
        ("main_orders_2", False),
        ("main_orders_3", False),
    ]
    importer.write(first, force=False)
    again = importer.plan(entity, GUID, importer.Options(out=tmp_path))
    assert [(f.name, f.replaces) for f in again.files] == [
        ("main_orders_2", True),
        ("main_orders_3", True),
    ]
    with pytest.raises(ConfigError, match=r"^2 file\(s\) already exist: .*use --force"):
        importer.write(again, force=False)
    assert importer.write(again, force=True) == [f.path for f in again.files]


def test_unknown_page_names_the_pages():
    entity = dashboard(widget("A", "viz.markdown", text=""), page="Main")
    with pytest.raises(ConfigError, match=r"^dashboard 'Shop' has no page 'Other'; pages: 'Main'$"):
        importer.plan(entity, GUID, importer.Options(out=Path("x"), page="Other"))


# -- NerdGraph errors, classified like the NRQL queries ----------------------------------------


@responses.activate
def test_dashboard_errors_are_classified(fake_time):
    client = NerdGraphClient(URL, KEY, sleep=fake_time.sleep, clock=fake_time)
    responses.post(URL, json={"errors": [{"message": "Invalid API key"}]}, status=401)
    with pytest.raises(AuthError, match="HTTP 401"):
        client.dashboard(GUID)
    responses.replace(responses.POST, URL, json=answer({"guid": GUID, "entityType": "APM"}))
    with pytest.raises(NewRelicError, match=f"^entity '{GUID}' is not a dashboard"):
        client.dashboard(GUID)
    error = {"message": "Invalid GUID", "extensions": {"errorClass": "INVALID_INPUT"}}
    responses.replace(responses.POST, URL, json={"data": {"actor": None}, "errors": [error]})
    with pytest.raises(NewRelicError, match=r"^Invalid GUID$"):
        client.dashboard(GUID)


@responses.activate
def test_dashboard_request_retries_transient_failures(fake_time):
    responses.post(URL, status=503, json={"errors": [{"message": "busy"}]})
    responses.post(URL, json=answer({"name": "D", "pages": []}))
    client = NerdGraphClient(URL, KEY, sleep=fake_time.sleep, clock=fake_time)
    assert client.dashboard(GUID) == {"name": "D", "pages": []}
    assert len(responses.calls) == 2 and len(fake_time.sleeps) == 1


def test_import_needs_a_user_key(monkeypatch, capsys):
    monkeypatch.delenv("NEW_RELIC_API_KEY", raising=False)
    monkeypatch.setenv("NEW_RELIC_QUERY_KEY", "NRIQ-xyz")
    assert main(["import", "dashboard", GUID]) == 2
    assert capsys.readouterr().err == (
        "nr-archiver: error: NEW_RELIC_API_KEY is not set: reading a dashboard needs a New "
        "Relic user key (NRAK-...) for NerdGraph; an Insights query key cannot read dashboards\n"
    )
