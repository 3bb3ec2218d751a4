"""New Relic result rows → InfluxDB line protocol, exactly as the contract maps them.

- time: the row's `beginTimeSeconds` (second precision);
- tags: the static tags plus one per FACET attribute (names from `metadata.facets`), values as
  strings; a null or empty facet value gives no tag;
- fields: every other key except `beginTimeSeconds`, `endTimeSeconds`, `facet` and the facet
  attributes themselves; nested objects (percentiles) become `<key>.<subkey>`; numbers are
  always floats, booleans and strings stay as they are, nulls give no field;
- a row without any field gives no point.

Lines are built with string operations, not per-point objects: this runs once per row of a
backfill (millions of times), so everything that depends only on the query, or only on the
facet value, is prepared once.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

SKIPPED_KEYS = frozenset({"beginTimeSeconds", "endTimeSeconds", "facet", "timestamp"})

_MEASUREMENT_ESCAPES = str.maketrans({",": r"\,", " ": r"\ ", "\n": r"\n"})
_KEY_ESCAPES = str.maketrans({",": r"\,", "=": r"\=", " ": r"\ ", "\n": r"\n"})
_STRING_ESCAPES = str.maketrans({"\\": "\\\\", '"': r"\"", "\n": r"\n"})


def escape_measurement(name: str) -> str:
    return name.translate(_MEASUREMENT_ESCAPES)


def escape_key(text: str) -> str:
    """Tag keys, tag values and field keys.

    InfluxDB 1.x keeps a backslash as it is unless `,`, `=` or space follows, so backslashes
    are not escaped. A trailing backslash cannot be written at all (it escapes the separator
    after it, in every escaping), so trailing backslashes are dropped: `C:\\tmp\\` → `C:\\tmp`.
    """
    return text.rstrip("\\").translate(_KEY_ESCAPES)


def format_field(value: object) -> str | None:
    """Field value in line protocol, or None when the value gives no field."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        number = float(value)
        return repr(number) if math.isfinite(number) else None
    if isinstance(value, str):
        return '"' + value.translate(_STRING_ESCAPES) + '"'
    return None  # lists (e.g. uniques()) have no line-protocol form


@dataclass(frozen=True)
class Shape:
    """Everything about a query's lines that does not change from row to row."""

    measurement: str
    static_tags: tuple[tuple[str, str], ...]  # (escaped key, escaped value)
    facet_keys: tuple[str, ...]  # escaped tag keys, in FACET order
    tag_order: tuple[int, ...]  # sort order over static tags + facet tags, by tag key
    excluded: frozenset[str]  # row keys that are not fields


def shape(measurement: str, facets: Sequence[str], static_tags: Mapping[str, str]) -> Shape:
    static = tuple((escape_key(k), escape_key(str(v))) for k, v in static_tags.items() if str(v))
    facet_keys = tuple(escape_key(name) for name in facets)
    names = [key for key, _ in static] + list(facet_keys)
    return Shape(
        measurement=escape_measurement(measurement),
        static_tags=static,
        facet_keys=facet_keys,
        tag_order=tuple(sorted(range(len(names)), key=names.__getitem__)),
        excluded=SKIPPED_KEYS | frozenset(facets),
    )


def _facet_values(row: Mapping[str, object], facet_count: int) -> Sequence[object]:
    facet = row.get("facet")
    if facet_count == 1 and not isinstance(facet, list):
        return (facet,)
    if isinstance(facet, list) and len(facet) == facet_count:
        return facet
    return (None,) * facet_count


def _tag_part(s: Shape, row: Mapping[str, object]) -> str:
    pairs = list(s.static_tags)
    if s.facet_keys:
        values = _facet_values(row, len(s.facet_keys))
        pairs.extend(
            (key, "" if value is None else escape_key(str(value)))
            for key, value in zip(s.facet_keys, values, strict=True)
        )
    return "".join(f",{pairs[i][0]}={pairs[i][1]}" for i in s.tag_order if pairs[i][1])


def _number_or_other(name: str, value: object, parts: list[str]) -> None:
    """Append `name` + the formatted value, if it gives a field (the general case)."""
    if (formatted := format_field(value)) is not None:
        parts.append(name + formatted)


def _nested(key: str, value: dict, names: dict[tuple[str, str], str], parts: list[str]) -> None:
    """A nested object (percentiles): one field per entry, named `<key>.<subkey>`."""
    for sub, sub_value in value.items():
        name = names.get((key, sub))
        if name is None:
            name = names[(key, sub)] = escape_key(f"{key}.{sub}") + "="
        _number_or_other(name, sub_value, parts)


def _field_parts(
    row: Mapping[str, object], names: dict[str, str], nested_names: dict[tuple[str, str], str]
) -> list[str]:
    """`key=value` of every field of the row, in row order.

    `names` maps a row key to its escaped `key=`, or to "" when the key is no field; floats and
    ints, nearly every value, are formatted inline, anything else goes through `format_field`.
    """
    parts: list[str] = []
    for key, value in row.items():
        name = names.get(key)
        if name is None:
            name = names[key] = escape_key(key) + "="
        if not name:
            continue
        kind = type(value)
        if kind is float:
            if value - value == 0.0:  # finite: inf and nan give no field
                parts.append(name + repr(value))
        elif kind is int:
            parts.append(name + repr(float(value)))
        elif isinstance(value, dict):
            _nested(key, value, nested_names, parts)
        else:
            _number_or_other(name, value, parts)
    return parts


def to_lines(
    rows: Iterable[Mapping[str, object]],
    facets: Sequence[str],
    measurement: str,
    static_tags: Mapping[str, str],
) -> list[str]:
    """One line per row that has at least one field.

    The hot loop of a backfill: field names are escaped once per query, the measurement and
    tags once per facet value.
    """
    s = shape(measurement, facets, static_tags)
    names: dict[str, str] = dict.fromkeys(s.excluded, "")
    nested_names: dict[tuple[str, str], str] = {}
    prefixes: dict[object, str] = {}  # facet value → "measurement,tags "
    lines: list[str] = []
    for row in rows:
        parts = _field_parts(row, names, nested_names)
        if not parts:
            continue
        facet = row.get("facet")
        # Tags depend on the facet value only. A non-string is keyed by its repr in a tuple,
        # never equal to a string key, so that 1, 1.0 and True stay apart.
        facet_key = facet if type(facet) is str else (repr(facet),)
        prefix = prefixes.get(facet_key)
        if prefix is None:
            prefix = prefixes[facet_key] = f"{s.measurement}{_tag_part(s, row)} "
        lines.append(f"{prefix}{','.join(parts)} {int(row['beginTimeSeconds'])}")
    return lines
