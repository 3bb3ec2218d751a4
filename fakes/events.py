"""The fake's raw events: what `SELECT a, b FROM T` and `SELECT * FROM T` return.

Nothing is stored. The events of one second are a stable hash of (event type, second), so any
range can be answered, or checked against `events()`, in any order and always the same way.

- An ordinary event type has 0 to 3 events in a second (about 1,800 an hour). Its string
  attributes come from the facet values of `fakes.data` (spaces, commas, `=`, quotes,
  backslashes, unicode, an empty string, a null host).
- `Busy<N><anything>` (`BusyTransaction`, `Busy6000Transaction`) has N events in every second,
  give or take one (N defaults to 3: about 10,800 an hour, above the 5,000 rows of LIMIT MAX).
  Its events come in groups of 1 to 3 that share the millisecond, `appName` and `host`; a
  group's last event is sometimes an exact copy of the one before.
- `Metric` events are dimensional metrics, as `SELECT * FROM Metric` answers them: each also
  has `metricName` and a nested object named after it,
  `"newrelic.internal.usage": {"count": n, "type": "count"}` (newrelic-client-go's fixture).
- Every event type has the numeric attributes `duration` (mostly floats, about one in four
  integral and sent as an int, some null) and `databaseCallCount` (int or null), the boolean
  `error`, the string `message`, and `timestamp` (epoch ms).

Answers follow New Relic: newest first, LIMIT defaulting to 100, at most 5,000 (MAX); no event
older than the retention or newer than now.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from functools import lru_cache
from itertools import islice

from fakes.data import Answer, Window, entities, mix, name_seed
from fakes.nrql import Query

Event = dict[str, object]

DEFAULT_EVENT_LIMIT = 100
MAX_EVENT_LIMIT = 5000
BUSY = re.compile(r"Busy(\d*)\w*")
BUSY_DEFAULT_RATE = 3
BUSY_ENTITIES: tuple[dict[str, str], ...] = (
    {"appName": "busy api", "host": "web-01", "name": "WebTransaction/Go/busy"},
    {"appName": "busy, worker=2", "host": "web-02", "name": "OtherTransaction/Job/busy"},
)
MESSAGES = ("ok", 'say "hi"', "C:\\tmp\\", "a=b, c d", "Zürich ☃ 東京", "")
# Ordinary types: how many events a second holds, by (hash % 20): mostly none.
_ORDINARY_COUNTS = (0,) * 14 + (1, 1, 1, 2, 2, 3)


def events(event_type: str, since_ms: int, until_ms: int) -> list[Event]:
    """Every event with since_ms <= timestamp < until_ms, newest first (the test oracle)."""
    return list(_newest_first(event_type, since_ms, until_ms))


def answer_events(query: Query, span: Window, *, now: float, retention_seconds: float) -> Answer:
    """New Relic's answer to a raw-event query over `span`."""
    since_ms = max(span.since_ms, int((now - retention_seconds) * 1000))
    until_ms = min(span.until_ms, int(now * 1000))
    limit = DEFAULT_EVENT_LIMIT if query.limit is None else min(query.limit, MAX_EVENT_LIMIT)
    newest = islice(_newest_first(query.event_type, since_ms, until_ms), limit)
    results = [_project(query, event) for event in newest]
    metadata = {
        "facets": None,
        "eventTypes": [query.event_type],
        "messages": [],
        "timeWindow": {"begin": span.since_ms, "end": span.until_ms},
    }
    return Answer(results, metadata)


def _project(query: Query, event: Event) -> Event:
    if query.select_all:
        return dict(event)
    row: Event = {"timestamp": event["timestamp"]}
    row.update((column.key, event.get(column.attribute)) for column in query.columns)
    return row


def _newest_first(event_type: str, since_ms: int, until_ms: int) -> Iterator[Event]:
    """Lazily, second by second from the newest: a capped answer stops early."""
    if since_ms >= until_ms:
        return
    for second in range((until_ms - 1) // 1000, since_ms // 1000 - 1, -1):
        in_range = [
            event
            for event in _second(event_type, second)
            if since_ms <= event["timestamp"] < until_ms  # type: ignore[operator]
        ]
        yield from sorted(in_range, key=lambda event: -event["timestamp"])  # type: ignore[operator]


def _second(event_type: str, second: int) -> list[Event]:
    """The events of one second, in generation order."""
    seed = mix(_type_seed(event_type) ^ second)
    busy = BUSY.fullmatch(event_type)
    if busy is None:
        return _ordinary_second(event_type, second, seed)
    rate = int(busy.group(1) or BUSY_DEFAULT_RATE)
    return _busy_second(second, seed, max(0, rate - 1 + seed % 3))


def _ordinary_second(event_type: str, second: int, seed: int) -> list[Event]:
    choices = _entity_choices(event_type)
    result = []
    for index in range(_ORDINARY_COUNTS[seed % len(_ORDINARY_COUNTS)]):
        bits = mix(seed ^ (index + 1))
        timestamp = second * 1000 + (bits >> 8) % 1000
        event = _event(choices[(bits >> 24) % len(choices)], timestamp, bits)
        if event_type == "Metric":
            event["metricName"] = "newrelic.internal.usage"
            event["newrelic.internal.usage"] = {"count": (bits >> 20) % 50000, "type": "count"}
        result.append(event)
    return result


def _busy_second(second: int, seed: int, count: int) -> list[Event]:
    """Groups of 1 to 3 events sharing a millisecond and an entity."""
    result: list[Event] = []
    group = 0
    while len(result) < count:
        group_bits = mix(seed ^ (group << 32))
        timestamp = second * 1000 + (group_bits >> 8) % 1000
        entity = BUSY_ENTITIES[(group_bits >> 24) % len(BUSY_ENTITIES)]
        size = min(1 + (group_bits >> 32) % 3, count - len(result))
        for member in range(size):
            if member == 2 and (group_bits >> 40) % 2 == 0:
                result.append(dict(result[-1]))  # an exact duplicate: it must survive too
            else:
                result.append(_event(entity, timestamp, mix(group_bits ^ (member + 1))))
        group += 1
    return result


def _event(entity: dict[str, str | None], timestamp: int, bits: int) -> Event:
    event: Event = {"timestamp": timestamp, **entity}
    event["duration"] = _duration(bits)
    event["databaseCallCount"] = None if (bits >> 44) % 5 == 0 else (bits >> 47) % 20
    event["error"] = (bits >> 52) % 7 == 0
    event["message"] = MESSAGES[(bits >> 55) % len(MESSAGES)]
    return event


def _duration(bits: int) -> int | float | None:
    kind = (bits >> 32) % 12
    if kind == 0:
        return None
    milliseconds = 1 + (bits >> 36) % 4000
    if kind <= 3:
        return milliseconds // 1000 + 1  # integral: JSON sends it as an int
    return milliseconds / 1000


@lru_cache(maxsize=256)
def _type_seed(event_type: str) -> int:
    return name_seed("events", event_type)


@lru_cache(maxsize=256)
def _entity_choices(event_type: str) -> tuple[dict[str, str | None], ...]:
    """The type's entities, each with every attribute any of them has (missing ones null)."""
    found = entities(event_type)
    keys = list(dict.fromkeys(key for entity in found for key in entity))
    return tuple({key: entity.get(key) for key in keys} for entity in found)
