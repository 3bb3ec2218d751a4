"""New Relic result rows → InfluxDB line protocol, exactly as the contract maps them.

- time: the row's `beginTimeSeconds` (second precision);
- tags: the static tags plus one per FACET attribute (names from `metadata.facets`), values as
  strings; a null or empty facet value gives no tag. The value is the row's `facet` (a list for
  several attributes) or, in rows without `facet`, the row's attribute of that name; when both
  are there they must agree, else the answer is refused (`facet_values`);
- fields: every other key except `beginTimeSeconds`, `endTimeSeconds`, `facet` and the facet
  attributes themselves; nested objects (percentiles) become `<key>.<subkey>`, at any depth;
  a funnel's `{"steps": [n1, n2, ...]}` becomes one field per step, `<key>.<step name>`;
  numbers are always floats, booleans and strings stay as they are, nulls give no field;
  any other value (a list, e.g. uniques()) gives no field and its key is added to `dropped`,
  for the caller to warn about;
- a row without any field gives no point.

Lines are built with string operations, not per-point objects: this runs once per row of a
backfill (millions of times), so everything that depends only on the query, or only on the
facet value, is prepared once. Escaping and the order of tags and fields are
`archiver.lineprotocol`'s, as for every producer of lines.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from archiver.errors import NewRelicError
from archiver.lineprotocol import escape_key, escape_measurement, format_field, line, series
from archiver.queries.funnels import step_name

SKIPPED_KEYS = frozenset({"beginTimeSeconds", "endTimeSeconds", "facet", "timestamp"})


@dataclass(frozen=True)
class Shape:
    """Everything about a query's lines that does not change from row to row."""

    measurement: str
    static_tags: tuple[tuple[str, str], ...]  # (escaped key, escaped value)
    facet_keys: tuple[str, ...]  # escaped tag keys, in FACET order
    excluded: frozenset[str]  # row keys that are not fields


def shape(measurement: str, facets: Sequence[str], static_tags: Mapping[str, str]) -> Shape:
    static = tuple((escape_key(k), escape_key(str(v))) for k, v in static_tags.items() if str(v))
    return Shape(
        measurement=escape_measurement(measurement),
        static_tags=static,
        facet_keys=tuple(escape_key(name) for name in facets),
        excluded=SKIPPED_KEYS | frozenset(facets),
    )


_ABSENT = object()
_EXACT = 10**15  # ints below it are floats whose repr is the int's digits and `.0`


def facet_values(row: Mapping[str, object], facets: Sequence[str]) -> tuple[object, ...]:
    """The value of each FACET attribute in this row, in FACET order.

    From the row's `facet` (a value for one attribute, a list for several) when it has one,
    else from the row's attributes named in `facets` (New Relic sends rows of either kind).
    When a row has both, they must agree: a disagreement raises NewRelicError rather than
    tagging the point with one of two values.
    """
    facet = row.get("facet", _ABSENT)
    if facet is _ABSENT:
        return tuple(row.get(name) for name in facets)
    values = tuple(facet) if isinstance(facet, list) else (facet,)
    if len(values) != len(facets):
        raise NewRelicError(
            f"New Relic's answer has the facet {facet!r} in a row, but FACET names "
            f"{len(facets)} attribute(s) {list(facets)}: cannot tell which value is which"
        )
    for name, value in zip(facets, values, strict=True):
        attribute = row.get(name, _ABSENT)
        if attribute is not _ABSENT and not _same_facet(value, attribute):
            raise NewRelicError(
                f"New Relic's answer has a row whose facet {value!r} disagrees with its "
                f"attribute {name} = {attribute!r}: refusing to guess the tag value"
            )
    return values


def _same_facet(facet: object, attribute: object) -> bool:
    """Equal as tag values: New Relic may send the facet as a string and the attribute as a
    number or boolean (`"419"` and `419`)."""
    if facet == attribute and type(facet) is type(attribute):
        return True
    return _tag_text(facet) == _tag_text(attribute)


def _tag_text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float) and float(value).is_integer():
        return str(int(value))
    return str(value)


def _series(s: Shape, values: Sequence[object]) -> str:
    pairs = list(s.static_tags)
    pairs.extend(
        (key, "" if value is None else escape_key(str(value)))
        for key, value in zip(s.facet_keys, values, strict=True)
    )
    return series(s.measurement, pairs)


def _number_or_other(
    key: str, name: str, value: object, parts: list[str], dropped: set[str]
) -> None:
    """Append `name` + the formatted value, if it gives a field (the general case).

    A value that is neither null, a number, a boolean nor a string (a list, such as uniques()
    gives) has no line-protocol form: its key goes to `dropped`.
    """
    if (formatted := format_field(value)) is not None:
        parts.append(name + formatted)
    elif value is not None and not isinstance(value, int | float):
        dropped.add(key)


@dataclass
class _Context:
    """Per-query state of one `to_lines` call: escaped names, funnel steps, dropped keys."""

    names: dict[str, str]  # row key → escaped `key=`, or "" when the key is no field
    nested_names: dict[tuple[str, str], str]
    funnels: Mapping[str, Sequence[str]]
    dropped: set[str]


def _nested(key: str, value: dict, ctx: _Context, parts: list[str]) -> None:
    """A nested object (percentiles, a Metric's `{"count": .., "type": ..}`): one field per
    entry, named `<key>.<subkey>`, at any depth; a funnel's `steps` list gives one per step."""
    for sub, sub_value in value.items():
        if isinstance(sub_value, dict):
            _nested(f"{key}.{sub}", sub_value, ctx, parts)
            continue
        if sub == "steps" and isinstance(sub_value, list):
            _funnel(key, sub_value, ctx, parts)
            continue
        name = ctx.nested_names.get((key, sub))
        if name is None:
            name = ctx.nested_names[(key, sub)] = escape_key(f"{key}.{sub}") + "="
        _number_or_other(f"{key}.{sub}", name, sub_value, parts, ctx.dropped)


def _funnel(key: str, steps: list, ctx: _Context, parts: list[str]) -> None:
    """`funnel()`: one field per step, `<key>.<step name>` (names from the NRQL, else stepN)."""
    names = ctx.funnels.get(key, ())
    for position, count in enumerate(steps, start=1):
        step = names[position - 1] if position <= len(names) else step_name(position)
        name = ctx.nested_names.get((key, f"#{position}"))
        if name is None:
            name = ctx.nested_names[(key, f"#{position}")] = escape_key(f"{key}.{step}") + "="
        _number_or_other(f"{key}.{step}", name, count, parts, ctx.dropped)


def to_lines(
    rows: Iterable[Mapping[str, object]],
    facets: Sequence[str],
    measurement: str,
    static_tags: Mapping[str, str],
    *,
    funnels: Mapping[str, Sequence[str]] | None = None,
    dropped: set[str] | None = None,
) -> list[str]:
    """One line per row that has at least one field.

    `funnels` maps a funnel's result key to its step names (`queries.funnels.funnel_steps`);
    the keys of values that give no field for want of a line-protocol form are added to
    `dropped`. The hot loop of a backfill: field names are escaped once per query, the
    measurement and tags once per facet value.
    """
    s = shape(measurement, facets, static_tags)
    ctx = _Context(
        names=dict.fromkeys(s.excluded, ""),
        nested_names={},
        funnels=funnels or {},
        dropped=dropped if dropped is not None else set(),
    )
    prefixes: dict[object, str] = {}  # facet value(s) → "measurement,tags"
    lines: list[str] = []
    single = facets[0] if len(facets) == 1 else None
    names = ctx.names  # row key → escaped `key=`, or "" when the key is no field
    funnel_keys = ctx.funnels
    for row in rows:
        # `key=value` of every field of the row. Floats and ints, nearly every value, are
        # formatted inline as `lineprotocol.format_field` formats them (no call per value: this
        # is the hot loop of a backfill; tests/test_lineprotocol.py checks they agree).
        parts: list[str] = []
        for attribute, value in row.items():
            name = names.get(attribute)
            if not name:
                if name is not None:
                    continue  # "": not a field
                name = names[attribute] = escape_key(attribute) + "="
            kind = type(value)
            if kind is float:
                if value - value == 0.0:  # finite: inf and nan give no field
                    parts.append(f"{name}{value!r}")
            elif kind is int:  # as a float: `54.0`, `1e+16` (exact below 10**15)
                if -_EXACT < value < _EXACT:
                    parts.append(f"{name}{value}.0")
                else:
                    parts.append(name + repr(float(value)))
            elif isinstance(value, dict):
                _nested(attribute, value, ctx, parts)
            elif isinstance(value, list) and attribute in funnel_keys:
                _funnel(attribute, value, ctx, parts)
            else:
                _number_or_other(attribute, name, value, parts, ctx.dropped)
        if not parts:
            continue
        # The cache key of the row's tags. repr() keeps 1, 1.0, True and "1" apart (equal keys
        # in a dict, different tag values); a string facet is its own key.
        facet = row.get("facet", _ABSENT)
        key: object = _ABSENT
        if type(facet) is str:
            if single is not None and row.get(single, facet) == facet:
                key = facet  # the common case: a string facet its attribute agrees with
        elif type(facet) is list and len(facet) == len(facets):
            key = (repr(facet),)  # several attributes: checked below, unless the row has none
            for name in facets:
                if name in row:
                    key = _ABSENT
                    break
        if key is _ABSENT:
            values = facet_values(row, facets) if facets else ()
            key = (repr(list(values)),)
        prefix = prefixes.get(key)
        if prefix is None:
            values = facet_values(row, facets) if facets else ()
            prefix = prefixes[key] = _series(s, values)
        try:
            begin = int(row["beginTimeSeconds"])  # type: ignore[call-overload]
        except (KeyError, TypeError, ValueError):
            begin = _begin(row)
        lines.append(line(prefix, parts, begin))
    return lines


def _begin(row: Mapping[str, object]) -> int:
    begin = row.get("beginTimeSeconds")
    if isinstance(begin, bool) or not isinstance(begin, int | float):
        raise NewRelicError(
            f"New Relic's answer has a row without a numeric beginTimeSeconds "
            f"(was TIMESERIES left out?): {dict(row)!r:.200}"
        )
    return int(begin)
