r"""InfluxDB line protocol: the one serializer of aggregates, raw events and self-metrics.

Escaping, as InfluxDB 1.x parses it (checked against influxd 1.6.7 in tests/test_lineprotocol.py;
values shown literally):

- measurement: `,` and space are escaped;
- tag keys, tag values and field keys: `,`, `=` and space are escaped. A backslash escapes only
  a following `,`, `=` or space; every other backslash is kept, and `\\` is NOT collapsed to
  `\`, so backslashes are not escaped: `C:\tmp\x` is written `C:\tmp\x`, `a\,b` is written
  `a\\,b` (and reads back `a\,b`); writing `a\\b` for `a\b` would read back `a\\b`;
- a tag key, tag value or field key ending in a backslash cannot be written at all: `end\`
  escapes the delimiter after it, and so does `end\\` (the parser only looks at the byte before
  a delimiter): InfluxDB answers 400 "invalid tag format" / "invalid field format". Trailing
  backslashes are therefore dropped: `C:\tmp\` → `C:\tmp` (README, "From a New Relic result to
  InfluxDB points"). A measurement ending in a backslash is silently misread (`m\\,t=v f=1` is
  measurement `m,t=v` without tags): query files refuse such names;
- string field values: `"` and `\` are escaped; `s="end\\"` reads back `end\`;
- a newline, which would end the line, is written as `\n` (two characters) everywhere.

Order, the same for every producer:

- tags sorted by key (InfluxDB's recommendation; the stored series does not depend on it), a
  tag with an empty key or value left out; tags of equal keys keep the order they were given;
- fields sorted by their text `key=value` (key order, except that a key followed by a character
  that sorts before `=`, such as `a.b`, comes before the key it extends, `a`); InfluxDB does not
  depend on field order either, but equal points then always give equal lines.

The escape tables here are also the parse direction (`unescape_*`) that
`archiver.verify.compare` reads lines back with. Lines are built with string operations, not
per-point objects: the transform calls `line` once per row of a backfill.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from operator import itemgetter

MEASUREMENT_SPECIALS = ", "  # escaped with a backslash in the measurement
KEY_SPECIALS = ",= "  # ... in tag keys, tag values and field keys
STRING_SPECIALS = '"\\'  # ... in string field values

_MEASUREMENT_ESCAPES = str.maketrans({c: "\\" + c for c in MEASUREMENT_SPECIALS} | {"\n": r"\n"})
_KEY_ESCAPES = str.maketrans({c: "\\" + c for c in KEY_SPECIALS} | {"\n": r"\n"})
_STRING_ESCAPES = str.maketrans({c: "\\" + c for c in STRING_SPECIALS} | {"\n": r"\n"})

_MEASUREMENT_UNESCAPE = re.compile(r"\\([" + re.escape(MEASUREMENT_SPECIALS) + "])")
_KEY_UNESCAPE = re.compile(r"\\([" + re.escape(KEY_SPECIALS) + "])")
_STRING_UNESCAPE = re.compile(r"\\([" + re.escape(STRING_SPECIALS) + "])")

_TAG_KEY = itemgetter(0)


def escape_measurement(name: str) -> str:
    return name.translate(_MEASUREMENT_ESCAPES)


def escape_key(text: str) -> str:
    """A tag key, tag value or field key; trailing backslashes are dropped (module doc)."""
    return text.rstrip("\\").translate(_KEY_ESCAPES)


def escape_string(text: str) -> str:
    """A string field value, quotes included."""
    return '"' + text.translate(_STRING_ESCAPES) + '"'


def unescape_measurement(text: str) -> str:
    """The measurement as InfluxDB stores it."""
    return _MEASUREMENT_UNESCAPE.sub(r"\1", text)


def unescape_key(text: str) -> str:
    """A tag key, tag value or field key as InfluxDB stores it."""
    return _KEY_UNESCAPE.sub(r"\1", text)


def unescape_string(text: str) -> str:
    """A string field value (without its quotes) as InfluxDB stores it."""
    return _STRING_UNESCAPE.sub(r"\1", text)


def format_field(value: object) -> str | None:
    """A field value: numbers are always floats; None when the value gives no field (null,
    NaN, infinity, or a value without a line-protocol form such as a list)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        number = float(value)
        return repr(number) if math.isfinite(number) else None
    if isinstance(value, str):
        return escape_string(value)
    return None  # lists (e.g. uniques()) have no line-protocol form


def series(measurement: str, tags: Iterable[tuple[str, str]]) -> str:
    """`measurement,k=v,...` from an escaped measurement and escaped (key, value) pairs."""
    pairs = sorted(tags, key=_TAG_KEY)
    return measurement + "".join(f",{key}={value}" for key, value in pairs if key and value)


def line(series: str, fields: list[str], time: int) -> str:
    """One line from `series`, `key=value` texts (sorted here, in place) and a timestamp."""
    fields.sort()
    return f"{series} {','.join(fields)} {time}"


def point(
    measurement: str, tags: Mapping[str, str], fields: Mapping[str, object], time: int
) -> str:
    """One line from unescaped names and values (self-metrics); fields without a
    line-protocol form are left out."""
    tag_pairs = [(escape_key(key), escape_key(value)) for key, value in tags.items()]
    parts = [
        escape_key(key) + "=" + formatted
        for key, value in fields.items()
        if (formatted := format_field(value)) is not None
    ]
    return line(series(escape_measurement(measurement), tag_pairs), parts, time)
