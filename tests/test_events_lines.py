"""`events.to_lines` writes exactly the lines of the plain implementation it replaced.

`reference_to_lines` below is that implementation, kept verbatim (issue 16 made `to_lines`
~4× faster with caches and inline formatting; no output byte was to change). The generated
rows mix every JSON type as field and tag value, escaping characters, missing and nested
attributes and events sharing a millisecond, from fixed seeds.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Mapping, Sequence
from itertools import pairwise

import pytest

from archiver.errors import NewRelicError
from archiver.lineprotocol import escape_key, escape_measurement, format_field, line, series
from archiver.pipeline.events import NS_PER_MS, to_lines
from fakes.events import events

T0_MS = 1_763_553_600_123

# -- the reference: events.to_lines before issue 16, verbatim -----------------------------------


def reference_to_lines(
    rows: Sequence[Mapping[str, object]],
    measurement: str,
    tag_attributes: Sequence[str],
    static_tags: Mapping[str, str],
    *,
    dropped: set[str] | None = None,
) -> list[str]:
    dropped = dropped if dropped is not None else set()
    static = {escape_key(key): escape_key(str(value)) for key, value in static_tags.items()}
    tag_keys = [(attribute, escape_key(attribute)) for attribute in tag_attributes]
    excluded = {"timestamp", *tag_attributes}
    prefix = escape_measurement(measurement)
    groups: dict[tuple[int, str], list[list[str]]] = defaultdict(list)
    for row in rows:
        fields = _reference_fields(row, excluded, dropped)
        if fields:
            fields.sort()
            groups[
                (
                    _reference_timestamp_ms(row),
                    series(prefix, _reference_tags(row, static, tag_keys)),
                )
            ].append(fields)
    lines = [
        line(event_series, fields, timestamp_ms * NS_PER_MS + k)
        for (timestamp_ms, event_series), group in groups.items()
        for k, fields in enumerate(sorted(group, key=",".join))
    ]
    return sorted(lines, key=lambda text: (int(text.rpartition(" ")[2]), text))


def _reference_tags(row, static, tag_keys) -> list:
    tags = dict(static)
    for attribute, key in tag_keys:
        value = row.get(attribute)
        tags[key] = "" if value is None else escape_key(str(value))
    return list(tags.items())


def _reference_fields(row, excluded, dropped) -> list[str]:
    fields: list[str] = []
    for key, value in row.items():
        if key not in excluded:
            _reference_add_field(key, value, fields, dropped)
    return fields


def _reference_add_field(key, value, fields, dropped) -> None:
    if isinstance(value, dict):
        for sub, sub_value in value.items():
            _reference_add_field(f"{key}.{sub}", sub_value, fields, dropped)
        return
    formatted = format_field(value)
    escaped_key = escape_key(key)
    if formatted is not None and escaped_key:
        fields.append(f"{escaped_key}={formatted}")
    elif value is not None and not isinstance(value, int | float):
        dropped.add(key)


def _reference_timestamp_ms(row) -> int:
    value = row.get("timestamp")
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise NewRelicError(f"a raw-event row has no epoch-ms `timestamp`: {dict(row)!r:.200}")
    return int(value)


# -- generated rows -----------------------------------------------------------------------------

TEXTS = [
    "",
    "a",
    "1",
    "1.0",
    "True",
    "None",
    "web 01",
    "a,b",
    "k=v",
    'say "hi"',
    "C:\\tmp\\x",
    "end\\",
    "end\\\\",
    "\\",
    "line\nbreak",
    "Zürich ☃ 東京",
    "a\\,b",
    " ",
]
NUMBERS = [0, 1, -1, 54, 10**15 - 1, 10**15, -(10**15), 2**53 + 1, 10**17 + 3]
NUMBERS += [0.0, -0.0, 1.0, 0.5, 0.603, 1e16, 1.5e-7, 2.0**60, -3.25]
NUMBERS += [float("nan"), float("inf"), float("-inf")]
SCALARS = [*TEXTS, *NUMBERS, True, False, None]
TAG_VALUES = ["api", "web 01", "1", "", "\\", "x\\", "x", "a,b=c", 1, 1.0, True, -0.0, 0.0, 0]
TAG_VALUES += [None, ["l"], {"k": 1}, float("nan")]
KEYS = ["d", "duration", "name", "a.b", "a", "b c", "x,y", "k=", 'q"', "k\\", "", "\\", "ü", "n\n"]
KEYS += ["name\\"]  # escapes to `name`, as `name` does: two fields of one name
TAGS = ["appName", "host", "env", "a", "a\\", "d"]  # `a\` escapes to `a`; `d` is also a field


def scalar(rng: random.Random) -> object:
    return rng.choice(SCALARS) if rng.random() < 0.7 else rng.choice(TEXTS) + rng.choice(TEXTS)


def value(rng: random.Random, depth: int = 0) -> object:
    roll = rng.random()
    if roll < 0.08 and depth < 2:
        return {rng.choice(KEYS): value(rng, depth + 1) for _ in range(rng.randint(0, 3))}
    if roll < 0.12:
        return [scalar(rng) for _ in range(rng.randint(0, 2))]
    if roll < 0.35:
        return rng.choice(NUMBERS)
    if roll < 0.5:
        return rng.random() * 10 ** rng.randint(-3, 6)
    return scalar(rng)


def tag_value(rng: random.Random) -> object:
    """Few distinct values, so that series repeat; every type, and values equal as dict keys
    (1, 1.0, True, "1") or as tag texts (None, "", "\\")."""
    return rng.choice(TAG_VALUES)


def row(rng: random.Random, tag_attributes: Sequence[str], untimed: float) -> dict:
    """An event; without a `timestamp` with probability `untimed` (an error if it has fields)."""
    event: dict[str, object] = {}
    roll = rng.random()
    if roll < 0.93 - untimed:
        event["timestamp"] = T0_MS + rng.randint(0, 3)  # few milliseconds: shared ones
    elif roll < 1 - untimed:
        event["timestamp"] = T0_MS + rng.choice([0.0, 0.5, 1.999])  # truncated to the ms
    for attribute in tag_attributes:
        if rng.random() < 0.85:
            event[attribute] = tag_value(rng)
    for _ in range(rng.randint(0, 4)):
        event[rng.choice(KEYS)] = value(rng)
    items = list(event.items())
    rng.shuffle(items)
    return dict(items)


def case(seed: int):
    rng = random.Random(seed)
    tag_attributes = rng.sample(TAGS, rng.randint(0, 3))
    if tag_attributes and rng.random() < 0.2:
        tag_attributes.append(tag_attributes[0])  # a repeated tag attribute
    static = {rng.choice(["env", "source", "appName", "a", "b c", "s\\"]): rng.choice(TEXTS)}
    if rng.random() < 0.3:
        static["n"] = rng.choice([1, 1.0, True])  # str() of it is the tag
    untimed = 0.05 if rng.random() < 0.1 else 0.0
    rows = [row(rng, tag_attributes, untimed) for _ in range(rng.randint(0, 40))]
    if rng.random() < 0.3 and rows:  # exact copies, same millisecond and series
        rows += [dict(rng.choice(rows)) for _ in range(rng.randint(1, 5))]
        rng.shuffle(rows)
    measurement = rng.choice(["m", "nr events", "a,b", "x=y"])
    return rows, measurement, tag_attributes, static


def outcome(function, rows, measurement, tag_attributes, static):
    """The lines and the dropped keys, or the error raised."""
    dropped: set[str] = set()
    try:
        lines = function(rows, measurement, tag_attributes, static, dropped=dropped)
    except NewRelicError as error:
        return ("error", str(error))
    return lines, dropped


@pytest.mark.parametrize("block", range(8))
def test_to_lines_writes_the_reference_lines_for_generated_rows(block):
    errors = lines = 0
    for seed in range(block * 500, (block + 1) * 500):
        rows, measurement, tag_attributes, static = case(seed)
        expected = outcome(reference_to_lines, rows, measurement, tag_attributes, static)
        actual = outcome(to_lines, rows, measurement, tag_attributes, static)
        assert actual == expected, (seed, rows, tag_attributes, static)
        if expected[0] == "error":
            errors += 1
        else:
            lines += len(expected[0])
    assert errors > 10 and lines > 5000  # the cases reach both outcomes, and many lines


def test_generated_cases_reach_every_kind_of_case():
    """The generator does produce what the comparison above is meant to cover."""
    shared = unhashable = equal_keys = dropped_keys = reordered = repeated = 0
    for seed in range(2000):
        rows, measurement, tag_attributes, static = case(seed)
        for before, after in pairwise(rows):  # `to_lines` keeps the last row's plan
            if len(before) > 1 and set(before) == set(after):
                reordered += tuple(before) != tuple(after)
                repeated += tuple(before) == tuple(after)
        lines, dropped = outcome(reference_to_lines, rows, measurement, tag_attributes, static)
        if lines == "error":
            continue
        times = [text.rpartition(" ")[2] for text in lines]
        shared += any(not time.endswith("000000") for time in times)  # a k-th event
        unhashable += any(
            isinstance(row.get(a), list | dict) for row in rows for a in tag_attributes
        )
        equal_keys += any(row.get(a) is True for row in rows for a in tag_attributes) and any(
            row.get(a) == 1 and row.get(a) is not True for row in rows for a in tag_attributes
        )
        dropped_keys += bool(dropped)
    assert min(shared, unhashable, equal_keys, dropped_keys, reordered, repeated) > 50


def test_to_lines_writes_the_reference_lines_for_the_fakes_busy_events():
    """Events as New Relic's answers have them (the bench's shape), in several series."""
    rows = events("Busy100Transaction", T0_MS - 60_000, T0_MS)  # the bench's row (f)
    static = {"source": "newrelic", "account": "1"}
    assert len(rows) > 1000
    for tags in (["appName", "host"], ["host"], [], ["appName", "host", "missing"]):
        expected = reference_to_lines(rows, "busy events", tags, static)
        assert to_lines(rows, "busy events", tags, static) == expected
