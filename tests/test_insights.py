"""The legacy Insights query API: the shape conversion, the client's HTTP behaviour (`responses`),
the fake Insights server, and the crucial check that both APIs give byte-identical points."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
import responses

from archiver.errors import AuthError, NewRelicError, QueryTooBig, TransientError
from archiver.newrelic.insights import (
    INSIGHTS_URLS,
    MAX_NRQL_BYTES,
    NRQL_AGGREGATOR_FUNCTIONS,
    InsightsClient,
    to_nerdgraph_rows,
)
from archiver.newrelic.limiter import Limiter
from archiver.newrelic.nerdgraph import NerdGraphClient
from archiver.pipeline.transform import to_lines
from fakes.insights import FAULT_KINDS, FakeInsights
from fakes.nerdgraph import FakeNerdGraph
from tests.clocks import FakeClock
from tests.e2e import ACCOUNT

BASE = INSIGHTS_URLS["US"]
QUERY_KEY = "NRIQ-TESTQUERYKEY0123456789ABCD"
API_KEY = "NRAK-TESTAPIKEY0123456789ABCDEF"
QUERY_URL = f"{BASE}/v1/accounts/{ACCOUNT}/query"
NRQL = "SELECT count(*) FROM Transaction SINCE 1700000000000 UNTIL 1700003600000 TIMESERIES 1 hour"
NOW = 1_795_003_200  # a whole hour, epoch seconds
MINUTE_MS, HOUR_MS, DAY_MS = 60_000, 3_600_000, 86_400_000
REPO = Path(__file__).resolve().parents[1]

COUNT = {"function": "count", "simple": True}
AVERAGE = {"function": "average", "attribute": "duration", "simple": True}
PERCENTILE = {"function": "percentile", "attribute": "duration", "thresholds": [95, 99]}


def alias(name: str, content: dict[str, Any]) -> dict[str, Any]:
    return {"function": "alias", "alias": name, "contents": content}


def bucket(begin: int, *results: dict[str, Any]) -> dict[str, Any]:
    return {"results": list(results), "beginTimeSeconds": begin, "endTimeSeconds": begin + 60}


# -- to_nerdgraph_rows: every shape --------------------------------------------------------------

SHAPES = [
    pytest.param(
        {"results": [{"count": 5}], "metadata": {"contents": [COUNT]}},
        [{"count": 5}],
        (),
        id="count_no_facet",
    ),
    pytest.param(
        {
            "results": [{"count": 5}, {"average": 1.9}, {"count": 3}],
            "performanceStats": {"inspectedCount": 118},
            "metadata": {
                "contents": [
                    COUNT,
                    AVERAGE,
                    {"function": "count", "attribute": "appName", "simple": True},
                ]
            },
        },
        [{"count": 5, "average.duration": 1.9, "count.appName": 3}],
        (),
        id="several_aggregates_no_facet",
    ),
    pytest.param(
        {
            "total": {"results": [{"count": 999}, {"average": 9.9}], "inspectedCount": 7},
            "timeSeries": [
                {**bucket(60, {"count": 5}, {"average": 1.9}), "inspectedCount": 118},
                {**bucket(120, {"count": 0}, {"average": None}), "inspectedCount": 0},
            ],
            "metadata": {
                "bucketSizeMillis": 60000,
                "timeSeries": {"messages": [], "contents": [alias("calls", COUNT), AVERAGE]},
            },
        },
        [
            {"calls": 5, "average.duration": 1.9, "beginTimeSeconds": 60, "endTimeSeconds": 120},
            {"calls": 0, "average.duration": None, "beginTimeSeconds": 120, "endTimeSeconds": 180},
        ],
        (),
        id="timeseries_alias_and_null_bucket",
    ),
    pytest.param(
        {
            "facets": [
                {"name": "checkout", "results": [{"count": 305}, {"average": 2}]},
                {"name": "billing,eu", "results": [{"count": 7}, {"average": None}]},
            ],
            "totalResult": {"results": [{"count": 312}, {"average": 1.5}]},
            "unknownGroup": {"results": [{"count": 0}, {"average": None}]},
            "metadata": {
                "facet": "appName",
                "contents": {"messages": [], "contents": [COUNT, AVERAGE]},
            },
        },
        [
            {"count": 305, "average.duration": 2, "facet": "checkout", "appName": "checkout"},
            {"count": 7, "average.duration": None, "facet": "billing,eu", "appName": "billing,eu"},
        ],
        ("appName",),
        id="facet_one_attribute",
    ),
    pytest.param(
        {
            "facets": [
                {
                    "name": ["checkout", None],
                    "total": {"results": [{"count": 9}]},
                    "timeSeries": [bucket(60, {"count": 4}), bucket(120, {"count": 0})],
                },
                {
                    "name": ["api", "web-01"],
                    "timeSeries": [bucket(60, {"count": 1}), bucket(120, {"count": 2})],
                },
            ],
            "totalResult": {"timeSeries": [bucket(60, {"count": 5})]},
            "metadata": {
                "facet": ["appName", "host"],
                "contents": {"messages": [], "timeSeries": {"contents": [COUNT]}},
            },
        },
        [
            {
                "count": 4,
                "beginTimeSeconds": 60,
                "endTimeSeconds": 120,
                "facet": ["checkout", None],
                "appName": "checkout",
                "host": None,
            },
            {
                "count": 0,
                "beginTimeSeconds": 120,
                "endTimeSeconds": 180,
                "facet": ["checkout", None],
                "appName": "checkout",
                "host": None,
            },
            {
                "count": 1,
                "beginTimeSeconds": 60,
                "endTimeSeconds": 120,
                "facet": ["api", "web-01"],
                "appName": "api",
                "host": "web-01",
            },
            {
                "count": 2,
                "beginTimeSeconds": 120,
                "endTimeSeconds": 180,
                "facet": ["api", "web-01"],
                "appName": "api",
                "host": "web-01",
            },
        ],
        ("appName", "host"),
        id="facet_two_attributes_timeseries_null_value",
    ),
    pytest.param(
        {
            "timeSeries": [
                bucket(60, {"percentiles": {"95": 1.2, "99": 3}}, {"percentiles": {"50.0": 1}}),
                bucket(120, {"percentiles": {"95": None, "99": None}}, {"percentiles": None}),
            ],
            "metadata": {
                "timeSeries": {
                    "contents": [
                        PERCENTILE,
                        alias("p", {**PERCENTILE, "thresholds": [50.0], "relativeError": 0.03}),
                    ]
                }
            },
        },
        [
            {
                "percentile.duration": {"95": 1.2, "99": 3},
                "p": {"50": 1},
                "beginTimeSeconds": 60,
                "endTimeSeconds": 120,
            },
            {
                "percentile.duration": {"95": None, "99": None},
                "p": None,
                "beginTimeSeconds": 120,
                "endTimeSeconds": 180,
            },
        ],
        (),
        id="percentiles_named_aliased_and_null",
    ),
    pytest.param(
        {
            "results": [{"count": 305}, {"count": 2}, {"result": 12.5}, {"average": 0.4}],
            "metadata": {
                "contents": [
                    alias(
                        "500",
                        {
                            "function": "filter",
                            "alias": "httpResponseCode = 500",
                            "contents": COUNT,
                        },
                    ),
                    {"function": "filter", "alias": "httpResponseCode = 502", "contents": COUNT},
                    {"function": "percentage", "alias": "error IS true", "contents": COUNT},
                    {**AVERAGE, "alias": "avg"},
                ]
            },
        },
        [{"500": 305, "filter.count": 2, "percentage.count": 12.5, "avg": 0.4}],
        (),
        id="filter_and_percentage_with_condition_text",
    ),
    pytest.param(
        {
            "results": [{"events": [{"timestamp": 1700000000123, "duration": 0.5}, {"a": "b"}]}],
            "metadata": {"contents": [{"function": "events", "limit": 100}]},
        },
        [{"timestamp": 1700000000123, "duration": 0.5}, {"a": "b"}],
        (),
        id="raw_events",
    ),
    pytest.param(
        {"facets": [], "metadata": {"facets": ["appName"], "contents": {"contents": [COUNT]}}},
        [],
        ("appName",),
        id="facet_without_any_value",
    ),
]


@pytest.mark.parametrize(("body", "rows", "facets"), SHAPES)
def test_legacy_shapes_become_nerdgraph_rows(body, rows, facets):
    converted, facet_names = to_nerdgraph_rows(body)
    assert converted == rows
    assert [list(row) for row in converted] == [list(row) for row in rows]  # key order too
    assert facet_names == facets


@pytest.mark.parametrize(
    ("body", "message"),
    [
        pytest.param(
            {"current": {"results": []}, "previous": {"results": []}, "metadata": {}},
            "COMPARE WITH",
            id="compare_with",
        ),
        pytest.param(
            {"results": [{"count": 5}, {"average": 1}], "metadata": {"contents": [COUNT]}},
            "2 results in a row, but its metadata lists 1 aggregates",
            id="more_results_than_contents",
        ),
        pytest.param(
            {
                "facets": [{"name": "x", "results": [{"count": 1}]}],
                "metadata": {"contents": [COUNT]},
            },
            "no metadata.facet",
            id="facets_without_names",
        ),
        pytest.param(
            {"results": [{"count": 5}]},
            "no metadata.contents",
            id="no_contents",
        ),
        pytest.param(
            {
                "facets": [{"name": ["a", "b", "c"], "results": [{"count": 1}]}],
                "metadata": {"facet": ["appName", "host"], "contents": {"contents": [COUNT]}},
            },
            "facet ['a', 'b', 'c'] for the attributes ['appName', 'host']",
            id="facet_value_of_wrong_width",
        ),
    ],
)
def test_unreadable_answers_are_refused_with_the_reason(body, message):
    with pytest.raises(NewRelicError) as error:
        to_nerdgraph_rows(body)
    assert message in str(error.value)


# -- InsightsClient over HTTP (responses) ---------------------------------------------------------


@pytest.fixture
def client(fake_time: FakeClock) -> Iterator[InsightsClient]:
    with InsightsClient(BASE, QUERY_KEY, sleep=fake_time.sleep, clock=fake_time) as insights_client:
        yield insights_client


def count_answer(count: int = 5) -> dict[str, Any]:
    return {"results": [{"count": count}], "metadata": {"contents": [COUNT]}}


@responses.activate
def test_sends_the_key_header_and_the_nrql_url_encoded(client):
    nrql = "SELECT count(*) FROM T WHERE a = 'x+y & z=1%' AND b LIKE '#Zürich ☃' SINCE 1 UNTIL 2"
    responses.get(QUERY_URL, json=count_answer())
    result = client.query(ACCOUNT, nrql)
    [call] = responses.calls
    sent = urlsplit(call.request.url)
    assert f"{sent.scheme}://{sent.netloc}{sent.path}" == QUERY_URL
    assert parse_qs(sent.query) == {"nrql": [nrql]}
    assert "+y" not in sent.query and "%2By" in sent.query  # a literal + is not a space
    assert call.request.headers["X-Query-Key"] == QUERY_KEY
    assert "API-Key" not in call.request.headers
    assert (result.results, result.facets, result.requests, result.retries) == (
        [{"count": 5}],
        (),
        1,
        0,
    )


@responses.activate
@pytest.mark.parametrize("status", [429, 503, 500, 502])
def test_transient_statuses_are_retried_after_a_backoff(client, fake_time, status):
    responses.get(
        QUERY_URL, status=status, json={"error": "slow down"}, headers={"Retry-After": "7"}
    )
    responses.get(QUERY_URL, json=count_answer(9))
    result = client.query(ACCOUNT, NRQL)
    assert result.results == [{"count": 9}]
    assert (result.requests, result.retries) == (2, 1)
    assert len(fake_time.sleeps) == 1 and fake_time.sleeps[0] >= 7  # Retry-After honoured


@responses.activate
def test_503_is_the_inspected_limit_so_the_window_is_too_big_not_retried(client, fake_time):
    responses.get(QUERY_URL, status=503, json={"error": "Inspected data limit exceeded"})
    with pytest.raises(QueryTooBig) as error:
        client.query(ACCOUNT, NRQL, shrinkable=True)
    assert str(error.value) == "New Relic answered HTTP 503: Inspected data limit exceeded"
    assert error.value.requests == 1 and fake_time.sleeps == []


@responses.activate
def test_performance_stats_give_the_inspected_count(client):
    answer = {**count_answer(9), "performanceStats": {"inspectedCount": 118, "matchCount": 9}}
    responses.get(QUERY_URL, json=answer)
    assert client.query(ACCOUNT, NRQL).inspected == 118


@responses.activate
def test_persistent_429_gives_up_after_max_attempts(fake_time):
    responses.get(QUERY_URL, status=429, json={"error": "Too many requests"})
    insights = InsightsClient(
        BASE, QUERY_KEY, max_attempts=3, sleep=fake_time.sleep, clock=fake_time
    )
    with pytest.raises(TransientError) as error:
        insights.query(ACCOUNT, NRQL)
    assert "HTTP 429: Too many requests (gave up after 3 attempts" in str(error.value)
    assert len(responses.calls) == 3 and len(fake_time.sleeps) == 2


@responses.activate
@pytest.mark.parametrize("status", [401, 403])
def test_a_refused_key_is_an_auth_error_that_names_the_variable_not_the_key(client, status):
    responses.get(QUERY_URL, status=status, json={"error": f"Invalid query key {QUERY_KEY}"})
    with pytest.raises(AuthError) as error:
        client.query(ACCOUNT, NRQL)
    message = str(error.value)
    assert "NEW_RELIC_QUERY_KEY" in message and f"HTTP {status}" in message
    assert QUERY_KEY not in message and QUERY_KEY not in repr(client)
    assert len(responses.calls) == 1  # never retried


@responses.activate
@pytest.mark.parametrize("status", [200, 400])
def test_an_error_body_is_a_new_relic_error_with_its_text(client, status):
    text = "NRQL Syntax Error: Error at line 1 position 15, unexpected 'FROM'"
    responses.get(QUERY_URL, status=status, json={"error": text})
    with pytest.raises(NewRelicError) as error:
        client.query(ACCOUNT, NRQL)
    assert text in str(error.value)
    assert len(responses.calls) == 1


@responses.activate
def test_an_overload_error_body_is_retried(client):
    responses.get(
        QUERY_URL, json={"error": "Your query either timed out or we're under heavy load"}
    )
    responses.get(QUERY_URL, json=count_answer())
    assert client.query(ACCOUNT, NRQL).retries == 1


@responses.activate
def test_a_proxy_page_is_transient(client):
    responses.get(QUERY_URL, status=200, body="<html>Sign in</html>", content_type="text/html")
    responses.get(QUERY_URL, json=count_answer())
    assert client.query(ACCOUNT, NRQL).requests == 2


@responses.activate
def test_a_redirect_is_not_followed_and_names_the_url_variable(client):
    responses.get(QUERY_URL, status=302, headers={"Location": "https://login.newrelic.com/"})
    with pytest.raises(NewRelicError) as error:
        client.query(ACCOUNT, NRQL)
    assert "NEW_RELIC_INSIGHTS_URL" in str(error.value)
    assert len(responses.calls) == 1


@responses.activate
def test_nrql_of_4000_bytes_is_refused_before_any_request(client):
    responses.get(QUERY_URL, json=count_answer())
    prefix = "SELECT count(*) FROM T WHERE a = '"
    fitting = prefix + "x" * (MAX_NRQL_BYTES - 1 - len(prefix) - 1) + "'"
    assert len(fitting.encode()) == MAX_NRQL_BYTES - 1
    client.query(ACCOUNT, fitting)
    too_long = fitting[:-2] + "é'"  # one character, two bytes
    with pytest.raises(NewRelicError) as error:
        client.query(ACCOUNT, too_long)
    assert "4,000 bytes" in str(error.value)
    assert len(responses.calls) == 1


# -- the fake Insights server --------------------------------------------------------------------


@pytest.fixture
def insights() -> Iterator[FakeInsights]:
    with FakeInsights(query_key=QUERY_KEY, now=lambda: NOW) as server:
        yield server


def fake_client(server: FakeInsights, fake_time: FakeClock, key: str = QUERY_KEY) -> InsightsClient:
    return InsightsClient(server.url, key, sleep=fake_time.sleep, clock=fake_time)


def window(since_ms: int, until_ms: int) -> str:
    return f"SINCE {since_ms} UNTIL {until_ms}"


HOUR_AGO = window(NOW * 1000 - 2 * HOUR_MS, NOW * 1000 - HOUR_MS)


def test_the_fake_answers_in_the_legacy_shapes(insights):
    nrql = (
        f"SELECT count(*) AS calls FROM Transaction FACET appName {HOUR_AGO} TIMESERIES 30 minutes"
    )
    response = requests.get(
        f"{insights.url}/v1/accounts/{ACCOUNT}/query",
        params={"nrql": nrql},
        headers={"X-Query-Key": QUERY_KEY},
        timeout=60,
    )
    body = response.json()
    assert response.status_code == 200
    assert body["metadata"]["facet"] == "appName"
    assert body["metadata"]["contents"]["timeSeries"]["contents"] == [alias("calls", COUNT)]
    first = body["facets"][0]
    assert isinstance(first["name"], str) and len(first["timeSeries"]) == 2
    assert set(first["timeSeries"][0]) == {
        "results",
        "beginTimeSeconds",
        "endTimeSeconds",
        "inspectedCount",
    }
    assert list(first["timeSeries"][0]["results"][0]) == ["count"]
    assert "totalResult" in body and "performanceStats" in body


def test_the_fake_refuses_a_bad_key_and_a_foreign_account(insights, fake_time):
    with pytest.raises(AuthError, match="HTTP 401"):
        fake_client(insights, fake_time, key="NRIQ-WRONG").query(ACCOUNT, NRQL)
    with pytest.raises(AuthError, match=r"HTTP 403\): Query key not valid for account 42"):
        fake_client(insights, fake_time).query(42, NRQL)
    assert [(r.outcome, r.status) for r in insights.requests] == [
        ("bad_query_key", 401),
        ("forbidden", 403),
    ]


def test_the_fake_reports_nrql_errors_as_new_relic_does(insights, fake_time):
    with pytest.raises(NewRelicError, match="NRQL Syntax Error"):
        fake_client(insights, fake_time).query(ACCOUNT, "SELECT count(*) FROM")
    assert insights.requests[-1].outcome == "nrql_error"


@pytest.mark.parametrize("kind", ["http429", "http503", "html"])
def test_the_fakes_faults_are_retried_by_the_client(insights, fake_time, kind):
    insights.set_faults([kind], every=2, retry_after=0.5)
    nrql = f"SELECT count(*) FROM Transaction {HOUR_AGO} TIMESERIES 1 hour"
    insights_client = fake_client(insights, fake_time)
    first = insights_client.query(ACCOUNT, nrql)
    second = insights_client.query(ACCOUNT, nrql)
    assert (first.requests, second.requests) == (1, 2)
    assert second.results == first.results
    assert [r.outcome for r in insights.requests] == ["ok", kind, "ok"]
    assert insights.requests[0].since_ms == NOW * 1000 - 2 * HOUR_MS
    if kind != "html":
        assert fake_time.sleeps[0] >= 0.5  # the fault's Retry-After


def test_the_fake_knows_only_http_level_faults(insights):
    assert "graphql_timeout" not in FAULT_KINDS
    with pytest.raises(ValueError, match="unknown fault kinds"):
        insights.set_faults(["graphql_timeout"])


def test_command_line_serves_until_sigterm():
    command = [sys.executable, "-m", "fakes.insights", "--port", "0", "--account", "42"]
    command += ["--faults", "http503", "--fault-every", "2", "--query-key", "NRIQ-CLI"]
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        url = process.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        query = {"params": {"nrql": NRQL}, "headers": {"X-Query-Key": "NRIQ-CLI"}, "timeout": 60}
        first = requests.get(f"{url}/v1/accounts/42/query", **query)
        second = requests.get(f"{url}/v1/accounts/42/query", **query)
        assert (first.status_code, second.status_code) == (200, 503)
        assert first.json()["timeSeries"] and second.json() == {"error": "HTTP 503"}
        log = requests.get(f"{url}/_requests", timeout=60).json()
        assert [entry["outcome"] for entry in log] == ["ok", "http503"]
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0
    finally:
        process.kill()
        process.wait()


# -- both APIs, same data, byte-identical points -------------------------------------------------


@pytest.fixture(scope="module")
def both_apis() -> Iterator[tuple[NerdGraphClient, InsightsClient]]:
    with (
        FakeNerdGraph(api_key=API_KEY, now=lambda: NOW) as nerdgraph,
        FakeInsights(query_key=QUERY_KEY, now=lambda: NOW) as insights,
        NerdGraphClient(nerdgraph.url, API_KEY) as nerdgraph_client,
        InsightsClient(insights.url, QUERY_KEY) as insights_client,
    ):
        yield nerdgraph_client, insights_client


TWO_HOURS = window(NOW * 1000 - 3 * HOUR_MS, NOW * 1000 - HOUR_MS)
INTO_THE_FUTURE = window(NOW * 1000 - HOUR_MS, NOW * 1000 + 10 * MINUTE_MS)
RETENTION_EDGE = window(NOW * 1000 - 8 * DAY_MS - HOUR_MS, NOW * 1000 - 8 * DAY_MS + HOUR_MS)
TIMESERIES_QUERIES = [
    pytest.param(f"SELECT count(*) FROM Transaction {TWO_HOURS} TIMESERIES 1 minute", id="count"),
    pytest.param(
        "SELECT average(duration), percentile(duration, 95, 99), count(*) FROM Transaction"
        f" WHERE appName LIKE 'Call%' FACET appName, host LIMIT MAX {TWO_HOURS}"
        " TIMESERIES 5 minutes",
        id="facet_two_attributes_percentiles",
    ),
    pytest.param(
        "SELECT average(duration) AS 'avg duration', max(duration) AS peak, count(*) AS `calls`"
        f" FROM Transaction FACET appName LIMIT MAX {TWO_HOURS} TIMESERIES 1 minute",
        id="aliases",
    ),
    pytest.param(
        "SELECT percentile(duration, 50, 99.9) AS p, uniqueCount(host) FROM PageView"
        f" FACET countryCode LIMIT MAX {TWO_HOURS} TIMESERIES 5 minutes",
        id="aliased_percentile",
    ),
    pytest.param(
        "SELECT filter(count(*), WHERE error IS true), percentage(count(*), WHERE duration > 1)"
        " AS slow, rate(count(*), 1 minute), sum(duration), latest(duration), min(duration)"
        f" FROM Transaction {TWO_HOURS} TIMESERIES 1 minute",
        id="wrapping_functions",
    ),
    pytest.param(
        f"SELECT count(*) FROM Login FACET provider, success LIMIT MAX {TWO_HOURS}"
        " TIMESERIES 5 minutes",
        id="string_facets",
    ),
    pytest.param(
        "SELECT average(duration), percentile(duration, 95) FROM Transaction FACET appName"
        f" LIMIT MAX {INTO_THE_FUTURE} TIMESERIES 1 minute",
        id="empty_buckets",
    ),
    pytest.param(
        "SELECT average(duration), count(*) FROM Transaction FACET appName LIMIT MAX"
        f" {RETENTION_EDGE} TIMESERIES 5 minutes",
        id="retention_edge",
    ),
    pytest.param(
        "SELECT funnel(host, WHERE duration > 1 AS 'slow', WHERE error IS true), uniqueCount(host),"
        " uniques(host)"
        f" FROM Transaction FACET appName LIMIT MAX {TWO_HOURS} TIMESERIES 5 minutes",
        id="funnel_and_lower_case_uniquecount",
    ),
]


@pytest.mark.parametrize("nrql", TIMESERIES_QUERIES)
def test_both_apis_give_the_same_rows_and_byte_identical_lines(both_apis, nrql):
    nerdgraph_client, insights_client = both_apis
    expected = nerdgraph_client.query(ACCOUNT, nrql)
    got = insights_client.query(ACCOUNT, nrql)
    assert got.results == expected.results
    assert got.facets == expected.facets
    expected_lines = to_lines(expected.results, expected.facets, "nr_test", {"source": "nr"})
    got_lines = to_lines(got.results, got.facets, "nr_test", {"source": "nr"})
    assert got_lines and "\n".join(got_lines) == "\n".join(expected_lines)


@pytest.mark.parametrize(
    "nrql",
    [
        pytest.param(
            f"SELECT count(*) FROM TransactionError FACET appName {TWO_HOURS} TIMESERIES 5 minutes",
            id="attribute_without_facet_key",
        ),
        pytest.param(
            f"SELECT max(lagSeconds) FROM ReplicationLag FACET cluster, replica {TWO_HOURS}"
            " TIMESERIES 5 minutes",
            id="facet_list_without_attributes",
        ),
    ],
)
def test_both_apis_give_the_same_lines_whatever_the_facet_labels(both_apis, nrql):
    nerdgraph_client, insights_client = both_apis
    expected = nerdgraph_client.query(ACCOUNT, nrql)
    got = insights_client.query(ACCOUNT, nrql)
    assert got.results != expected.results  # the labels differ...
    expected_lines = to_lines(expected.results, expected.facets, "nr_test", {})
    got_lines = to_lines(got.results, got.facets, "nr_test", {})
    assert got_lines and got_lines == expected_lines  # ...the points do not
    assert len({line.partition(" ")[0] for line in got_lines}) > 1


def test_the_comparison_sees_null_buckets(both_apis):
    """The empty_buckets case holds nulls, so the equality above covers them."""
    nrql = TIMESERIES_QUERIES[6].values[0]
    rows = both_apis[1].query(ACCOUNT, nrql).results
    assert any(row["average.duration"] is None for row in rows)
    assert any(row["percentile.duration"] == {"95": 0} for row in rows)  # 0, as New Relic


@pytest.mark.parametrize(
    "nrql",
    [
        pytest.param(
            f"SELECT count(*), average(duration) FROM Transaction {TWO_HOURS}", id="no_facet"
        ),
        pytest.param(
            "SELECT count(*), percentile(duration, 99) AS p99 FROM Transaction"
            f" FACET appName, host LIMIT MAX {TWO_HOURS}",
            id="facet",
        ),
        pytest.param(
            f"SELECT duration, appName AS app, error FROM Transaction LIMIT MAX {TWO_HOURS}",
            id="raw_events",
        ),
        pytest.param(f"SELECT * FROM Transaction LIMIT 50 {TWO_HOURS}", id="raw_events_all"),
    ],
)
def test_both_apis_give_the_same_rows_without_timeseries(both_apis, nrql):
    nerdgraph_client, insights_client = both_apis
    expected = nerdgraph_client.query(ACCOUNT, nrql)
    got = insights_client.query(ACCOUNT, nrql)
    assert got.results and got.results == expected.results and got.facets == expected.facets
    assert [list(row) for row in got.results] == [list(row) for row in expected.results]


# -- function names: the Insights API spells them in lower case --------------------------------


@pytest.mark.parametrize("function", NRQL_AGGREGATOR_FUNCTIONS)
def test_insights_and_nerdgraph_answers_give_the_same_field_names(function):
    """`SELECT f(duration) FROM T TIMESERIES`: NerdGraph keys the value `f.duration` in
    NerdGraph's spelling; the Insights API names the function in lower case."""
    legacy = {
        "timeSeries": [
            {"results": [{function.lower(): 7}], "beginTimeSeconds": 60, "endTimeSeconds": 120}
        ],
        "metadata": {
            "timeSeries": {"contents": [{"function": function.lower(), "attribute": "duration"}]}
        },
    }
    nerdgraph = [{"beginTimeSeconds": 60, "endTimeSeconds": 120, f"{function}.duration": 7}]
    rows, facets = to_nerdgraph_rows(legacy)
    assert to_lines(rows, facets, "m", {}) == to_lines(nerdgraph, [], "m", {})
    assert f" {function}.duration=7.0 " in to_lines(rows, facets, "m", {})[0]


def test_the_real_uniquecount_answer_is_keyed_as_nerdgraph_keys_it():
    """rupesh1/grafana-newrelic-datasource UniqueCountWithtable.spec.ts (one facet kept)."""
    legacy = {
        "facets": [{"name": "419", "results": [{"uniqueCount": 148}]}],
        "metadata": {
            "facet": "httpResponseCode",
            "contents": {
                "contents": [
                    {"function": "uniquecount", "attribute": "customerIdentifier", "simple": True}
                ]
            },
        },
    }
    rows, _facets = to_nerdgraph_rows(legacy)
    assert rows == [
        {"uniqueCount.customerIdentifier": 148, "facet": "419", "httpResponseCode": "419"}
    ]


def test_a_funnel_answer_keeps_its_steps_for_the_transform():
    legacy = {
        "timeSeries": [
            {"results": [{"steps": [112, 94, 8]}], "beginTimeSeconds": 1, "endTimeSeconds": 61}
        ],
        "metadata": {
            "timeSeries": {
                "contents": [{"function": "funnel", "attribute": "session", "steps": ["A", "B"]}]
            }
        },
    }
    rows, _ = to_nerdgraph_rows(legacy)
    assert rows == [
        {"funnel.session": {"steps": [112, 94, 8]}, "beginTimeSeconds": 1, "endTimeSeconds": 61}
    ]


def test_every_insights_request_passes_the_shared_limiter_retries_included(
    fake_time: FakeClock,
) -> None:
    entered: list[str] = []

    class RecordingLimiter(Limiter):
        def acquire(self, account: int | None = None, nrql: str | None = None) -> None:
            entered.append("enter")
            super().acquire(account, nrql)

    with responses.RequestsMock() as mock:
        mock.get(QUERY_URL, status=500, body="")
        mock.get(QUERY_URL, json={"results": [{"count": 5}], "metadata": {"contents": [COUNT]}})
        client = InsightsClient(
            BASE,
            QUERY_KEY,
            limiter=RecordingLimiter(),
            sleep=fake_time.sleep,
            clock=fake_time,
        )
        result = client.query(ACCOUNT, NRQL)

    assert (result.requests, result.retries) == (2, 1)
    assert entered == ["enter", "enter"] and len(fake_time.sleeps) == 1
