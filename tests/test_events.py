"""Raw-event export: window splitting against the fake's events, and events → line protocol."""

from __future__ import annotations

import functools
import json
import logging
import random
import re
from bisect import bisect_left
from collections import Counter
from concurrent.futures import Future
from datetime import UTC, datetime, timedelta
from operator import itemgetter

import pytest
import requests

from archiver.errors import NewRelicError
from archiver.pipeline.events import (
    MAX_ROWS,
    EventPlanner,
    is_capped,
    plan_events,
    split,
    to_lines,
)
from archiver.queries.model import events_nrql
from archiver.windows import iso
from fakes.events import events
from fakes.nerdgraph import DEFAULT_ACCOUNT, DEFAULT_API_KEY, FakeNerdGraph
from tests.e2e import ago, floor
from tests.faults import ok_nrqls

NOW = datetime(2026, 11, 19, 12, tzinfo=UTC)
HOUR_AGO = NOW - timedelta(hours=1)
QUERY = (
    "query($accountId: Int!, $nrql: Nrql!) { actor { account(id: $accountId) {"
    " nrql(query: $nrql, timeout: 60) { results } } } }"
)
T0_MS = 1_763_553_600_123  # 2025-11-19T12:00:00.123Z


def at(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def oracle_fetch(event_type: str, calls: list[tuple[datetime, datetime]]):
    """What New Relic answers to `... LIMIT MAX`: the newest 5,000 events of the window."""

    def fetch(since: datetime, until: datetime) -> list[dict]:
        calls.append((since, until))
        return events(event_type, ms(since), ms(until))[:MAX_ROWS]

    return fetch


def switching(before: str, after: str, at_: datetime):
    """A stream of `before` events until `at_`, then of `after`: (since_ms, until_ms) → its
    events, newest first (the data model the planner's tests compare with)."""
    cut = ms(at_)

    def model(since_ms: int, until_ms: int) -> list[dict]:
        newer = events(after, max(since_ms, cut), until_ms)
        return newer + events(before, since_ms, min(until_ms, cut))

    return model


def capped_fetch(model, calls: list[tuple[datetime, datetime]]):
    """New Relic over `model`: the newest 5,000 events of the window."""

    def fetch(since: datetime, until: datetime) -> list[dict]:
        calls.append((since, until))
        return model(ms(since), ms(until))[:MAX_ROWS]

    return fetch


def minutes(since: datetime, count: int) -> list[tuple[datetime, datetime]]:
    return [(since + timedelta(minutes=i), since + timedelta(minutes=i + 1)) for i in range(count)]


def halves(windows) -> list[tuple[datetime, datetime]]:
    return [half for window in windows for half in split(*window)]


def plan_windows(planner: EventPlanner, fetch, windows) -> list[list]:
    """Each window's parts as the job asks them: one planner, the windows in order."""
    return [list(planner.plan(fetch, since, until)) for since, until in windows]


def series_and_time(line: str) -> tuple[str, str]:
    """The identity of a point in InfluxDB: measurement + tags, and time."""
    match = re.fullmatch(r"((?:[^ \\]|\\.)+) .* (\d+)", line)
    assert match is not None, line
    return match.group(1), match.group(2)


def canonical(rows) -> Counter:
    return Counter(json.dumps(row, sort_keys=True) for row in rows)


# -- NRQL and windows ---------------------------------------------------------------------------


def test_events_nrql_appends_limit_max_and_the_window_in_epoch_ms():
    nrql = events_nrql(
        "SELECT duration, appName FROM Transaction WHERE appName LIKE 'a%'\n",
        at("2026-11-19T00:00:00Z"),
        at("2026-11-19T01:00:00Z"),
    )
    assert nrql == (
        "SELECT duration, appName FROM Transaction WHERE appName LIKE 'a%'"
        " LIMIT MAX SINCE 1795046400000 UNTIL 1795050000000"
    )


def test_only_a_full_answer_is_capped():
    assert is_capped([{}] * 5000)
    assert not is_capped([{}] * 4999)


@pytest.mark.parametrize(
    ("since", "until", "expected"),
    [
        ("00:00:00", "01:00:00", [("00:00:00", "00:30:00"), ("00:30:00", "01:00:00")]),
        ("00:00:00", "00:00:03", [("00:00:00", "00:00:01"), ("00:00:01", "00:00:03")]),
        ("00:00:00", "00:00:02", [("00:00:00", "00:00:01"), ("00:00:01", "00:00:02")]),
        ("00:00:00", "00:00:01", [("00:00:00", "00:00:01")]),
        (
            "00:00:00.500",
            "00:00:02.500",
            [("00:00:00.500", "00:00:01"), ("00:00:01", "00:00:02.500")],
        ),
        ("00:00:00.200", "00:00:01.700", [("00:00:00.200", "00:00:01.700")]),
    ],
    ids=["hour", "odd-seconds", "two-seconds", "one-second", "unaligned", "no-whole-second-inside"],
)
def test_split_halves_at_whole_seconds(since, until, expected):
    day = "2026-11-19T"
    halves = split(at(f"{day}{since}Z"), at(f"{day}{until}Z"))
    assert halves == [(at(f"{day}{a}Z"), at(f"{day}{b}Z")) for a, b in expected]


def test_plan_splits_capped_windows_until_every_busy_event_comes_exactly_once():
    calls: list[tuple[datetime, datetime]] = []
    windows = list(plan_events(oracle_fetch("BusyTransaction", calls), HOUR_AGO, NOW))
    everything = events("BusyTransaction", ms(HOUR_AGO), ms(NOW))
    assert len(everything) > 2 * MAX_ROWS
    assert canonical(row for window in windows for row in window.rows) == canonical(everything)
    assert [w.since for w in windows] == [HOUR_AGO] + [w.until for w in windows[:-1]]
    assert windows[-1].until == NOW
    assert not any(is_capped(window.rows) for window in windows)
    assert len(calls) > len(windows)  # the capped answers were asked again, in halves
    assert calls[0] == (HOUR_AGO, NOW)


def test_plan_fetches_an_uncapped_range_once():
    calls: list[tuple[datetime, datetime]] = []
    windows = list(plan_events(oracle_fetch("Transaction", calls), HOUR_AGO, NOW))
    assert [(w.since, w.until) for w in windows] == calls == [(HOUR_AGO, NOW)]
    assert windows[0].rows == events("Transaction", ms(HOUR_AGO), ms(NOW))


def test_a_capped_second_is_yielded_with_a_warning(caplog):
    calls: list[tuple[datetime, datetime]] = []
    since = NOW - timedelta(seconds=3)
    with caplog.at_level(logging.WARNING, logger="archiver.pipeline.events"):
        windows = list(
            plan_events(oracle_fetch("Busy6000Transaction", calls), since, NOW, label="busy → raw")
        )
    seconds = [(since + timedelta(seconds=i), since + timedelta(seconds=i + 1)) for i in range(3)]
    assert [(w.since, w.until) for w in windows] == seconds
    assert all(len(w.rows) == MAX_ROWS for w in windows)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 3
    assert warnings[0].startswith("busy → raw: New Relic returned its maximum of 5000 events")
    assert "[2026-11-19T11:59:57Z, 2026-11-19T11:59:58Z)" in warnings[0]


def test_a_steady_stream_over_the_cap_is_asked_in_halves_from_the_second_window_on():
    since = NOW - timedelta(minutes=5)
    windows = minutes(since, 5)
    model = switching("Busy100Transaction", "Busy100Transaction", NOW)  # ~6,000 a minute
    assert all(len(model(ms(a), ms(b))) > MAX_ROWS for a, b in windows)
    calls: list[tuple[datetime, datetime]] = []
    parts = plan_windows(EventPlanner(), capped_fetch(model, calls), windows)

    # Nothing is known of the first window: asked whole (capped), then in halves. The others
    # are asked in halves straight away: no capped answer, nothing asked twice.
    assert calls == [windows[0], *halves(windows)]
    assert [(part.since, part.until) for window in parts for part in window] == halves(windows)
    assert not any(is_capped(part.rows) for window in parts for part in window)
    rows = [row for window in parts for part in window for row in part.rows]
    assert canonical(rows) == canonical(model(ms(since), ms(NOW)))


def test_after_a_burst_the_quiet_windows_are_asked_whole_again():
    since = NOW - timedelta(minutes=7)
    windows = minutes(since, 7)
    model = switching("Busy100Transaction", "Transaction", since + timedelta(minutes=3))
    calls: list[tuple[datetime, datetime]] = []
    parts = plan_windows(EventPlanner(), capped_fetch(model, calls), windows)

    # The first quiet window is still asked in halves; its answers hold fewer than a quarter
    # of the cap, so the windows after it are asked whole.
    assert all(len(part.rows) < MAX_ROWS // 4 for part in parts[3])
    assert calls == [windows[0], *halves(windows[:4]), *windows[4:]]
    assert [len(window) for window in parts] == [2, 2, 2, 2, 1, 1, 1]
    rows = [row for window in parts for part in window for row in part.rows]
    assert canonical(rows) == canonical(model(ms(since), ms(NOW)))


def test_a_window_busier_than_the_last_is_cut_further():
    since = NOW - timedelta(minutes=4)
    windows = minutes(since, 4)
    # ~6,000 events a minute, then ~12,000: halves are capped too, quarters are not.
    model = switching("Busy100Transaction", "Busy200Transaction", since + timedelta(minutes=2))
    calls: list[tuple[datetime, datetime]] = []
    parts = plan_windows(EventPlanner(), capped_fetch(model, calls), windows)

    first, second = split(*windows[2])
    fourth_in_quarters = halves(halves(windows[3:]))  # asked so straight away
    assert calls == [
        windows[0],
        *halves(windows[:2]),
        first,  # capped: asked again in halves
        *split(*first),
        second,  # capped too
        *split(*second),
        *fourth_in_quarters,
    ]
    assert [len(window) for window in parts] == [2, 2, 4, 4]
    assert not any(is_capped(part.rows) for window in parts for part in window)
    assert [part.since for window in parts for part in window][1:] == [
        part.until for window in parts for part in window
    ][:-1]  # oldest first, no gap, no overlap
    rows = [row for window in parts for part in window for row in part.rows]
    assert canonical(rows) == canonical(model(ms(since), ms(NOW)))


def test_windows_of_another_length_are_cut_to_parts_about_as_long_as_the_learned_ones():
    calls: list[tuple[datetime, datetime]] = []
    planner = EventPlanner()
    since = NOW - timedelta(minutes=1)
    list(planner.plan(oracle_fetch("Busy100Transaction", calls), since, NOW))
    assert planner.part == timedelta(seconds=30)
    lengths = {20: 0, 37: 0, 40: 1, 61: 1, 120: 2, 3600: 7}  # seconds → halvings
    assert {s: planner.depth(timedelta(seconds=s)) for s in lengths} == lengths


def test_a_quiet_planner_asks_every_window_whole():
    calls: list[tuple[datetime, datetime]] = []
    windows = minutes(NOW - timedelta(minutes=3), 3)
    parts = plan_windows(EventPlanner(), oracle_fetch("BusyTransaction", calls), windows)
    assert calls == windows  # ~180 events a minute: never cut
    assert [[(p.since, p.until) for p in window] for window in parts] == [[w] for w in windows]


def test_a_job_asks_its_windows_as_finely_as_the_last_one_needed(
    inprocess_cli, fake_nr, influxd, influx_db, queries_dir
):
    """`nr-archiver run` with 1-minute windows of ~6,000 events: one planner for the job."""
    (queries_dir / "busy.yaml").write_text(
        "nrql: SELECT duration, name, appName, host FROM Busy100Transaction\n"
        "mode: events\ntag_attributes: [appName, host]\ninterval: 1 minute\n"
        f"measurement: nr_busy\ndatabase: {influx_db}\n"
    )
    since = floor(ago(hours=1), 60)
    windows = minutes(since, 4)
    result = inprocess_cli("run", "--since", iso(since), "--until", iso(windows[-1][1]))
    assert result.returncode == 0, result.stdout + result.stderr

    window = re.compile(r"SINCE (\d+) UNTIL (\d+)$")
    asked = [tuple(map(int, window.search(nrql).groups())) for nrql in ok_nrqls(fake_nr)]
    # the first window asked whole and alone (capped), then every window in halves, asked
    # several at once (in any order): one capped answer in all, no part asked twice
    assert asked[0] == (ms(windows[0][0]), ms(windows[0][1]))
    assert Counter(asked[1:]) == Counter((ms(a), ms(b)) for a, b in halves(windows))
    stored = influxd.query('SELECT * FROM "nr_busy"', db=influx_db)
    assert len(stored) == len(events("Busy100Transaction", ms(since), ms(windows[-1][1])))


# -- parts asked ahead ----------------------------------------------------------------------


class Asking:
    """`EventPlanner.plan_ahead`'s `ask` and `take` over `model` (New Relic's newest 5,000
    events of a window): records what was asked, and how many parts were asked and not taken;
    `failing` is the part whose request fails."""

    def __init__(self, model, failing: tuple[datetime, datetime] | None = None) -> None:
        self.model, self.failing = model, failing
        self.asked: list[tuple[datetime, datetime]] = []
        self.futures: list[Future] = []
        self.taken = 0
        self.most_open = 0  # parts asked and not taken, at most
        self.asked_before_first_taken = 0
        self.capped = 0

    def ask(self, since: datetime, until: datetime) -> Future:
        self.asked.append((since, until))
        self.futures.append(Future())
        self.most_open = max(self.most_open, len(self.asked) - self.taken)
        return self.futures[-1]

    def take(self, since: datetime, until: datetime, asked: Future) -> list[dict]:
        if not self.taken:
            self.asked_before_first_taken = len(self.asked)
        self.taken += 1
        assert asked is self.futures[self.asked.index((since, until))]
        if (since, until) == self.failing:
            raise NewRelicError(f"New Relic failed for {iso(since)}")
        rows = self.model(ms(since), ms(until))[:MAX_ROWS]
        self.capped += is_capped(rows)
        return rows


STREAMS = {
    "steady": ("Busy100Transaction", "Busy100Transaction"),  # ~6,000 a minute
    "burst-over": ("Busy100Transaction", "Transaction"),
    "burst-begins": ("Transaction", "Busy100Transaction"),
    "busier": ("Busy100Transaction", "Busy200Transaction"),
    "quieter": ("Busy200Transaction", "Busy100Transaction"),
}


STREAM_MINUTES = 10


@functools.cache
def stream_model(stream: str):
    """`switching` over the last STREAM_MINUTES, made once: a part's events are cut from it."""
    since = NOW - timedelta(minutes=STREAM_MINUTES)
    whole = switching(*STREAMS[stream], since + timedelta(minutes=4, seconds=17))
    everything = sorted(whole(ms(since), ms(NOW)), key=itemgetter("timestamp"))
    times = [event["timestamp"] for event in everything]

    def model(since_ms: int, until_ms: int) -> list[dict]:  # newest first, as `switching`
        inside = everything[bisect_left(times, since_ms) : bisect_left(times, until_ms)]
        return inside[::-1]

    return model


@pytest.mark.parametrize("ahead", [1, 2, 4, 7])
@pytest.mark.parametrize("stream", STREAMS)
def test_parts_asked_ahead_cover_every_event_once_in_order(stream, ahead):
    since = NOW - timedelta(minutes=STREAM_MINUTES)
    windows = minutes(since, STREAM_MINUTES)
    model = stream_model(stream)
    asking = Asking(model)
    parts = list(EventPlanner().plan_ahead(windows, asking.ask, asking.take, ahead=ahead))

    assert [p.since for p in parts] == [since] + [p.until for p in parts[:-1]]  # no gap
    assert parts[-1].until == NOW
    assert not any(is_capped(p.rows) for p in parts)
    rows = [row for part in parts for row in part.rows]  # the model's own event objects
    assert sorted(map(id, rows)) == sorted(map(id, model(ms(since), ms(NOW))))  # each once
    assert len(set(asking.asked)) == len(asking.asked), "a part was asked twice"
    assert asking.asked_before_first_taken == 1  # the first window alone
    assert asking.most_open <= ahead + 1  # + 1: a capped part's second half
    if ahead == 1:  # one part at a time: the very requests `plan` makes window by window
        calls: list[tuple[datetime, datetime]] = []
        plan_windows(EventPlanner(), capped_fetch(model, calls), windows)
        assert asking.asked == calls


def test_a_steady_busy_stream_keeps_ahead_parts_asked_with_one_capped_answer():
    since = NOW - timedelta(minutes=10)
    model = switching("Busy100Transaction", "Busy100Transaction", NOW)
    asking = Asking(model)
    parts = list(EventPlanner().plan_ahead(minutes(since, 10), asking.ask, asking.take, ahead=4))
    assert len(parts) == 20 and asking.most_open == 4
    assert asking.capped == 1  # the first window, asked whole before anything was known


def test_a_window_is_learned_from_once_every_part_of_it_is_taken():
    """A quiet older half (taken first) and a busy newer one, cut to quarters: the next window
    is cut to quarters too, not judged by the quiet half alone."""
    since = NOW - timedelta(minutes=2)
    model = switching("Transaction", "Busy200Transaction", since + timedelta(seconds=30))
    planner = EventPlanner()
    parts = list(planner.plan(capped_fetch(model, []), since, since + timedelta(minutes=1)))
    assert [len(p.rows) < MAX_ROWS // 4 for p in parts] == [True, False, False]
    assert planner.part == timedelta(seconds=15)


def test_a_failed_part_is_raised_after_the_parts_before_it_and_the_rest_are_cancelled():
    since = NOW - timedelta(minutes=6)
    windows = minutes(since, 6)
    model = switching("Busy100Transaction", "Busy100Transaction", NOW)
    failing = split(*windows[2])[1]
    asking = Asking(model, failing=failing)
    parts = EventPlanner().plan_ahead(windows, asking.ask, asking.take, ahead=4)
    got = []
    with pytest.raises(NewRelicError, match="New Relic failed for"):
        for part in parts:
            got.append((part.since, part.until))
    assert got == [*halves(windows[:2]), split(*windows[2])[0]]
    after = asking.asked.index(failing) + 1
    assert asking.futures[after:] and all(f.cancelled() for f in asking.futures[after:])


def test_closing_the_parts_cancels_the_ones_asked_and_not_taken():
    since = NOW - timedelta(minutes=6)
    model = switching("Busy100Transaction", "Busy100Transaction", NOW)
    asking = Asking(model)
    parts = EventPlanner().plan_ahead(minutes(since, 6), asking.ask, asking.take, ahead=4)
    for _ in range(3):
        next(parts)
    parts.close()
    open_ = asking.futures[asking.taken :]  # the next window's second half, the one after's
    assert len(open_) == 3 and all(f.cancelled() for f in open_)


def test_plan_over_http_against_the_fake_nerdgraph():
    """The archiver's NRQL, answered by the fake: windows split where New Relic caps them."""
    base = "SELECT duration, appName, host FROM BusyTransaction WHERE host != 'x'"
    since = NOW - timedelta(minutes=40)
    with FakeNerdGraph(now=lambda: NOW.timestamp()) as fake:

        def fetch(window_since: datetime, window_until: datetime) -> list[dict]:
            variables = {
                "accountId": DEFAULT_ACCOUNT,
                "nrql": events_nrql(base, window_since, window_until),
            }
            response = requests.post(
                fake.url,
                json={"query": QUERY, "variables": variables},
                headers={"API-Key": DEFAULT_API_KEY},
                timeout=60,
            )
            return response.json()["data"]["actor"]["account"]["nrql"]["results"]

        windows = list(plan_events(fetch, since, NOW))
    expected = [
        {key: event[key] for key in ("timestamp", "duration", "appName", "host")}
        for event in events("BusyTransaction", ms(since), ms(NOW))
    ]
    assert len(windows) > 1
    assert canonical(row for window in windows for row in window.rows) == canonical(expected)


# -- lines --------------------------------------------------------------------------------------


def test_golden_line_with_special_characters():
    row = {
        "timestamp": T0_MS,
        "appName": "C:\\tmp\\",
        "host": "web 01,a=b",
        "duration": 2,
        "message": 'say "hi" \\o/',
        "name": "Zürich ☃ 東京",
        "error": False,
        "databaseCallCount": None,
        "error.class": "",
    }
    lines = to_lines([row], "nr events", ["appName", "host"], {"source": "new relic"})
    assert lines == [
        "nr\\ events,appName=C:\\tmp,host=web\\ 01\\,a\\=b,source=new\\ relic"
        ' duration=2.0,error.class="",error=false,message="say \\"hi\\" \\\\o/",'
        'name="Zürich ☃ 東京" 1763553600123000000'
    ]


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        ({"appName": None, "d": 1.5}, "m,env=prod d=1.5"),
        ({"appName": "", "d": 1.5}, "m,env=prod d=1.5"),
        ({"appName": "\\", "d": 1.5}, "m,env=prod d=1.5"),
        ({"d": True}, "m,env=prod d=true"),
        ({"appName": 42, "d": "x"}, 'm,appName=42,env=prod d="x"'),
        ({"appName": "a", "d": None}, None),
        ({"appName": "a"}, None),
    ],
    ids=[
        "null-tag",
        "empty-tag",
        "backslash-only",
        "no-tag-attribute",
        "number-tag",
        "null",
        "none",
    ],
)
def test_tags_and_fields(row, expected):
    lines = to_lines([{"timestamp": T0_MS, **row}], "m", ["appName"], {"env": "prod"})
    assert lines == ([] if expected is None else [f"{expected} {T0_MS * 1_000_000}"])


def test_an_attribute_tag_wins_over_a_static_tag_of_the_same_name():
    lines = to_lines([{"timestamp": T0_MS, "env": "dev", "d": 1}], "m", ["env"], {"env": "prod"})
    assert lines == [f"m,env=dev d=1.0 {T0_MS * 1_000_000}"]


def test_events_sharing_a_millisecond_and_tags_get_distinct_nanoseconds_in_content_order():
    base = {"timestamp": T0_MS, "appName": "api"}
    rows = [
        {**base, "d": 3},
        {**base, "d": 1},
        {**base, "d": 2},
        {**base, "d": 1},  # an exact copy: it is kept too
        {**base, "appName": "other", "d": 9},  # another series: its own k
        {**base, "timestamp": T0_MS + 1, "d": 5},  # another millisecond
    ]
    ns = T0_MS * 1_000_000
    assert to_lines(rows, "m", ["appName"], {}) == [
        f"m,appName=api d=1.0 {ns}",
        f"m,appName=other d=9.0 {ns}",
        f"m,appName=api d=1.0 {ns + 1}",
        f"m,appName=api d=2.0 {ns + 2}",
        f"m,appName=api d=3.0 {ns + 3}",
        f"m,appName=api d=5.0 {ns + 1_000_000}",
    ]


def test_shuffled_rows_and_keys_give_identical_lines():
    rows = events("BusyTransaction", ms(NOW) - 60_000, ms(NOW))
    expected = to_lines(rows, "busy", ["appName", "host"], {"source": "nr"})
    shuffler = random.Random(7)
    for _ in range(3):
        shuffled = [dict(shuffler.sample(list(row.items()), len(row))) for row in rows]
        shuffler.shuffle(shuffled)
        assert to_lines(shuffled, "busy", ["appName", "host"], {"source": "nr"}) == expected
    assert len({series_and_time(line) for line in expected}) == len(rows)  # no overwrites


def test_a_row_without_a_timestamp_is_a_new_relic_error():
    with pytest.raises(NewRelicError, match="timestamp"):
        to_lines([{"d": 1}], "m", [], {})


# -- InfluxDB -----------------------------------------------------------------------------------


def test_every_event_sharing_a_millisecond_survives_in_influxdb(influxd, influx_db):
    rows = events("BusyTransaction", ms(NOW) - 120_000, ms(NOW))
    shared = Counter((row["timestamp"], row["appName"], row["host"]) for row in rows)
    assert max(shared.values()) >= 3
    influxd.query(f'CREATE DATABASE "{influx_db}"')
    lines = to_lines(rows, "busy events", ["appName", "host"], {"source": "newrelic"})
    response = requests.post(
        f"{influxd.url}/write",
        params={"db": influx_db, "precision": "ns"},
        data="\n".join(lines).encode(),
        timeout=30,
    )
    assert response.status_code == 204, response.text
    stored = requests.get(
        f"{influxd.url}/query",
        params={"db": influx_db, "q": 'SELECT * FROM "busy events" GROUP BY *', "epoch": "ns"},
        timeout=30,
    ).json()["results"][0]["series"]
    points = Counter(
        (values[0] // 1_000_000, series["tags"]["appName"], series["tags"]["host"])
        for series in stored
        for values in series["values"]
    )
    assert points == shared
    messages = Counter(
        (values[0] // 1_000_000, dict(zip(series["columns"], values, strict=True))["message"])
        for series in stored
        for values in series["values"]
    )
    assert messages == Counter((row["timestamp"], row["message"]) for row in rows)


def test_nested_event_attributes_are_flattened():
    """newrelic-client-go pkg/nrdb/nrdb_query_unit_test.go: a `SELECT * FROM Metric` event."""
    rows = [
        {
            "appId": 553448202,
            "metricName": "newrelic.internal.usage",
            "newrelic.internal.usage": {"count": 49500, "type": "count"},
            "timestamp": 1709446121841,
            "tags": ["a"],
        }
    ]
    dropped: set[str] = set()
    lines = to_lines(rows, "m", [], {}, dropped=dropped)
    assert lines == [
        'm appId=553448202.0,metricName="newrelic.internal.usage",'
        'newrelic.internal.usage.count=49500.0,newrelic.internal.usage.type="count"'
        " 1709446121841000000"
    ]
    assert dropped == {"tags"}
