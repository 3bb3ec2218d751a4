r"""Points as InfluxDB stores them, and their comparison. Pure functions, no I/O.

A point is identified by measurement, tag set and timestamp; its content is its field set and
values. `parse_line` reads the line protocol `run` writes exactly as InfluxDB 1.x parses it,
with `archiver.lineprotocol`'s escape tables: in measurement, tag keys, tag values and field
keys a backslash escapes only a following `,`, `=` or space (the byte before a delimiter
decides) and is otherwise kept; in string fields `\"` and `\\` are escapes. Values are typed
as InfluxDB types them: a float is a float (`14.0` and `14` are the same float), `14i` an
integer, `"…"` a string, `true` a boolean; a float never equals an integer of the same value.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from archiver.lineprotocol import KEY_SPECIALS, unescape_key, unescape_measurement, unescape_string

Value = float | int | str | bool
TagSet = tuple[tuple[str, str], ...]  # sorted (key, value), empty values left out
Key = tuple[TagSet, int]  # (tags, time in ns)

NS_PER = {"s": 1_000_000_000, "ms": 1_000_000, "us": 1_000, "ns": 1}
_UNESCAPED_SPACE = re.compile(r"(?<!\\) ")
_UNESCAPED_COMMA = re.compile(r"(?<!\\),")
_UNESCAPED_EQUALS = re.compile(r"(?<!\\)=")
_SPECIALS = re.escape(KEY_SPECIALS)
_FIELD = re.compile(
    rf'(?P<key>(?:\\[{_SPECIALS}]|\\|[^\\{_SPECIALS}])+)=(?P<value>"(?:\\.|[^"\\])*"|[^,]*)(?:,|$)',
    re.DOTALL,
)
_INTEGER = re.compile(r"-?\d+[iu]")
_TRUE = frozenset({"t", "T", "true", "True", "TRUE"})
_FALSE = frozenset({"f", "F", "false", "False", "FALSE"})


class LineError(ValueError):
    """A line that is not line protocol (a bug upstream: the transform wrote it)."""


@dataclass(frozen=True)
class Point:
    measurement: str
    tags: TagSet
    time_ns: int
    fields: Mapping[str, Value]
    line: str | None = None  # the line that wrote it (expected points only)

    @property
    def key(self) -> Key:
        return self.tags, self.time_ns


def tag_set(tags: Mapping[str, str]) -> TagSet:
    return tuple(sorted((k, v) for k, v in tags.items() if v))


def parse_value(text: str) -> Value:
    if text.startswith('"') and text.endswith('"') and len(text) >= 2:
        return unescape_string(text[1:-1])
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    if _INTEGER.fullmatch(text):
        return int(text[:-1])
    try:
        return float(text)
    except ValueError:
        raise LineError(f"not a field value: {text!r}") from None


def _parse_plain(line: str, precision: str) -> Point | None:
    """The common line without backslashes or string fields: plain splits, no regexes."""
    parts = line.split(" ")
    if len(parts) != 3 or not parts[2].lstrip("-").isdigit():
        return None
    measurement, *tag_texts = parts[0].split(",")
    tags = {}
    for text in tag_texts:
        key, equals, value = text.partition("=")
        if not equals or "=" in value:
            return None
        tags[key] = value
    fields: dict[str, Value] = {}
    for text in parts[1].split(","):
        key, equals, value = text.partition("=")
        if not equals or not key:
            return None
        try:
            fields[key] = float(value)
        except ValueError:
            fields[key] = parse_value(value)
    return Point(measurement, tag_set(tags), int(parts[2]) * NS_PER[precision], fields, line)


def parse_line(line: str, precision: str = "s") -> Point:
    """One line of line protocol (with a timestamp) as the point InfluxDB stores."""
    if "\\" not in line and '"' not in line and (plain := _parse_plain(line, precision)):
        return plain
    head = _UNESCAPED_SPACE.search(line)
    rest, _, timestamp = line.rpartition(" ")
    if head is None or not timestamp.lstrip("-").isdigit() or head.start() >= len(rest):
        raise LineError(f"not a line with fields and a timestamp: {line!r:.200}")
    key_part, field_part = line[: head.start()], rest[head.end() :]
    measurement, *tag_texts = _UNESCAPED_COMMA.split(key_part)
    tags = {}
    for text in tag_texts:
        parts = _UNESCAPED_EQUALS.split(text, maxsplit=1)
        if len(parts) != 2:
            raise LineError(f"not a tag: {text!r} in {line!r:.200}")
        tags[unescape_key(parts[0])] = unescape_key(parts[1])
    fields: dict[str, Value] = {}
    position = 0
    while position < len(field_part):
        found = _FIELD.match(field_part, position)
        if found is None:
            raise LineError(f"not a field at {field_part[position:]!r:.80} in {line!r:.200}")
        fields[unescape_key(found["key"])] = parse_value(found["value"])
        position = found.end()
    return Point(
        unescape_measurement(measurement),
        tag_set(tags),
        int(timestamp) * NS_PER[precision],
        fields,
        line,
    )


def same_value(a: Value, b: Value) -> bool:
    """Equal as InfluxDB keeps them: same type (float, integer, string, boolean), same value."""
    return type(a) is type(b) and a == b


def same_fields(a: Mapping[str, Value], b: Mapping[str, Value]) -> bool:
    return a.keys() == b.keys() and all(same_value(a[k], b[k]) for k in a)


@dataclass(frozen=True)
class Difference:
    kind: str  # missing | different | extra
    expected: Point | None  # what New Relic gives (None for extra)
    actual: Point | None  # what InfluxDB holds (None for missing)

    @property
    def point(self) -> Point:
        return self.expected or self.actual  # type: ignore[return-value]

    @property
    def fields_only_in_influxdb(self) -> bool:
        """InfluxDB holds fields New Relic does not give: rewriting cannot remove them."""
        return bool(
            self.expected and self.actual and self.actual.fields.keys() - self.expected.fields
        )


@dataclass
class Comparison:
    checked: int = 0  # points New Relic gives, plus points only InfluxDB has
    differences: list[Difference] = field(default_factory=list)

    def of(self, kind: str) -> list[Difference]:
        return [d for d in self.differences if d.kind == kind]

    @property
    def clean(self) -> bool:
        return not self.differences


def compare(expected: Iterable[Point], actual: Iterable[Point]) -> Comparison:
    """Point by point: missing, different (field set or a value) and extra, in time order."""
    wanted = {point.key: point for point in expected}
    held = {point.key: point for point in actual}
    differences = []
    for key, point in wanted.items():
        found = held.get(key)
        if found is None:
            differences.append(Difference("missing", point, None))
        elif not same_fields(point.fields, found.fields):
            differences.append(Difference("different", point, found))
    differences.extend(Difference("extra", None, p) for k, p in held.items() if k not in wanted)
    differences.sort(key=lambda d: (d.point.time_ns, d.point.tags, d.kind))
    return Comparison(len(wanted.keys() | held.keys()), differences)
