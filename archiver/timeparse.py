"""Durations and instants as people write them in query files and on the command line.

Pure functions: nothing here reads the clock; callers pass `now`.

Durations are whole seconds. A duration is one or more `<number> <unit>` parts ("1h30m",
"1 hour 30 minutes"), or a plain number of seconds. Units: s/second(s), m/minute(s),
h/hour(s), d/day(s), w/week(s). `m` is always minutes, never months.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta
from fractions import Fraction

DURATION_EXAMPLES = "use e.g. '1 minute', '5m', '1h', '7d'"
TIME_EXAMPLES = (
    "use ISO 8601 ('2026-11-19T00:00:00Z'), epoch seconds ('1763510400') "
    "or an age such as '36h' or '7d'"
)
INFLUX_MINIMUM_RETENTION = timedelta(hours=1)
INFINITE = "INF"

_SECONDS_PER_UNIT = {
    **dict.fromkeys(("s", "second", "seconds"), 1),
    **dict.fromkeys(("m", "minute", "minutes"), 60),
    **dict.fromkeys(("h", "hour", "hours"), 3600),
    **dict.fromkeys(("d", "day", "days"), 86400),
    **dict.fromkeys(("w", "week", "weeks"), 7 * 86400),
}
# InfluxDB's spellings: InfluxQL literals (`104w`, `1h30m`) and Go's (`720h0m0s`, `1.5µs`).
_INFLUXDB_SECONDS_PER_UNIT = {
    "ns": Fraction(1, 10**9),
    **dict.fromkeys(("u", "µ", "us", "µs"), Fraction(1, 10**6)),
    "ms": Fraction(1, 1000),
    **{unit: _SECONDS_PER_UNIT[unit] for unit in ("s", "m", "h", "d", "w")},
}
_NUMBER = r"\d+(?:\.\d+)?"
_PART = re.compile(rf"({_NUMBER})\s*([a-zµ]+)")
_DURATION = re.compile(rf"([+-]?)\s*((?:{_NUMBER}\s*[a-zµ]+\s*)+|{_NUMBER})")
_EPOCH = re.compile(rf"[+-]?{_NUMBER}")
_EPOCH_MILLISECONDS_FROM = 10**11  # epoch seconds this large are in the year 5138

# (seconds, singular, plural), largest first
_WORD_UNITS = (
    (7 * 86400, "week", "weeks"),
    (86400, "day", "days"),
    (3600, "hour", "hours"),
    (60, "minute", "minutes"),
    (1, "second", "seconds"),
)
_NRQL_UNITS = _WORD_UNITS[1:]  # a TIMESERIES bucket is at most a day here: no weeks
_INFLUX_UNITS = ((7 * 86400, "w"), (86400, "d"), (3600, "h"), (60, "m"), (1, "s"))


def parse_duration(text: str | int | float | timedelta, *, allow_zero: bool = False) -> timedelta:
    """A positive (or, with `allow_zero`, non-negative) whole number of seconds."""
    seconds = _duration_seconds(text)
    if seconds.denominator != 1:
        raise ValueError(f"{text!r} is not a whole number of seconds")
    if seconds < 0:
        raise ValueError(f"{text!r} must not be negative")
    if seconds == 0 and not allow_zero:
        raise ValueError(f"{text!r} must be longer than zero; {DURATION_EXAMPLES}")
    return timedelta(seconds=int(seconds))


def _duration_seconds(
    text: str | int | float | timedelta, units: dict[str, int | Fraction] = _SECONDS_PER_UNIT
) -> Fraction:
    if isinstance(text, timedelta):
        return Fraction(text // timedelta(microseconds=1), 1_000_000)
    if isinstance(text, int | float) and not isinstance(text, bool):
        return Fraction(text)
    not_a_duration = ValueError(f"{text!r} is not a duration; {DURATION_EXAMPLES}")
    if not isinstance(text, str):
        raise not_a_duration
    match = _DURATION.fullmatch(text.strip().lower())
    if not match:
        raise not_a_duration
    sign, body = match.groups()
    if _EPOCH.fullmatch(body):
        seconds = Fraction(body)
    else:
        seconds = Fraction(0)
        for number, unit in _PART.findall(body):
            if unit not in units:
                raise not_a_duration
            seconds += Fraction(number) * units[unit]
    return -seconds if sign == "-" else seconds


def parse_time(text: str | int | float | datetime | date, now: datetime) -> datetime:
    """A UTC-aware instant from ISO 8601, epoch seconds, or an age before `now`.

    Naive datetimes (and ISO strings without an offset) are UTC; PyYAML's `date` and
    `datetime` objects are accepted as they come.
    """
    if isinstance(text, datetime):
        return as_utc(text)
    if isinstance(text, date):
        return datetime(text.year, text.month, text.day, tzinfo=UTC)
    if isinstance(text, int | float) and not isinstance(text, bool):
        return _from_epoch(text, text)
    if not isinstance(text, str):
        raise ValueError(f"{text!r} is not a time; {TIME_EXAMPLES}")
    stripped = text.strip()
    if _EPOCH.fullmatch(stripped):
        return _from_epoch(Fraction(stripped), text)
    try:
        return as_utc(datetime.fromisoformat(stripped))
    except ValueError:
        pass
    try:
        return as_utc(now) - parse_duration(stripped, allow_zero=True)
    except ValueError:
        raise ValueError(f"{text!r} is not a time; {TIME_EXAMPLES}") from None


def time_spec(text: str, now: datetime) -> str:
    """How a time was asked for, independent of when: an age stays an age ('7d', '36h'),
    anything else becomes its instant in ISO 8601 UTC. Two commands that mean the same request
    have the same spec ('--since 2026-11-25' and '--since 1764028800'; '7d' and '168h')."""
    instant = parse_time(text, now)
    stripped = text.strip()
    if _EPOCH.fullmatch(stripped):
        return _iso(instant)
    try:
        datetime.fromisoformat(stripped)
        return _iso(instant)
    except ValueError:
        pass
    seconds = parse_duration(stripped, allow_zero=True) // timedelta(seconds=1)
    for size, unit in ((86400, "d"), (3600, "h"), (60, "m")):
        if seconds and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def as_utc(moment: datetime) -> datetime:
    """The same instant in UTC; a naive datetime is taken to be UTC already."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def _from_epoch(seconds: Fraction | int | float, text: object) -> datetime:
    if abs(seconds) >= _EPOCH_MILLISECONDS_FROM:
        raise ValueError(
            f"{text!r} is too large for epoch seconds (milliseconds?); {TIME_EXAMPLES}"
        )
    microseconds = round(Fraction(seconds) * 1_000_000)
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=microseconds)


def format_duration(duration: timedelta) -> str:
    """'1 minute', '5 minutes', '1 hour', '90 seconds', '2 weeks': the largest whole unit."""
    seconds = Fraction(duration // timedelta(microseconds=1), 1_000_000)
    if seconds.denominator != 1:
        return f"{float(seconds):g} seconds"
    return _in_largest_unit(int(seconds), _WORD_UNITS)


def compact_duration(duration: timedelta) -> str:
    """'8d', '1h30m', '5m27s', '0s': whole seconds, in the form `parse_duration` reads back.

    Weeks are written as days (`14d`): people read retention and lag in days.
    """
    seconds = int(duration.total_seconds())
    sign, seconds = ("-", -seconds) if seconds < 0 else ("", seconds)
    parts = []
    for size, unit in _INFLUX_UNITS[1:]:
        count, seconds = divmod(seconds, size)
        if count:
            parts.append(f"{count}{unit}")
    return sign + ("".join(parts) or "0s")


def nrql_timeseries(interval: timedelta) -> str:
    """The body of NRQL's TIMESERIES clause for a bucket: '1 minute', '5 minutes', '1 day'."""
    seconds = _positive_whole_seconds(interval)
    return _in_largest_unit(seconds, _NRQL_UNITS)


def _in_largest_unit(seconds: int, units: tuple[tuple[int, str, str], ...]) -> str:
    for size, singular, plural in units:
        if seconds % size == 0 and seconds != 0:
            count = seconds // size
            return f"{count} {singular if abs(count) == 1 else plural}"
    return "0 seconds"


def _positive_whole_seconds(duration: timedelta) -> int:
    if duration <= timedelta(0) or duration % timedelta(seconds=1):
        raise ValueError(f"{duration} is not a positive whole number of seconds")
    return duration // timedelta(seconds=1)


def influx_duration(text: str | int | float | timedelta) -> str:
    """A normalised InfluxQL duration literal for a retention policy: '104w', '30d', '1h', 'INF'."""
    seconds = influx_duration_seconds(text)
    if seconds is None:
        return INFINITE
    for size, unit in _INFLUX_UNITS:
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    raise AssertionError("unreachable: every whole number of seconds is a multiple of 1s")


def influx_duration_seconds(text: str | int | float | timedelta) -> int | None:
    """Seconds of a retention duration; None for INF. At least 1h, InfluxDB's minimum."""
    if isinstance(text, str) and text.strip().upper() == INFINITE:
        return None
    duration = parse_duration(text)
    if duration < INFLUX_MINIMUM_RETENTION:
        raise ValueError(
            f"{text!r} is shorter than InfluxDB's minimum retention of 1h; "
            f"use at least '1h', or 'INF' to keep data forever"
        )
    return duration // timedelta(seconds=1)


def influxdb_duration_seconds(text: str) -> int | None:
    """Whole seconds of a duration as InfluxDB writes it, InfluxQL (`104w`, `1h30m`) or Go
    (`720h0m0s`, what SHOW RETENTION POLICIES answers); None for INF and `0s` (infinite)."""
    if text.strip().upper() == INFINITE:
        return None
    return round(_duration_seconds(text, _INFLUXDB_SECONDS_PER_UNIT)) or None
