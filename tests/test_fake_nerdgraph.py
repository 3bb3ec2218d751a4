"""The fake NerdGraph server, over real HTTP: shapes, data model, errors, faults, CLI."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest
import requests

from fakes.data import answer
from fakes.events import events
from fakes.nerdgraph import FAULT_KINDS, FakeNerdGraph, facet_values, real_facet_labels, value
from fakes.nrql import NrqlError
from tests.clocks import FakeClock
from tests.nerdgraph_http import ACCOUNT, HOUR_MS, NOW, QUERY, UNTIL_MS, nrql_result, post

MINUTE_MS = 60_000
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def fake():
    with FakeNerdGraph(now=lambda: NOW, accounts={ACCOUNT, 7654321}) as server:
        yield server


def hours(count: int, until_ms: int = UNTIL_MS) -> str:
    return f"SINCE {until_ms - count * HOUR_MS} UNTIL {until_ms}"


def graphql_error(response: requests.Response) -> dict:
    assert response.status_code == 200
    document = response.json()
    assert document["data"] == {"actor": {"account": {"nrql": None}}}
    [error] = document["errors"]
    assert error["path"] == ["actor", "account", "nrql"]
    return error


# -- shapes ------------------------------------------------------------------------------------


def test_timeseries_without_facet_has_one_row_per_bucket(fake):
    rows, metadata = nrql_result(
        fake, f"SELECT count(*), average(duration) FROM Transaction {hours(3)} TIMESERIES 1 hour"
    )
    assert [set(row) for row in rows] == [
        {"count", "average.duration", "beginTimeSeconds", "endTimeSeconds"}
    ] * 3
    assert [row["beginTimeSeconds"] for row in rows] == [
        UNTIL_MS // 1000 - 3 * 3600 + i * 3600 for i in range(3)
    ]
    assert all(row["endTimeSeconds"] - row["beginTimeSeconds"] == 3600 for row in rows)
    assert metadata == {
        "facets": None,
        "eventTypes": ["Transaction"],
        "messages": [],
        "timeWindow": {"begin": UNTIL_MS - 3 * HOUR_MS, "end": UNTIL_MS},
    }


def test_one_facet_rows_carry_facet_and_attribute(fake):
    rows, metadata = nrql_result(
        fake,
        f"select count(*) from Transaction facet appName limit max {hours(2)} timeseries 1 hour",
    )
    apps = {value for (value,) in facet_values("Transaction", ("appName",))}
    assert {row["facet"] for row in rows} == apps
    assert all(row["appName"] == row["facet"] for row in rows)
    assert len(rows) == 2 * len(apps)  # one row per (facet, bucket)
    assert metadata["facets"] == ["appName"]


def test_two_facets_give_a_list_in_facet_order(fake):
    rows, metadata = nrql_result(
        fake, f"SELECT count(*) FROM Transaction FACET `host`, appName LIMIT MAX {hours(1)}"
    )
    assert metadata["facets"] == ["host", "appName"]
    assert all(row["facet"] == [row["host"], row["appName"]] for row in rows)
    assert ["web-03", "checkout"] in [row["facet"] for row in rows]
    assert [None, "checkout"] in [row["facet"] for row in rows]  # a null facet value


def test_percentiles_are_nested_by_percentile_string_and_grow_with_p(fake):
    rows, _ = nrql_result(
        fake,
        f"SELECT percentile(duration, 50, 95, 99.9), count(duration) FROM Transaction"
        f" FACET appName LIMIT MAX {hours(24)} TIMESERIES 1 hour",
    )
    nested = [row["percentile.duration"] for row in rows]
    assert all(set(p) == {"50", "95", "99.9"} for p in nested)
    filled = [row["percentile.duration"] for row in rows if row["count.duration"]]
    assert filled and all(p["50"] < p["95"] < p["99.9"] for p in filled)
    # As New Relic does: a bucket without samples answers 0 percentiles (not null), and
    # only the count tells it apart.
    empty = [row["percentile.duration"] for row in rows if row["count.duration"] == 0]
    assert empty and all(p == {"50": 0, "95": 0, "99.9": 0} for p in empty)


def test_median_is_the_50th_percentile_keyed_median(fake):
    rows, _ = nrql_result(
        fake,
        f"SELECT median(duration), percentile(duration, 50) FROM Transaction {hours(6)}"
        " TIMESERIES 1 hour",
    )
    assert all(row["median.duration"] == row["percentile.duration"] for row in rows)
    assert all(set(row["median.duration"]) == {"50"} for row in rows)


def test_filtered_percentile_of_no_match_is_zero_next_to_a_zero_filtered_count(fake):
    rows, _ = nrql_result(
        fake,
        "SELECT filter(percentile(duration, 75), WHERE error IS true) AS 'p75', "
        f"filter(count(duration), WHERE error IS true) AS n FROM Transaction {hours(24)}"
        " TIMESERIES 1 hour",
    )
    assert {"75": 0} in [row["p75"] for row in rows if row["n"] == 0]
    assert all(row["p75"]["75"] > 0 for row in rows if row["n"])


def test_other_and_total_results_add_up_when_asked_for(fake):
    nrql = f"SELECT count(*) FROM Transaction FACET appName LIMIT 2 {hours(3)} TIMESERIES 1 hour"
    query = QUERY.replace("{ results", "{ results otherResult totalResult")
    answer = post(fake, nrql, query=query).json()["data"]["actor"]["account"]["nrql"]
    rows, other, total = answer["results"], answer["otherResult"], answer["totalResult"]
    assert len({row["facet"] for row in rows}) == 2
    assert len(other) == len(total) == 3  # one per bucket
    for bucket in total:
        begin = bucket["beginTimeSeconds"]
        shown = sum(row["count"] for row in rows if row["beginTimeSeconds"] == begin)
        rest = next(o["count"] for o in other if o["beginTimeSeconds"] == begin)
        assert shown + rest == bucket["count"]
    assert sum(bucket["count"] for bucket in other) > 0  # Transaction has more than 2 apps
    plain = post(fake, nrql).json()["data"]["actor"]["account"]["nrql"]
    assert "otherResult" not in plain and "totalResult" not in plain


def test_messages_are_answered_for_the_configured_nrql(fake):
    fake.add_messages("FROM Login", ["Your query's results were limited"])
    _, metadata = nrql_result(fake, f"SELECT count(*) FROM Login {hours(1)}")
    assert metadata["messages"] == ["Your query's results were limited"]
    _, metadata = nrql_result(fake, f"SELECT count(*) FROM Transaction {hours(1)}")
    assert metadata["messages"] == []


def test_alias_replaces_the_key_in_every_quoting(fake):
    rows, _ = nrql_result(
        fake,
        "SELECT count(*) AS calls, average(duration) AS 'avg time', max(duration) AS `slowest`,"
        f" percentile(duration, 95) AS p FROM Transaction {hours(1)}",
    )
    assert set(rows[0]) == {"calls", "avg time", "slowest", "p"}
    assert set(rows[0]["p"]) == {"95"}


def test_without_timeseries_one_row_per_facet_and_no_time_keys(fake):
    rows, metadata = nrql_result(
        fake, f"SELECT count(*), sum(duration) FROM Login FACET provider {hours(24)}"
    )
    assert sorted(row["provider"] for row in rows) == ["Google Workspace", "Okta", "saml=corp, inc"]
    assert all(set(row) == {"count", "sum.duration", "facet", "provider"} for row in rows)
    assert metadata["timeWindow"] == {"begin": UNTIL_MS - 24 * HOUR_MS, "end": UNTIL_MS}


def test_wrapping_functions_keys_and_values_agree(fake):
    rows, _ = nrql_result(
        fake,
        "SELECT count(*), percentage(count(*), WHERE error IS true),"
        " filter(count(*), WHERE appName LIKE 'a%' AND host IN ('x', 'FACET')),"
        f" rate(count(*), 1 minute) FROM Transaction {hours(6)} TIMESERIES 1 hour",
    )
    assert set(rows[0]) >= {"percentage.count", "filter.count", "rate.count"}
    for row in rows:
        assert 0 <= row["filter.count"] <= row["count"]
        assert row["rate.count"] == pytest.approx(row["count"] / 60)
        if row["count"]:
            assert row["percentage.count"] == pytest.approx(
                100 * row["filter.count"] / row["count"]
            )


def test_buckets_end_at_until_and_the_first_one_is_full(fake):
    since_ms = UNTIL_MS - 150_000  # two and a half minutes
    rows, metadata = nrql_result(
        fake,
        f"SELECT count(*) FROM Transaction SINCE {since_ms} UNTIL {UNTIL_MS} TIMESERIES 1 minute",
    )
    until = UNTIL_MS // 1000
    assert [(row["beginTimeSeconds"], row["endTimeSeconds"]) for row in rows] == [
        (until - 180, until - 120),
        (until - 120, until - 60),
        (until - 60, until),
    ]
    assert metadata["timeWindow"]["begin"] == UNTIL_MS - 180_000


def test_one_field_mixes_integers_and_floats(fake):
    rows, _ = nrql_result(
        fake, f"SELECT average(duration) FROM Transaction {hours(48)} TIMESERIES 1 hour"
    )
    kinds = {type(row["average.duration"]) for row in rows}
    assert kinds == {int, float, type(None)}


def test_empty_buckets_count_zero_and_null_averages(fake):
    rows, _ = nrql_result(
        fake,
        "SELECT count(*), average(duration), sum(duration), uniqueCount(user), min(duration),"
        f" latest(duration), percentile(duration, 95) FROM ReplicationLag FACET replica"
        f" {hours(48)} TIMESERIES 1 hour",
    )
    empty = [row for row in rows if row["count"] == 0]
    assert 0 < len(empty) < len(rows) / 4  # about one bucket in ten
    for row in empty:
        assert (row["sum.duration"], row["uniqueCount.user"]) == (0, 0)
        assert row["average.duration"] is row["min.duration"] is row["latest.duration"] is None
        assert row["percentile.duration"] == {"95": 0}  # New Relic answers 0, not null


def test_special_character_null_and_empty_facet_values_are_served(fake):
    rows, _ = nrql_result(
        fake, f"SELECT count(*) FROM Transaction FACET appName LIMIT MAX {hours(1)}"
    )
    apps = {row["appName"] for row in rows}
    assert apps >= {
        "billing,eu",
        "a=b",
        'say "hi"',
        "C:\\tmp\\",
        "Zürich ☃ 東京",
        "Call Center API",
    }
    names, _ = nrql_result(
        fake, f"SELECT count(*) FROM Transaction FACET name LIMIT MAX {hours(1)}"
    )
    assert "" in {row["name"] for row in names}
    hosts, _ = nrql_result(
        fake, f"SELECT count(*) FROM Transaction FACET host LIMIT MAX {hours(1)}"
    )
    assert None in {row["host"] for row in hosts}
    logins, _ = nrql_result(fake, f"SELECT count(*) FROM Login FACET success {hours(1)}")
    assert {row["success"] for row in logins} == {"true", "false"}


def test_unknown_event_types_and_attributes(fake):
    rows, _ = nrql_result(fake, f"SELECT count(*) FROM MyCustomEvent FACET region {hours(1)}")
    assert sorted(row["region"] for row in rows) == ["value 1", "value 2", "value 3"]
    rows, _ = nrql_result(fake, f"SELECT count(*) FROM Transaction FACET nosuch {hours(1)}")
    assert [(row["facet"], row["nosuch"]) for row in rows] == [(None, None)]


def test_retention_gives_zeros_and_the_future_gives_nulls(fake):
    retention_start_ms = (NOW - 8 * 86400) * 1000
    old, _ = nrql_result(
        fake,
        f"SELECT count(*), average(duration), percentile(duration, 95) FROM Transaction"
        f" FACET appName {hours(24, retention_start_ms)} TIMESERIES 1 hour",
    )
    assert old and all(row["count"] == 0 and row["average.duration"] == 0 for row in old)
    assert all(type(row["average.duration"]) is int for row in old)  # zeros, not nulls
    assert all(row["percentile.duration"] == {"95": 0} for row in old)
    future, _ = nrql_result(
        fake,
        f"SELECT count(*), average(duration) FROM Transaction {hours(3, (NOW + 7200) * 1000)}"
        " TIMESERIES 1 hour",
    )
    assert [(row["count"], row["average.duration"]) for row in future[-2:]] == [(0, None)] * 2
    kept, _ = nrql_result(
        fake,
        f"SELECT count(*) FROM Transaction {hours(24, retention_start_ms + 24 * HOUR_MS)}"
        " TIMESERIES 1 hour",
    )
    assert sum(row["count"] for row in kept) > 0


def test_served_values_match_the_data_model(fake):
    functions = ["count", "average", "sum", "min", "max", "latest", "uniqueCount"]
    select = ", ".join(f"{f}(duration)" if f != "count" else "count(*)" for f in functions)
    rows, _ = nrql_result(
        fake,
        f"SELECT {select}, percentile(duration, 99), filter(average(duration), WHERE x = 1)"
        f" FROM Transaction FACET appName, host LIMIT MAX {hours(6)} TIMESERIES 30 minutes",
    )
    for row in rows:
        facet = tuple(row["facet"])
        start = row["beginTimeSeconds"]
        for function in functions:
            key = "count" if function == "count" else f"{function}.duration"
            attribute = None if function == "count" else "duration"
            expected = value("Transaction", facet, start, function, attribute, bucket_seconds=1800)
            assert row[key] == expected, (row, key)
        p99 = value(
            "Transaction", facet, start, "percentile", "duration", "99", bucket_seconds=1800
        )
        # The model says None (no sample); the server answers 0, as New Relic does.
        assert row["percentile.duration"] == {"99": 0 if p99 is None else p99}
        filtered = value(
            "Transaction", facet, start, "filter", "average.duration", bucket_seconds=1800
        )
        assert row["filter.average.duration"] == filtered


def test_a_query_without_timeseries_is_one_bucket_of_the_data_model(fake):
    since_ms = UNTIL_MS - 6 * HOUR_MS
    rows, _ = nrql_result(
        fake,
        "SELECT count(*), percentage(count(*), WHERE ok), rate(count(*), 1 hour)"
        f" FROM Login FACET provider, success SINCE {since_ms} UNTIL {UNTIL_MS}",
    )
    assert len(rows) == len(facet_values("Login", ["provider", "success"]))
    for row in rows:
        facet = tuple(row["facet"])
        expected = {
            key: value(
                "Login",
                facet,
                since_ms // 1000,
                function,
                "count",
                bucket_seconds=6 * 3600,
                per_seconds=3600,
            )
            for key, function in [("percentage.count", "percentage"), ("rate.count", "rate")]
        }
        expected["count"] = value(
            "Login", facet, since_ms // 1000, "count", None, bucket_seconds=6 * 3600
        )
        assert {key: row[key] for key in expected} == expected


def test_facet_limit_default_explicit_and_max_with_ordering(fake):
    window = f"{hours(1)} TIMESERIES 10 minutes"
    default, _ = nrql_result(fake, f"SELECT count(*) FROM Bench FACET name {window}")
    five, _ = nrql_result(fake, f"SELECT count(*) FROM Bench FACET name LIMIT 5 {window}")
    everything, _ = nrql_result(fake, f"SELECT count(*) FROM Bench FACET name LIMIT MAX {window}")

    def ranking(rows: list[dict]) -> list[str]:
        return list(dict.fromkeys(row["facet"] for row in rows))

    assert len(ranking(everything)) == 100
    assert ranking(default) == ranking(everything)[:10]
    assert ranking(five) == ranking(everything)[:5]
    totals = {}
    for row in everything:
        totals[row["facet"]] = totals.get(row["facet"], 0) + row["count"]
    assert [totals[f] for f in ranking(everything)] == sorted(totals.values(), reverse=True)


def test_bench_escaped_has_n_facet_values_that_need_escaping(fake):
    window = f"{hours(1)} TIMESERIES 10 minutes"
    rows, _ = nrql_result(
        fake, f"SELECT count(*) FROM BenchEscaped7 FACET appName, host LIMIT MAX {window}"
    )
    facets = {tuple(row["facet"]) for row in rows}
    assert len(facets) == 7
    assert all(row["facet"] == [row["appName"], row["host"]] for row in rows)
    for app, host in facets:
        assert app.startswith("appName ") and host.startswith("host ")
        assert all(char in app for char in ' ,="☃')


def test_benchmark_sized_query_is_answered_quickly(fake):
    nrql = (
        "SELECT count(*), average(duration) FROM Bench FACET name LIMIT MAX"
        f" SINCE {UNTIL_MS - 366 * MINUTE_MS} UNTIL {UNTIL_MS} TIMESERIES 1 minute"
    )
    post(fake, nrql)  # warm the caches
    # CPU time of this process (the fake serves on a thread of it), not wall time: the other
    # processes of a loaded CI machine do not count, only the fake's own work does.
    started = time.process_time()
    rows, _ = nrql_result(fake, nrql)
    spent = time.process_time() - started
    assert len(rows) == 100 * 366
    assert spent < 2.0  # typically ~0.3 s


# -- errors ------------------------------------------------------------------------------------


def test_bad_key_is_http_401(fake):
    response = post(fake, f"SELECT count(*) FROM Transaction {hours(1)}", key="NRAK-WRONG")
    assert response.status_code == 401
    assert response.json()["errors"][0]["extensions"]["error_code"] == "BAD_API_KEY"
    assert fake.requests[-1].outcome == "bad_api_key"
    assert "NRAK-WRONG" not in response.text


def test_bad_key_as_graphql_error():
    with FakeNerdGraph(now=lambda: NOW, bad_key_style="graphql") as server:
        response = post(server, f"SELECT count(*) FROM Transaction {hours(1)}", key="nope")
    assert response.status_code == 200
    assert response.json()["errors"][0]["extensions"]["error_code"] == "BAD_API_KEY"


def test_forbidden_account(fake):
    error = graphql_error(post(fake, f"SELECT count(*) FROM T {hours(1)}", account=2022412))
    assert error["message"] == "You are not authorized to query account 2022412"
    assert fake.requests[-1].outcome == "forbidden"


def test_366_buckets_is_the_limit(fake):
    window = f"SINCE {UNTIL_MS - 366 * MINUTE_MS} UNTIL {UNTIL_MS}"
    rows, _ = nrql_result(fake, f"SELECT count(*) FROM T {window} TIMESERIES 1 minute")
    assert len(rows) == 366
    window = f"SINCE {UNTIL_MS - 367 * MINUTE_MS} UNTIL {UNTIL_MS}"
    error = graphql_error(post(fake, f"SELECT count(*) FROM T {window} TIMESERIES 1 minute"))
    assert error["message"] == "TIMESERIES supports a maximum of 366 buckets"


@pytest.mark.parametrize(
    ("window", "message"),
    [
        (
            f"SINCE {UNTIL_MS} UNTIL {UNTIL_MS}",
            "Your query's start time must be before its end time.",
        ),
        (f"SINCE {UNTIL_MS} UNTIL {UNTIL_MS - 1}", "Your query's start time must be before"),
        (f"SINCE {UNTIL_MS - MINUTE_MS} UNTIL {UNTIL_MS} TIMESERIES 1 hour", "step size is larger"),
    ],
    ids=["equal", "reversed", "step-too-large"],
)
def test_nrdb_rejects_bad_windows(fake, window, message):
    error = graphql_error(post(fake, f"SELECT count(*) FROM T {window}"))
    assert error["message"].startswith(
        "External Service 'NRDB' execution resulted in 400 - cause: "
    )
    assert message in error["message"]


@pytest.mark.parametrize(
    ("nrql", "message"),
    [
        ("SELECT count(*) FROM FROM", "unexpected 'FROM'"),
        ("SELECT count(*) FROM T WHERE", "unexpected 'end of query'"),
        ("SELECT bogus(x) FROM T", "Unknown function bogus"),
        ("SELECT count(*) FROM T TIMESERIES 1 fortnight", "unexpected 'fortnight'"),
        ("SELECT count(*) FROM T LIMIT 1 LIMIT 2", "unexpected 'LIMIT'"),
        ("SELECT count(*) FROM T COMPARE WITH 1 week ago", "unexpected 'COMPARE'"),
    ],
)
def test_unparseable_nrql_is_a_syntax_error(fake, nrql, message):
    error = graphql_error(post(fake, nrql))
    assert error["message"].startswith("NRQL Syntax Error: ")
    assert message in error["message"]
    assert fake.requests[-1].outcome == "nrql_error"


def test_reject_nrql_by_substring(fake):
    fake.reject_nrql("FROM Login")
    error = graphql_error(post(fake, f"SELECT count(*) FROM Login {hours(1)}"))
    assert error["message"] == "NRQL Syntax Error: Error at line 1 position 15, unexpected 'FROM'"
    fake.reject_nrql("Other", "No such event type")
    assert (
        graphql_error(post(fake, "SELECT count(*) FROM Other"))["message"] == "No such event type"
    )
    nrql_result(fake, f"SELECT count(*) FROM Transaction {hours(1)}")


def test_nrql_must_be_passed_as_variables(fake):
    inlined = (
        f'{{ actor {{ account(id: {ACCOUNT}) {{ nrql(query: "SELECT 1") {{ results }} }} }} }}'
    )
    response = post(fake, "SELECT count(*) FROM T", query=inlined)
    assert response.status_code == 200
    assert "data" not in response.json() and "$nrql" in response.json()["errors"][0]["message"]
    assert fake.requests[-1].outcome == "bad_request"


# -- faults ------------------------------------------------------------------------------------

NRQL = f"SELECT count(*) FROM Transaction {hours(1)}"


@pytest.mark.parametrize(
    ("kind", "status", "content_type"),
    [
        ("http429", 429, "json"),
        ("http500", 500, "json"),
        ("http502", 502, "json"),
        ("http503", 503, "json"),
        ("html", 502, "text/html"),
        ("html200", 200, "text/html"),
    ],
)
def test_http_faults(fake, kind, status, content_type):
    fake.set_faults([kind])
    response = post(fake, NRQL)
    assert response.status_code == status
    assert content_type in response.headers["Content-Type"]
    assert "data" not in response.text


@pytest.mark.parametrize(
    ("kind", "error_class", "message"),
    [
        ("graphql_timeout", "TIMEOUT", "Your query either timed out or we're under heavy load"),
        ("too_many_requests", "TOO_MANY_REQUESTS", "Too many requests"),
        ("internal_server_error", "INTERNAL_SERVER_ERROR", "Internal server error"),
    ],
)
def test_graphql_faults(fake, kind, error_class, message):
    fake.set_faults([kind])
    error = graphql_error(post(fake, NRQL))
    assert error["extensions"]["errorClass"] == error_class
    assert message in error["message"]


def test_retry_after_header_on_429(fake):
    fake.set_faults(["http429"], retry_after=1.5)
    assert post(fake, NRQL).headers["Retry-After"] == "1.5"
    fake.set_faults(["http429"])
    assert "Retry-After" not in post(fake, NRQL).headers


def test_not_json_and_no_data(fake):
    fake.set_faults(["not_json", "no_data"])
    with pytest.raises(ValueError):
        post(fake, NRQL).json()
    document = post(fake, NRQL).json()
    assert isinstance(document, dict) and "data" not in document


def test_reset_closes_the_connection_unanswered(fake):
    fake.set_faults(["reset"])
    with pytest.raises(requests.ConnectionError):
        post(fake, NRQL)
    assert fake.requests[-1].outcome == "reset"


def test_slow_answers_normally_after_the_latency():
    with FakeNerdGraph(now=lambda: NOW, latency=0.05) as server:
        server.set_faults(["slow"])
        started = time.perf_counter()
        rows, _ = nrql_result(server, NRQL)
        assert time.perf_counter() - started >= 0.1  # the latency, then as much again
        assert rows and server.requests[-1].outcome == "slow"


def test_every_nth_request_gets_the_next_fault_cycling(fake):
    fake.set_faults(["http500", "graphql_timeout"], every=2)
    statuses = [post(fake, NRQL).status_code for _ in range(6)]
    assert statuses == [200, 500, 200, 200, 200, 500]
    outcomes = [record.outcome for record in fake.requests]
    assert outcomes == ["ok", "http500", "ok", "graphql_timeout", "ok", "http500"]


def test_per_query_faults_count_each_querys_requests_apart_whatever_the_interleaving(fake):
    fake.set_faults(["http500", "graphql_timeout", "http502"], every=3, per_query=True)
    since = UNTIL_MS - HOUR_MS
    a = [f"SELECT count(*) FROM Bench SINCE {since + i} UNTIL {UNTIL_MS}" for i in range(6)]
    b = [f"SELECT count(*) FROM Login SINCE {since + i} UNTIL {UNTIL_MS}" for i in range(3)]
    # Interleaved as concurrent workers might: A A B A B A A B A.
    for nrql in (a[0], a[1], b[0], a[2], b[1], a[3], a[4], b[2], a[5]):
        post(fake, nrql)
    outcomes = [(record.nrql.split()[3], record.outcome) for record in fake.requests]
    assert [outcome for query, outcome in outcomes if query == "Bench"] == [
        "ok", "ok", "http500", "ok", "ok", "http502",
    ]  # fmt: skip
    assert [outcome for query, outcome in outcomes if query == "Login"] == [
        "ok", "ok", "graphql_timeout",
    ]  # fmt: skip


def test_every_fault_kind_is_covered_and_unknown_kinds_are_refused(fake):
    tested = {"http429", "http500", "http502", "http503", "html", "html200", "graphql_timeout"}
    tested |= {"too_many_requests", "internal_server_error", "not_json", "no_data", "reset", "slow"}
    assert tested == FAULT_KINDS
    with pytest.raises(ValueError, match="unknown fault kinds"):
        fake.set_faults(["http418"])


# -- log and control ---------------------------------------------------------------------------


def test_request_log_records_every_request(fake):
    fake.set_faults(["http503"], every=2)
    post(fake, NRQL)
    post(fake, NRQL, account=7654321)
    post(fake, "SELECT nonsense")
    first, second, third = fake.requests
    assert (first.account_id, first.nrql, first.outcome, first.status) == (ACCOUNT, NRQL, "ok", 200)
    assert (first.since_ms, first.until_ms) == (UNTIL_MS - HOUR_MS, UNTIL_MS)
    assert (second.account_id, second.outcome, second.status) == (7654321, "http503", 503)
    assert (third.since_ms, third.outcome) == (None, "nrql_error")
    fake.reset_log()
    assert fake.requests == []


def test_control_endpoints(fake):
    base = fake.url.removesuffix("/graphql")
    post(fake, NRQL)
    [logged] = requests.get(f"{base}/_requests", timeout=60).json()
    assert logged["nrql"] == NRQL and logged["outcome"] == "ok" and logged["status"] == 200
    assert requests.post(f"{base}/_faults", json={"kinds": ["http502"], "every": 1}, timeout=60).ok
    assert post(fake, NRQL).status_code == 502
    assert requests.post(f"{base}/_faults", json={"kinds": ["nope"]}, timeout=60).status_code == 400
    assert requests.post(f"{base}/_faults", json={"kinds": []}, timeout=60).ok
    warning = {"substring": "Transaction", "messages": ["a warning"]}
    assert requests.post(f"{base}/_messages", json=warning, timeout=60).ok
    assert post(fake, NRQL).json()["data"]["actor"]["account"]["nrql"]["metadata"]["messages"] == [
        "a warning"
    ]
    assert requests.post(f"{base}/_reject", json={"substring": "Transaction"}, timeout=60).ok
    assert "NRQL Syntax Error" in graphql_error(post(fake, NRQL))["message"]
    assert requests.post(f"{base}/_reset", timeout=60).ok
    assert requests.get(f"{base}/_requests", timeout=60).json() == []


def test_answers_are_deterministic_whatever_the_order():
    one = f"SELECT average(duration) FROM Transaction FACET appName {hours(6)} TIMESERIES 1 hour"
    two = f"SELECT max(lagSeconds) FROM ReplicationLag FACET cluster, replica {hours(6)}"
    with FakeNerdGraph(now=lambda: NOW) as first:
        a1, b1, a2 = post(first, one).content, post(first, two).content, post(first, one).content
    with FakeNerdGraph(now=lambda: NOW) as second:
        b2, a3 = post(second, two).content, post(second, one).content
    assert a1 == a2 == a3
    assert b1 == b2


def test_retention_is_configurable():
    nrql = (
        f"SELECT count(*) FROM Transaction {hours(24, (NOW - 2 * 86400) * 1000)} TIMESERIES 1 hour"
    )
    with FakeNerdGraph(now=lambda: NOW, retention=timedelta(days=1)) as server:
        rows, _ = nrql_result(server, nrql)
    assert sum(row["count"] for row in rows) == 0


# -- command line ------------------------------------------------------------------------------


def test_command_line_serves_until_sigterm():
    command = [sys.executable, "-m", "fakes.nerdgraph", "--port", "0", "--account", "42"]
    command += ["--faults", "http500", "--fault-every", "2", "--api-key", "NRAK-CLI"]
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        url = process.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:") and url.endswith("/graphql")
        body = {"query": QUERY, "variables": {"accountId": 42, "nrql": NRQL}}
        first = requests.post(url, json=body, headers={"API-Key": "NRAK-CLI"}, timeout=60)
        second = requests.post(url, json=body, headers={"API-Key": "NRAK-CLI"}, timeout=60)
        assert (first.status_code, second.status_code) == (200, 500)
        assert first.json()["data"]["actor"]["account"]["nrql"]["results"]
        log = requests.get(url.removesuffix("/graphql") + "/_requests", timeout=60).json()
        assert [entry["outcome"] for entry in log] == ["ok", "http500"]
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0
    finally:
        process.kill()
        process.wait()


def test_command_line_refuses_unknown_fault_kinds():
    command = [sys.executable, "-m", "fakes.nerdgraph", "--port", "0", "--faults", "meteor"]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert "unknown fault kinds ['meteor']" in result.stderr


def test_json_numbers_keep_their_integer_form_on_the_wire(fake):
    response = post(
        fake, f"SELECT average(duration) FROM Transaction {hours(48)} TIMESERIES 1 hour"
    )
    averages = [
        row["average.duration"]
        for row in json.loads(response.text)["data"]["actor"]["account"]["nrql"]["results"]
    ]
    integral = next(a for a in averages if isinstance(a, int))
    assert f'"average.duration":{integral},' in response.text


# -- shapes of real answers ------------------------------------------------------------------


def test_real_facet_labels_by_event_type():
    def rows(nrql):
        result = answer(
            nrql + " SINCE 1 hour ago TIMESERIES 5 minutes", now=1.8e9, retention_seconds=1e9
        )
        return real_facet_labels(result.results, result.metadata)

    errors = rows("SELECT count(*) FROM TransactionError FACET appName")
    assert errors and all("facet" not in row and "appName" in row for row in errors)
    lag = rows("SELECT max(lagSeconds) FROM ReplicationLag FACET cluster, replica")
    assert lag and all(isinstance(r["facet"], list) and "cluster" not in r for r in lag)
    logins = rows("SELECT count(*) FROM Login FACET provider")
    assert logins and all("facet" in row and "provider" in row for row in logins)


def test_funnel_buckets_hold_non_increasing_steps():
    nrql = (
        "SELECT funnel(session, WHERE a = 1 AS 'one', WHERE b IN (1, 2), WHERE c = 'x, y')"
        " FROM PageView SINCE 1 hour ago TIMESERIES 5 minutes"
    )
    results = answer(nrql, now=1.8e9, retention_seconds=1e9).results
    steps = [row["funnel.session"]["steps"] for row in results]
    assert steps and all(len(s) == 3 and s[0] >= s[1] >= s[2] >= 0 for s in steps)
    assert any(s[0] > 0 for s in steps)


def test_a_funnel_needs_two_steps():
    with pytest.raises(NrqlError, match="at least two steps"):
        answer(
            "SELECT funnel(session, WHERE a = 1) FROM T SINCE 1 hour ago",
            now=1.8e9,
            retention_seconds=1e9,
        )


def test_metric_events_carry_a_nested_object():
    found = events("Metric", 1_800_000_000_000, 1_800_000_060_000)
    assert found
    assert all(e["newrelic.internal.usage"]["type"] == "count" for e in found)


# -- big accounts: too big, raw response, asynchronous queries ---------------------------------


def test_time_out_above_n_buckets_answers_new_relics_timeout(fake):
    fake.time_out_above(2, "FROM Login")
    small = f"SELECT count(*) FROM Login {hours(2)} TIMESERIES 1 hour"
    big = f"SELECT count(*) FROM Login {hours(3)} TIMESERIES 1 hour"
    other = f"SELECT count(*) FROM Transaction {hours(3)} TIMESERIES 1 hour"
    assert post(fake, small).json()["data"]["actor"]["account"]["nrql"]["results"]
    error = graphql_error(post(fake, big))
    assert error["message"] == "NRDB query duration exceeded the set timeout"
    assert error["extensions"] == {"errorClass": "TIMEOUT"}
    assert post(fake, other).json()["data"]["actor"]["account"]["nrql"]["results"]
    assert [r.outcome for r in fake.requests] == ["ok", "too_big", "ok"]


def test_every_answer_carries_the_inspected_count_in_its_raw_response(fake):
    nrql = f"SELECT count(*) FROM Login {hours(3)} FACET provider TIMESERIES 1 hour"
    answer = post(fake, nrql).json()["data"]["actor"]["account"]["nrql"]
    stats = answer["rawResponse"]["performanceStats"]
    assert stats["inspectedCount"] == 1000 * len(answer["results"]) == 1000 * 9
    assert {"matchCount", "omittedCount", "exceedsRetentionWindow", "wallClockTime"} <= set(stats)


ASYNC_QUERY = (
    "query($accountId: Int!, $nrql: Nrql!, $async: Boolean) { actor { account(id: $accountId) {"
    " nrql(query: $nrql, async: $async) { results queryProgress { queryId completed retryAfter"
    " retryDeadline resultExpiration } } } } }"
)
POLL_QUERY = (
    "query($accountId: Int!, $queryId: ID!) { actor { account(id: $accountId) {"
    " nrqlQueryProgress(queryId: $queryId) { results queryProgress { queryId completed"
    " retryAfter retryDeadline resultExpiration } } } } }"
)


def start_async(fake: FakeNerdGraph, nrql: str) -> dict:
    body = {"query": ASYNC_QUERY, "variables": {"accountId": ACCOUNT, "nrql": nrql, "async": True}}
    response = requests.post(fake.url, json=body, headers={"API-Key": fake.api_key}, timeout=60)
    return response.json()["data"]["actor"]["account"]["nrql"]


def poll(fake: FakeNerdGraph, query_id: str, account: int = ACCOUNT) -> dict:
    body = {"query": POLL_QUERY, "variables": {"accountId": account, "queryId": query_id}}
    response = requests.post(fake.url, json=body, headers={"API-Key": fake.api_key}, timeout=60)
    return response.json()


def test_an_async_query_completes_after_its_polls_honouring_retry_after():
    clock = FakeClock(float(NOW))
    with FakeNerdGraph(now=clock, accounts={ACCOUNT}) as fake:
        fake.set_async(polls=2, retry_after=5, retry_deadline=30)
        nrql = f"SELECT count(*) FROM Login {hours(2)} TIMESERIES 1 hour"
        started = start_async(fake, nrql)
        assert started["results"] is None
        progress = started["queryProgress"]
        assert progress == {
            "queryId": progress["queryId"],
            "completed": False,
            "retryAfter": 5,
            "retryDeadline": 30,
            "resultExpiration": 300,
        }
        query_id = progress["queryId"]
        clock.now += 1  # too early: does not count
        early = poll(fake, query_id)["data"]["actor"]["account"]["nrqlQueryProgress"]
        assert early["queryProgress"]["completed"] is False
        clock.now += 5
        running = poll(fake, query_id)["data"]["actor"]["account"]["nrqlQueryProgress"]
        assert running["results"] is None and running["queryProgress"]["completed"] is False
        clock.now += 5
        done = poll(fake, query_id)["data"]["actor"]["account"]["nrqlQueryProgress"]
        assert done["queryProgress"]["completed"] is True
        assert done["results"] == nrql_result(fake, nrql)[0]
        assert done["rawResponse"]["performanceStats"]["inspectedCount"] == 2000
        outcomes = [r.outcome for r in fake.requests]
        assert outcomes == ["async_started", "async_running", "async_running", "ok", "ok"]


def test_an_async_query_not_polled_before_its_deadline_is_cancelled():
    clock = FakeClock(float(NOW))
    with FakeNerdGraph(now=clock, accounts={ACCOUNT, 7654321}) as fake:
        fake.set_async(polls=1, retry_after=1, retry_deadline=10)
        query_id = start_async(fake, f"SELECT count(*) FROM Login {hours(1)}")["queryProgress"][
            "queryId"
        ]
        other_account = poll(fake, query_id, account=7654321)
        assert other_account["errors"][0]["message"] == f"No query {query_id} for account 7654321"
        clock.now += 11
        late = poll(fake, query_id)
        assert late["data"] == {"actor": {"account": {"nrqlQueryProgress": None}}}
        assert "not polled within its retryDeadline" in late["errors"][0]["message"]
        assert fake.requests[-1].outcome == "async_cancelled"


def test_without_set_async_an_async_query_answers_at_once(fake):
    answer = start_async(fake, f"SELECT count(*) FROM Login {hours(1)}")
    assert answer["results"] and "queryProgress" not in answer


def test_one_text_over_its_per_minute_limit_is_refused_with_429_as_at_new_relic() -> None:
    clock = FakeClock(float(NOW))
    nrql = f"SELECT count(*) FROM Transaction {hours(1)}"
    with FakeNerdGraph(now=clock, accounts={ACCOUNT, 7654321}) as fake:
        fake.limit_same_text(3)
        statuses = [post(fake, nrql, account=account).status_code for account in (ACCOUNT,) * 3]
        refused = post(fake, nrql, account=7654321)  # the text counts, whatever the account
        other = post(fake, f"SELECT count(*) FROM Transaction {hours(2)}")
        clock.advance(60.0)
        again = post(fake, nrql)

    assert statuses == [200, 200, 200]
    assert refused.status_code == 429 and "same query text" in refused.text
    assert (other.status_code, again.status_code) == (200, 200)
    assert [r.outcome for r in fake.requests] == ["ok"] * 3 + ["same_text_limit", "ok", "ok"]
