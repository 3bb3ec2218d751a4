"""Raw-event queries (`mode: events`): windows New Relic does not cap, and events → lines.

New Relic returns at most 5,000 rows (LIMIT MAX) for `SELECT a, b FROM T`, newest first, and
says nothing when it cut the answer. A window that comes back with exactly 5,000 rows may be
missing events, so it is split in halves at whole seconds and asked again, down to one second.

One event becomes one point at its `timestamp` (epoch ms), written with nanosecond precision.
Events that share a millisecond and a tag set would overwrite each other in InfluxDB, so the
k-th of them (in a content order) is written k nanoseconds later. The order depends only on the
events, never on the order New Relic sent them in: re-exporting a window writes the same
points. Windows are split at whole seconds, so all the events of one millisecond are always in
the same answer, and re-exporting a group that gained a late event rewrites all of it.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime, timedelta
from typing import NamedTuple

from archiver.errors import NewRelicError
from archiver.lineprotocol import escape_key, escape_measurement, format_field, line, series
from archiver.timeparse import as_utc
from archiver.windows import EPOCH, iso

log = logging.getLogger(__name__)

MAX_ROWS = 5000  # New Relic's LIMIT MAX for raw events
SECOND = timedelta(seconds=1)
NS_PER_MS = 1_000_000

Row = Mapping[str, object]
Fetch = Callable[[datetime, datetime], Sequence[Row]]


class EventWindow(NamedTuple):
    since: datetime
    until: datetime
    rows: Sequence[Row]


def is_capped(rows: Sequence[Row]) -> bool:
    """New Relic may have left events out of this answer."""
    return len(rows) >= MAX_ROWS


def split(since: datetime, until: datetime) -> list[tuple[datetime, datetime]]:
    """Two halves cut at a whole second, or the window itself when it cannot be cut."""
    middle = since + (until - since) / 2
    middle -= (as_utc(middle) - EPOCH) % SECOND
    if middle <= since:
        return [(since, until)]
    return [(since, middle), (middle, until)]


def plan_events(
    fetch: Fetch, since: datetime, until: datetime, *, label: str = "events"
) -> Iterator[EventWindow]:
    """Every window of [since, until) whose answer is complete, with its rows, oldest first.

    A capped window is split and fetched again; a capped window that cannot be split (one
    second) is yielded anyway, with a warning naming `label` (the query and target).
    """
    pending = [(since, until)]  # a stack: the oldest window is on top
    while pending:
        window_since, window_until = pending.pop()
        rows = fetch(window_since, window_until)
        if is_capped(rows):
            halves = split(window_since, window_until)
            if len(halves) == 2:
                pending.extend(reversed(halves))
                continue
            log.warning(
                "%s: New Relic returned its maximum of %d events for [%s, %s), a window that"
                " cannot be split further: the oldest events of it may be missing",
                label,
                MAX_ROWS,
                iso(window_since),
                iso(window_until),
            )
        yield EventWindow(window_since, window_until, rows)


def to_lines(
    rows: Sequence[Row],
    measurement: str,
    tag_attributes: Sequence[str],
    static_tags: Mapping[str, str],
    *,
    dropped: set[str] | None = None,
) -> list[str]:
    """One line per event with at least one field, sorted; time in nanoseconds.

    Tags: the static tags, then one per tag attribute with a non-empty value (an attribute's
    value wins over a static tag of the same name). Fields: every other attribute but
    `timestamp`, as `archiver.lineprotocol` formats and orders them; a nested object (a
    dimensional Metric's `"newrelic.internal.usage": {"count": 49500, "type": "count"}`) gives
    one field per entry, `<key>.<subkey>`, as in aggregate mode. Keys whose value has no
    line-protocol form (lists) are added to `dropped`.
    """
    dropped = dropped if dropped is not None else set()
    static = {escape_key(key): escape_key(str(value)) for key, value in static_tags.items()}
    tag_keys = [(attribute, escape_key(attribute)) for attribute in tag_attributes]
    excluded = {"timestamp", *tag_attributes}
    prefix = escape_measurement(measurement)
    groups: dict[tuple[int, str], list[list[str]]] = defaultdict(list)
    for row in rows:
        fields = _fields(row, excluded, dropped)
        if fields:
            fields.sort()  # as `line` orders them: the content order of equal events
            groups[(_timestamp_ms(row), series(prefix, _tags(row, static, tag_keys)))].append(
                fields
            )
    lines = [
        line(event_series, fields, timestamp_ms * NS_PER_MS + k)
        for (timestamp_ms, event_series), group in groups.items()
        for k, fields in enumerate(sorted(group, key=",".join))  # content order
    ]
    return sorted(lines, key=lambda text: (int(text.rpartition(" ")[2]), text))


def _tags(row: Row, static: dict[str, str], tag_keys: list[tuple[str, str]]) -> list:
    """Escaped (key, value) pairs; an attribute's value wins over a static tag of its name."""
    tags = dict(static)
    for attribute, key in tag_keys:
        value = row.get(attribute)
        tags[key] = "" if value is None else escape_key(str(value))
    return list(tags.items())


def _fields(row: Row, excluded: set[str], dropped: set[str]) -> list[str]:
    """`key=value` of every field of the event."""
    fields: list[str] = []
    for key, value in row.items():
        if key not in excluded:
            _add_field(key, value, fields, dropped)
    return fields


def _add_field(key: str, value: object, fields: list[str], dropped: set[str]) -> None:
    """One attribute's fields: nested objects are flattened to `<key>.<subkey>`."""
    if isinstance(value, dict):
        for sub, sub_value in value.items():
            _add_field(f"{key}.{sub}", sub_value, fields, dropped)
        return
    formatted = format_field(value)
    escaped_key = escape_key(key)
    if formatted is not None and escaped_key:
        fields.append(f"{escaped_key}={formatted}")
    elif value is not None and not isinstance(value, int | float):
        dropped.add(key)


def _timestamp_ms(row: Row) -> int:
    value = row.get("timestamp")
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise NewRelicError(f"a raw-event row has no epoch-ms `timestamp`: {dict(row)!r:.200}")
    return int(value)
