"""Raw-event queries against the fake NerdGraph: shapes, order, LIMIT, determinism, busy types."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from fakes.events import events
from fakes.nerdgraph import FakeNerdGraph
from tests.nerdgraph_http import HOUR_MS, NOW, UNTIL_MS, nrql_result, post

LAST_HOUR = f"SINCE {UNTIL_MS - HOUR_MS} UNTIL {UNTIL_MS}"


@pytest.fixture(scope="module")
def fake():
    with FakeNerdGraph(now=lambda: NOW) as server:
        yield server


def nrql_error(fake: FakeNerdGraph, nrql: str) -> str:
    document = post(fake, nrql).json()
    return document["errors"][0]["message"]


def oracle(event_type: str, since_ms: int = UNTIL_MS - HOUR_MS, until_ms: int = UNTIL_MS):
    return events(event_type, since_ms, until_ms)


# -- shapes -------------------------------------------------------------------------------------


def test_rows_hold_the_selected_attributes_and_the_timestamp(fake):
    rows, metadata = nrql_result(
        fake, f"SELECT duration, appName, `error`, nosuch FROM Transaction LIMIT MAX {LAST_HOUR}"
    )
    expected = [
        {"timestamp": e["timestamp"], "duration": e["duration"], "appName": e["appName"]}
        | {"error": e["error"], "nosuch": None}
        for e in oracle("Transaction")
    ]
    assert rows == expected
    assert all(type(row["timestamp"]) is int for row in rows)
    assert metadata == {
        "facets": None,
        "eventTypes": ["Transaction"],
        "messages": [],
        "timeWindow": {"begin": UNTIL_MS - HOUR_MS, "end": UNTIL_MS},
    }


def test_an_alias_renames_the_column(fake):
    rows, _ = nrql_result(
        fake, f"SELECT duration AS 'took s', host AS h FROM Transaction {LAST_HOUR}"
    )
    assert rows and all(set(row) == {"timestamp", "took s", "h"} for row in rows)


def test_select_star_returns_every_attribute_with_a_default_limit_of_100(fake):
    rows, _ = nrql_result(fake, f"SELECT * FROM Transaction WHERE appName = 'x' {LAST_HOUR}")
    assert rows == oracle("Transaction")[:100]
    assert set(rows[0]) == {
        "timestamp",
        "appName",
        "host",
        "name",
        "transactionType",
        "duration",
        "databaseCallCount",
        "error",
        "message",
    }


def test_events_come_newest_first_within_the_half_open_range(fake):
    since_ms, until_ms = UNTIL_MS - 600_000 + 1, UNTIL_MS - 1  # not whole seconds
    rows, _ = nrql_result(fake, f"SELECT * FROM Login LIMIT MAX SINCE {since_ms} UNTIL {until_ms}")
    stamps = [row["timestamp"] for row in rows]
    assert stamps == sorted(stamps, reverse=True)
    assert all(since_ms <= stamp < until_ms for stamp in stamps)
    assert rows == oracle("Login", since_ms, until_ms)


@pytest.mark.parametrize(
    ("limit", "expected"), [("LIMIT 7", 7), ("LIMIT MAX", 5000), ("LIMIT 20000", 5000)]
)
def test_limit_caps_the_rows_keeping_the_newest(fake, limit, expected):
    rows, _ = nrql_result(fake, f"SELECT duration FROM BusyTransaction {limit} {LAST_HOUR}")
    assert len(rows) == expected
    newest = oracle("BusyTransaction")[:expected]
    assert [row["timestamp"] for row in rows] == [event["timestamp"] for event in newest]


def test_no_events_before_the_retention_or_after_now(fake):
    retention_start_ms = (NOW - 8 * 86400) * 1000
    old = f"SINCE {retention_start_ms - HOUR_MS} UNTIL {retention_start_ms}"
    assert nrql_result(fake, f"SELECT * FROM Transaction {old}")[0] == []
    future, _ = nrql_result(
        fake,
        f"SELECT * FROM Transaction LIMIT MAX SINCE {NOW * 1000 - 60_000} UNTIL {NOW + 3600}000",
    )
    assert future and all(row["timestamp"] < NOW * 1000 for row in future)


@pytest.mark.parametrize(
    ("nrql", "message"),
    [
        ("SELECT duration, count(*) FROM T", "Mixing aggregate and non-aggregate"),
        ("SELECT duration FROM T FACET appName", "FACET requires an aggregate"),
        ("SELECT * FROM T TIMESERIES 1 minute", "TIMESERIES requires an aggregate"),
        ("SELECT *, duration FROM T", "unexpected ','"),
        ("SELECT bogus(x) FROM T", "Unknown function bogus"),
    ],
)
def test_raw_event_syntax_errors(fake, nrql, message):
    error = nrql_error(fake, nrql)
    assert error.startswith("NRQL Syntax Error: ") and message in error


# -- the data -----------------------------------------------------------------------------------


def test_events_are_deterministic_and_ranges_compose():
    first = FakeNerdGraph(now=lambda: NOW)
    nrql = f"SELECT * FROM BusyTransaction LIMIT MAX SINCE {UNTIL_MS - 60_000} UNTIL {UNTIL_MS}"
    with first:
        one = post(first, nrql).content
    with FakeNerdGraph(now=lambda: NOW) as second:
        post(second, f"SELECT * FROM Transaction {LAST_HOUR}")
        assert post(second, nrql).content == one
    middle = UNTIL_MS - 1_800_500  # not a whole second
    assert oracle("BusyTransaction") == (
        oracle("BusyTransaction", middle, UNTIL_MS)
        + oracle("BusyTransaction", UNTIL_MS - HOUR_MS, middle)
    )


def test_an_ordinary_type_has_0_to_3_events_a_second_and_fewer_than_5000_an_hour():
    hour = oracle("Transaction")
    per_second = Counter(event["timestamp"] // 1000 for event in hour)
    assert 1000 < len(hour) < 5000
    assert set(per_second.values()) == {1, 2, 3}


def test_the_busy_type_overflows_limit_max_with_shared_milliseconds_and_tags():
    hour = oracle("BusyTransaction")
    assert len(hour) > 5000 * 2
    same_ms_and_tags = Counter((e["timestamp"], e["appName"], e["host"]) for e in hour)
    assert max(same_ms_and_tags.values()) >= 3
    exact_copies = Counter(json.dumps(event, sort_keys=True) for event in hour)
    assert max(exact_copies.values()) >= 2  # identical events: both must be archived


def test_busy_n_sets_the_events_per_second():
    second = oracle("Busy6000Transaction", UNTIL_MS - 1000, UNTIL_MS)
    assert 5999 <= len(second) <= 6001


def test_values_mix_special_characters_ints_floats_and_nulls():
    hour = oracle("Transaction")
    strings = {e["appName"] for e in hour} | {e["message"] for e in hour}
    assert {"billing,eu", "a=b", 'say "hi"', "C:\\tmp\\", "Zürich ☃ 東京", ""} <= strings
    assert {type(e["duration"]) for e in hour} == {int, float, type(None)}
    assert None in {e["host"] for e in hour}
    assert None in {e["databaseCallCount"] for e in hour}
    assert {e["error"] for e in hour} == {True, False}
