"""A line-protocol reader for tests: expected.lp files → points to compare with InfluxDB's.

Written from InfluxDB 1.x's rules, independently of archiver.pipeline.transform: in the
measurement `,` and space are escaped; in tag keys, tag values and field keys `,`, `=` and
space; in string field values `"` and `\\`. A backslash before any other character is kept as it is.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Point:
    measurement: str
    tags: tuple[tuple[str, str], ...]  # sorted by key
    fields: tuple[tuple[str, object], ...]  # sorted by key; floats, bools, strs
    time: int

    @property
    def series_and_time(self) -> tuple:
        return self.measurement, self.tags, self.time


def parse(line: str) -> Point:
    key_part, rest = _split_unescaped(line, " ", 1)
    field_part, time_part = _split_fields_and_time(rest)
    measurement, *tags = _split_unescaped(key_part, ",")
    tag_pairs = sorted(
        (_unescape(k), _unescape(v)) for k, v in (_split_unescaped(t, "=", 1) for t in tags)
    )
    fields = sorted(_field(part) for part in _split_fields(field_part))
    return Point(_unescape(measurement), tuple(tag_pairs), tuple(fields), int(time_part))


def _field(text: str) -> tuple[str, object]:
    key, value = _split_unescaped(text, "=", 1)
    if value.startswith('"'):
        return _unescape(key), value[1:-1].replace('\\"', '"').replace("\\\\", "\\")
    if value in ("true", "false"):
        return _unescape(key), value == "true"
    return _unescape(key), float(value)


def _unescape(text: str) -> str:
    out, i = [], 0
    while i < len(text):
        if text[i] == "\\" and i + 1 < len(text) and text[i + 1] in ", =":
            out.append(text[i + 1])
            i += 2
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def _split_unescaped(text: str, sep: str, maxsplit: int = -1) -> list[str]:
    parts, current, i = [], [], 0
    while i < len(text):
        char = text[i]
        if char == "\\" and i + 1 < len(text):
            current.append(text[i : i + 2])
            i += 2
            continue
        if char == sep and maxsplit != 0:
            parts.append("".join(current))
            current = []
            maxsplit -= 1
        else:
            current.append(char)
        i += 1
    parts.append("".join(current))
    return parts


def _split_fields_and_time(text: str) -> tuple[str, str]:
    """Fields, then the timestamp after the last space outside a quoted string."""
    in_string, last_space, i = False, -1, 0
    while i < len(text):
        char = text[i]
        if char == "\\":
            i += 2
            continue
        if char == '"':
            in_string = not in_string
        elif char == " " and not in_string:
            last_space = i
        i += 1
    return text[:last_space], text[last_space + 1 :]


def _split_fields(text: str) -> list[str]:
    parts, current, in_string, i = [], [], False, 0
    while i < len(text):
        char = text[i]
        if char == "\\" and i + 1 < len(text):
            current.append(text[i : i + 2])
            i += 2
            continue
        if char == '"':
            in_string = not in_string
        if char == "," and not in_string:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
        i += 1
    parts.append("".join(current))
    return parts
