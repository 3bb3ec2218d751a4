from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone

import pytest

from archiver.timeparse import (
    format_duration,
    influx_duration,
    influx_duration_seconds,
    influxdb_duration_seconds,
    nrql_timeseries,
    parse_duration,
    parse_time,
)

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("1 minute", timedelta(minutes=1), id="1 minute"),
        pytest.param("5 minutes", timedelta(minutes=5), id="5 minutes"),
        pytest.param("1m", timedelta(minutes=1), id="1m is minutes, not months"),
        pytest.param("30s", timedelta(seconds=30), id="30s"),
        pytest.param("90 seconds", timedelta(seconds=90), id="90 seconds"),
        pytest.param("1h", timedelta(hours=1), id="1h"),
        pytest.param("2 hours", timedelta(hours=2), id="2 hours"),
        pytest.param("7d", timedelta(days=7), id="7d"),
        pytest.param("1 day", timedelta(days=1), id="1 day"),
        pytest.param("104w", timedelta(weeks=104), id="104w"),
        pytest.param("2 weeks", timedelta(weeks=2), id="2 weeks"),
        pytest.param("1h30m", timedelta(hours=1, minutes=30), id="1h30m"),
        pytest.param("1 hour 30 minutes", timedelta(minutes=90), id="1 hour 30 minutes"),
        pytest.param("720h0m0s", timedelta(days=30), id="Go duration from SHOW RETENTION"),
        pytest.param("1.5h", timedelta(minutes=90), id="decimal amount"),
        pytest.param(" 5 Minutes ", timedelta(minutes=5), id="case and spaces"),
        pytest.param("60", timedelta(minutes=1), id="number text is seconds"),
        pytest.param(60, timedelta(minutes=1), id="int is seconds"),
        pytest.param(60.0, timedelta(minutes=1), id="whole float is seconds"),
        pytest.param(timedelta(hours=2), timedelta(hours=2), id="timedelta passes"),
    ],
)
def test_parse_duration(text: str | int | float, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param(
            "5 mins",
            "'5 mins' is not a duration; use e.g. '1 minute', '5m', '1h', '7d'",
            id="unknown unit",
        ),
        pytest.param("", "'' is not a duration", id="empty"),
        pytest.param("soon", "'soon' is not a duration", id="word"),
        pytest.param("0.5s", "'0.5s' is not a whole number of seconds", id="half a second"),
        pytest.param(1.5, "1.5 is not a whole number of seconds", id="fractional float"),
        pytest.param("-5m", "'-5m' must not be negative", id="negative"),
        pytest.param("0", "'0' must be longer than zero", id="zero"),
        pytest.param("0s", "'0s' must be longer than zero", id="zero with unit"),
        pytest.param(True, "True is not a duration", id="yaml boolean"),
        pytest.param(None, "None is not a duration", id="null"),
        pytest.param([1], "[1] is not a duration", id="list"),
    ],
)
def test_parse_duration_rejects(text: object, message: str) -> None:
    with pytest.raises(ValueError) as error:
        parse_duration(text)  # type: ignore[arg-type]
    assert str(error.value).startswith(message)


def test_parse_duration_allows_zero_when_asked() -> None:
    assert parse_duration("0", allow_zero=True) == timedelta(0)
    assert parse_duration("0s", allow_zero=True) == timedelta(0)
    with pytest.raises(ValueError, match="must not be negative"):
        parse_duration("-1s", allow_zero=True)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("2026-11-19T00:00:00Z", datetime(2026, 11, 19, tzinfo=UTC), id="ISO with Z"),
        pytest.param("2026-11-19", datetime(2026, 11, 19, tzinfo=UTC), id="ISO date"),
        pytest.param("2026-11-19T00:00:00", datetime(2026, 11, 19, tzinfo=UTC), id="naive is UTC"),
        pytest.param(
            "2026-11-19T02:00:00+02:00", datetime(2026, 11, 19, tzinfo=UTC), id="offset to UTC"
        ),
        pytest.param("2026-11-19 06:30", datetime(2026, 11, 19, 6, 30, tzinfo=UTC), id="space"),
        pytest.param("1763510400", datetime(2025, 11, 19, tzinfo=UTC), id="epoch seconds"),
        pytest.param(1763510400, datetime(2025, 11, 19, tzinfo=UTC), id="epoch int"),
        pytest.param(
            "1763510400.5",
            datetime(2025, 11, 19, 0, 0, 0, 500000, tzinfo=UTC),
            id="epoch with fraction",
        ),
        pytest.param("36h", NOW - timedelta(hours=36), id="age 36h"),
        pytest.param("7d", NOW - timedelta(days=7), id="age 7d"),
        pytest.param("90 minutes", NOW - timedelta(minutes=90), id="age 90 minutes"),
        pytest.param("0s", NOW, id="age zero is now"),
        pytest.param(date(2026, 11, 19), datetime(2026, 11, 19, tzinfo=UTC), id="yaml date"),
        pytest.param(datetime(2026, 11, 19), datetime(2026, 11, 19, tzinfo=UTC), id="naive dt"),
        pytest.param(
            datetime(2026, 11, 19, 1, tzinfo=timezone(timedelta(hours=1))),
            datetime(2026, 11, 19, tzinfo=UTC),
            id="aware dt to UTC",
        ),
    ],
)
def test_parse_time(text: object, expected: datetime) -> None:
    parsed = parse_time(text, NOW)  # type: ignore[arg-type]
    assert parsed == expected
    assert parsed.tzinfo == UTC


def test_parse_time_treats_a_naive_now_as_utc() -> None:
    assert parse_time("1h", NOW.replace(tzinfo=None)) == NOW - timedelta(hours=1)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param("yesterday", "'yesterday' is not a time; use ISO 8601", id="word"),
        pytest.param("2026-13-01", "'2026-13-01' is not a time", id="bad month"),
        pytest.param("5 mins", "'5 mins' is not a time", id="bad age"),
        pytest.param("1763510400000", "too large for epoch seconds (milliseconds?)", id="millis"),
        pytest.param(True, "True is not a time", id="boolean"),
    ],
)
def test_parse_time_rejects(text: object, message: str) -> None:
    with pytest.raises(ValueError) as error:
        parse_time(text, NOW)  # type: ignore[arg-type]
    assert message in str(error.value)


@pytest.mark.parametrize(
    ("duration", "text"),
    [
        pytest.param(timedelta(minutes=1), "1 minute", id="1 minute"),
        pytest.param(timedelta(minutes=5), "5 minutes", id="5 minutes"),
        pytest.param(timedelta(hours=1), "1 hour", id="1 hour"),
        pytest.param(timedelta(seconds=90), "90 seconds", id="90 seconds"),
        pytest.param(timedelta(days=2), "2 days", id="2 days"),
        pytest.param(timedelta(weeks=104), "104 weeks", id="104 weeks"),
        pytest.param(timedelta(0), "0 seconds", id="zero"),
        pytest.param(timedelta(milliseconds=1500), "1.5 seconds", id="fraction"),
    ],
)
def test_format_duration(duration: timedelta, text: str) -> None:
    assert format_duration(duration) == text


@pytest.mark.parametrize(
    ("interval", "clause"),
    [
        pytest.param(timedelta(seconds=30), "30 seconds", id="30 seconds"),
        pytest.param(timedelta(minutes=1), "1 minute", id="1 minute"),
        pytest.param(timedelta(minutes=5), "5 minutes", id="5 minutes"),
        pytest.param(timedelta(minutes=90), "90 minutes", id="90 minutes"),
        pytest.param(timedelta(hours=1), "1 hour", id="1 hour"),
        pytest.param(timedelta(hours=12), "12 hours", id="12 hours"),
        pytest.param(timedelta(days=1), "1 day", id="1 day"),
        pytest.param(timedelta(days=7), "7 days", id="a week stays in days"),
    ],
)
def test_nrql_timeseries(interval: timedelta, clause: str) -> None:
    assert nrql_timeseries(interval) == clause


@pytest.mark.parametrize(
    "interval",
    [
        pytest.param(timedelta(0), id="zero"),
        pytest.param(timedelta(seconds=-60), id="negative"),
        pytest.param(timedelta(milliseconds=500), id="fraction"),
    ],
)
def test_nrql_timeseries_rejects(interval: timedelta) -> None:
    with pytest.raises(ValueError, match="not a positive whole number of seconds"):
        nrql_timeseries(interval)


@pytest.mark.parametrize(
    ("text", "literal", "seconds"),
    [
        pytest.param("104w", "104w", 104 * 7 * 86400, id="104w"),
        pytest.param("30d", "30d", 30 * 86400, id="30d"),
        pytest.param("30 days", "30d", 30 * 86400, id="30 days"),
        pytest.param("14d", "2w", 14 * 86400, id="14d in weeks"),
        pytest.param("1h", "1h", 3600, id="1h minimum"),
        pytest.param("90m", "90m", 5400, id="90m"),
        pytest.param("720h0m0s", "30d", 30 * 86400, id="Go duration"),
        pytest.param("INF", "INF", None, id="INF"),
        pytest.param("inf", "INF", None, id="inf"),
    ],
)
def test_influx_duration(text: str, literal: str, seconds: int | None) -> None:
    assert influx_duration(text) == literal
    assert influx_duration_seconds(text) == seconds


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param("30m", "'30m' is shorter than InfluxDB's minimum retention of 1h", id="30m"),
        pytest.param("1 year", "'1 year' is not a duration", id="years"),
        pytest.param("0", "'0' must be longer than zero", id="zero"),
    ],
)
def test_influx_duration_rejects(text: str, message: str) -> None:
    with pytest.raises(ValueError) as error:
        influx_duration(text)
    assert str(error.value).startswith(message)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        pytest.param("104w", 104 * 7 * 86400, id="InfluxQL weeks"),
        pytest.param("1h30m", 5400, id="InfluxQL 1h30m"),
        pytest.param("168h0m0s", 7 * 86400, id="Go, as SHOW RETENTION POLICIES answers"),
        pytest.param("1h0m0.5s", 3600, id="Go fraction rounds"),
        pytest.param("1500ms", 2, id="milliseconds"),
        pytest.param("2000000µs", 2, id="microseconds"),
        pytest.param("3000000000ns", 3, id="nanoseconds"),
        pytest.param("0s", None, id="0s is infinite"),
        pytest.param("INF", None, id="INF"),
        pytest.param("inf", None, id="inf"),
    ],
)
def test_influxdb_duration_seconds(text: str, seconds: int | None) -> None:
    assert influxdb_duration_seconds(text) == seconds


def test_influxdb_duration_seconds_rejects_what_is_not_a_duration() -> None:
    with pytest.raises(ValueError, match="'30 years' is not a duration"):
        influxdb_duration_seconds("30 years")
