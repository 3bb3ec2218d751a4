"""New Relic result rows → InfluxDB line protocol, exactly as the contract maps them.

- time: the row's `beginTimeSeconds` (second precision);
- tags: the static tags plus one per FACET attribute (names from `metadata.facets`), values as
  strings; a null or empty facet value gives no tag;
- fields: every other key except `beginTimeSeconds`, `endTimeSeconds`, `facet` and the facet
  attributes themselves; nested objects (percentiles) become `<key>.<subkey>`; numbers are
  always floats, booleans and strings stay as they are, nulls give no field;
- a row without any field gives no point.

Lines are built with string operations, not per-point objects: this runs once per row of a
backfill (millions of times), so everything that depends only on the query is prepared once.
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


def _field_part(s: Shape, row: Mapping[str, object], keys: dict[str, str]) -> str:
    """`keys` caches escaped field keys: a query has few, a backfill has millions of rows."""
    fields = []
    for key, value in row.items():
        if key in s.excluded:
            continue
        if isinstance(value, dict):
            for sub, sub_value in value.items():
                if (formatted := format_field(sub_value)) is not None:
                    name = f"{key}.{sub}"
                    escaped = keys.get(name) or keys.setdefault(name, escape_key(name))
                    fields.append(f"{escaped}={formatted}")
        elif (formatted := format_field(value)) is not None:
            escaped = keys.get(key) or keys.setdefault(key, escape_key(key))
            fields.append(f"{escaped}={formatted}")
    return ",".join(fields)


def to_lines(
    rows: Iterable[Mapping[str, object]],
    facets: Sequence[str],
    measurement: str,
    static_tags: Mapping[str, str],
) -> list[str]:
    """One line per row that has at least one field."""
    s = shape(measurement, facets, static_tags)
    prefix_cache: dict[str, str] = {}
    field_keys: dict[str, str] = {}
    lines = []
    for row in rows:
        fields = _field_part(s, row, field_keys)
        if not fields:
            continue
        tags = _tag_part(s, row)
        prefix = prefix_cache.get(tags)
        if prefix is None:
            prefix = prefix_cache[tags] = s.measurement + tags
        lines.append(f"{prefix} {fields} {int(row['beginTimeSeconds'])}")
    return lines


def series_count(rows: Iterable[Mapping[str, object]]) -> int:
    """Distinct facet values in a result: the number of series its points belong to."""
    return len({repr(row.get("facet")) for row in rows})
