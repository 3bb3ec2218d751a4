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
backfill (millions of times), so everything that depends only on the query, only on a row's
set of keys (a `_Plan`: which keys are fields, their escaped names and line order), or only on
the facet value, is prepared once. Measured on the bench's answers (one core): 4.3 → 2.0 µs a
row on two escaped facets with two aggregates, 10.2 → 6.8 on three facets with percentiles
(tests/test_transform_plans.py checks the plans against the row-by-row implementation).
Escaping and the order of tags and fields are `archiver.lineprotocol`'s, as for every producer
of lines.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from operator import add, itemgetter

import orjson

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
        _number_or_other(f"{key}.{sub}", _nested_name(ctx, key, sub), sub_value, parts, ctx.dropped)


def _nested_name(ctx: _Context, key: str, sub: str) -> str:
    """The escaped `name=` of a nested object's entry: `<key>.<sub>`."""
    name = ctx.nested_names.get((key, sub))
    if name is None:
        name = ctx.nested_names[(key, sub)] = escape_key(f"{key}.{sub}") + "="
    return name


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
    """One line per row that has at least one field (`LineMaker.to_lines`, for one answer).

    `funnels` maps a funnel's result key to its step names (`queries.funnels.funnel_steps`);
    the keys of values that give no field for want of a line-protocol form are added to
    `dropped`.
    """
    return LineMaker(measurement, static_tags, funnels=funnels).to_lines(
        rows, facets, dropped=dropped
    )


# Series whose "measurement,tags" text a LineMaker keeps for the answers after: a job's series
# (max_series in the query file) up to this many, about 150 bytes each.
MAX_KEPT_SERIES = 100_000


class LineMaker:
    """`to_lines` for the answers of one query and target, one after another (a job's).

    The hot loop of a backfill: what depends only on a row's set of keys (which of them are
    fields, their escaped names, their order in the line) is a `_Plan` worked out once per key
    set, and the measurement and tags once per facet value: once for all the job's answers,
    not once an answer. A query of 5,000 facets asked 4 buckets at a time (bench row d) meets
    each facet value 4 times an answer: 2.9 → 1.6 µs a row with its series kept from answer
    to answer. Not thread-safe: one answer at a time (`client.parsing` sees to it).
    """

    def __init__(
        self,
        measurement: str,
        static_tags: Mapping[str, str],
        *,
        funnels: Mapping[str, Sequence[str]] | None = None,
    ) -> None:
        self._measurement = measurement
        self._static_tags = dict(static_tags)
        self._funnels = funnels or {}
        self._by_facets: dict[tuple[str, ...], _Kept] = {}

    @property
    def kept_series(self) -> int:
        """How many series' texts are kept for the answers to come (at most MAX_KEPT_SERIES
        and one answer's)."""
        return sum(len(kept.prefixes) for kept in self._by_facets.values())

    def _kept(self, facets: Sequence[str]) -> _Kept:
        key = tuple(facets)
        kept = self._by_facets.get(key)
        if kept is None or len(kept.prefixes) > MAX_KEPT_SERIES:
            s = shape(self._measurement, facets, self._static_tags)
            ctx = _Context(
                names=dict.fromkeys(s.excluded, ""),
                nested_names={},
                funnels=self._funnels,
                dropped=set(),
            )
            kept = self._by_facets[key] = _Kept(s, ctx)
        return kept

    def to_lines(
        self,
        rows: Iterable[Mapping[str, object]],
        facets: Sequence[str],
        *,
        dropped: set[str] | None = None,
    ) -> list[str]:
        """One line per row of one answer that has at least one field; the keys of values
        that give no field for want of a line-protocol form are added to `dropped`."""
        kept = self._kept(facets)
        s, ctx, plans, prefixes = kept.shape, kept.ctx, kept.plans, kept.prefixes
        ctx.dropped = dropped if dropped is not None else set()
        constant = None if facets else _series(s, ())  # the prefix of every line without FACET
        lines: list[str] = []
        append = lines.append
        funnel_keys, dropped_keys = ctx.funnels, ctx.dropped
        plan: _Plan | None = None
        # The plan's parts, in locals while rows keep the same keys (most answers: all rows).
        size, fields, ordered, known = 0, (), True, {}
        values_of = tag_key = begin_at = leaves = None
        for row in rows:
            # The plan of the last row fits when the row has as many keys and all of the plan's:
            # then it has the same keys (one C call fetches them all).
            if plan is not None and len(row) == size:
                try:
                    values = values_of(row)  # type: ignore[misc]
                except KeyError:
                    plan = None
            else:
                plan = None
            if plan is None:
                keys = tuple(row)
                plan = plans.get(keys)
                if plan is None:
                    plan = plans[keys] = _Plan.of(keys, facets, ctx)
                size, values_of, fields, ordered = plan.size, plan.values, plan.fields, plan.ordered
                tag_key, known, begin_at, leaves = plan.tag_key, plan.known, plan.begin, plan.leaves
                values = values_of(row)
            # `key=value` of every field of the row, in the line's order: all at once when they are
            # numbers (`_Leaves`), else one by one (`_fields`).
            if leaves is None:
                leaves = plan.leaves = _Leaves.of(plan, values, ctx) or False
            parts = leaves.parts(values) if leaves else None
            resort = False
            if parts is None:  # one by one; floats and ints inline as `format_field` formats them
                parts = []  # (tests/test_lineprotocol.py checks they agree)
                resort = not ordered
                for index, attribute, name in fields:
                    value = values[index]
                    kind = type(value)
                    if kind is float:
                        if value - value == 0.0:  # finite: inf and nan give no field
                            parts.append(name + repr(value))
                    elif kind is int:  # as a float: `54.0`, `1e+16` (exact below 10**15)
                        if -_EXACT < value < _EXACT:
                            parts.append(f"{name}{value}.0")
                        else:
                            parts.append(name + repr(float(value)))
                    elif isinstance(value, dict):
                        _nested(attribute, value, ctx, parts)
                        resort = True
                    elif isinstance(value, list) and attribute in funnel_keys:
                        _funnel(attribute, value, ctx, parts)
                        resort = True
                    else:
                        _number_or_other(attribute, name, value, parts, dropped_keys)
            if not parts:
                continue
            if constant is not None:
                prefix = constant
            else:
                # Rows whose facet values (and attributes) are strings seen before: their prefix
                # by those strings (a str only equals a str, so 1, 1.0, True and "1" never meet).
                key = tag_key(values)  # type: ignore[misc]
                try:
                    prefix = known.get(key)
                except TypeError:  # an unhashable facet value (a list in the list)
                    prefix = key = None
                if prefix is None:
                    values_of_row = facet_values(row, facets)  # checks facet against attributes
                    text = repr(list(values_of_row))  # keeps 1, 1.0, True and "1" apart
                    prefix = prefixes.get(text)
                    if prefix is None:
                        prefix = prefixes[text] = _series(s, values_of_row)
                    if key is not None and all(type(v) is str for v in key):
                        known[key] = prefix
            if begin_at is not None:
                begin = values[begin_at]
                if type(begin) is not int:
                    try:
                        begin = int(begin)  # type: ignore[call-overload]
                    except (TypeError, ValueError):
                        begin = _begin(row)
            else:
                begin = _begin(row)
            if resort:
                append(line(prefix, parts, begin))
            else:  # `line` without its sort: the plan's order is the sorted order
                append(f"{prefix} {','.join(parts)} {begin}")
        return lines


@dataclass
class _Kept:
    """What a LineMaker keeps from answer to answer for one list of FACET attributes."""

    shape: Shape
    ctx: _Context
    plans: dict[tuple[str, ...], _Plan] = field(default_factory=dict)
    prefixes: dict[str, str] = field(default_factory=dict)  # repr() of facet values → prefix


# The texts orjson writes otherwise than repr(): small floats (`2.5e-05` is `0.000025`, `1e-07`
# is `1e-7`), found by `e-` or these starts. Checked on 1.2 million floats of every magnitude
# and random bit patterns; tests/test_transform_plans.py checks a sample on every run.
_SMALL = ("0.0000", "-0.0000")
_dumps = orjson.dumps
BULK_MIN_FIELDS = 3


@dataclass(frozen=True)
class _Leaves:
    """A row's fields as one flat tuple of values in line order, for one `orjson.dumps` call.

    repr() of a float costs ~0.3 µs; orjson writes the same shortest digits ~6 times faster,
    so the fields of a row of several numbers (many aggregates, percentiles) are formatted in
    one call: 10.0 → 5.8 µs a row on three facets with percentiles (bench row c, one core,
    whole transform). Worked out from the first row of a plan: its nested objects
    (percentiles) must keep their keys; a row that does not fit, or holds anything but
    numbers, booleans and nulls, is formatted value by value.
    """

    names: tuple[str, ...]  # escaped `name=` of each leaf, in line order
    top: Callable[[tuple[object, ...]], tuple[object, ...]]  # the plain fields' values
    nested: tuple[tuple[int, int, Callable[[dict], tuple[object, ...]]], ...]  # index, size, get
    order: Callable[[tuple[object, ...]], tuple[object, ...]]  # leaves → line order

    @classmethod
    def of(cls, plan: _Plan, values: tuple[object, ...], ctx: _Context) -> _Leaves | None:
        plain, plain_names, nested, nested_names = [], [], [], []
        for index, key, name in plan.fields:
            value = values[index]
            if type(value) is dict:
                subkeys = tuple(value)
                if not subkeys or key in ctx.funnels:
                    return None
                nested.append((index, len(subkeys), _dict_getter(subkeys)))
                nested_names.extend(_nested_name(ctx, key, str(sub)) for sub in subkeys)
            elif key in ctx.funnels:
                return None
            else:
                plain.append(index)
                plain_names.append(name)
        names = plain_names + nested_names
        if len(names) < BULK_MIN_FIELDS or len(set(names)) != len(names):
            return None
        order = sorted(range(len(names)), key=names.__getitem__)
        return cls(
            names=tuple(names[i] for i in order),
            top=_getter_of_tuple(plain),
            nested=tuple(nested),
            order=_getter_of_tuple(order),
        )

    def parts(self, values: tuple[object, ...]) -> list[str] | None:
        """`key=value` of every field, in line order; None when the row does not fit."""
        leaves = self.top(values)
        try:
            for index, size, get in self.nested:
                value = values[index]
                if type(value) is not dict or len(value) != size:
                    return None
                leaves += get(value)
            text = _dumps(self.order(leaves))
        except (KeyError, TypeError):  # other nested keys; an int beyond 64 bits
            return None
        if b'"' in text or b"{" in text or text.count(b"[") != 1:
            return None  # not only numbers, booleans and nulls
        body = text[1:-1]
        texts = [  # ints as floats; the rest as orjson wrote them
            i if "." in i or "e" in i or i == "null" else i + ".0" if len(i) < 16 else _float(i)
            for i in body.decode().split(",")
        ]
        if b"e-" in body or b"0.0000" in body:  # small floats: as repr() writes them
            texts = [repr(float(t)) if "e-" in t or t.startswith(_SMALL) else t for t in texts]
        if b"null" in body:  # None, NaN and infinities give no field
            return [name + t for name, t in zip(self.names, texts, strict=True) if t != "null"]
        return list(map(add, self.names, texts))


def _float(item: str) -> str:
    """An int item of 16 characters or more, as `format_field` writes it (exact below 10**15)."""
    if len(item) == 16 and item[0] == "-":
        return item + ".0"
    return repr(float(int(item)))


def _dict_getter(keys: tuple[str, ...]) -> Callable[[dict], tuple[object, ...]]:
    if len(keys) >= 2:
        return itemgetter(*keys)
    [only] = keys
    return lambda value: (value[only],)


@dataclass(eq=False)
class _Plan:
    """How to read the rows that have one set of keys, worked out once per key set.

    `fields` are in the order `lineprotocol.line` sorts `key=value` texts into: escaped names
    never contain an unescaped `=` nor end in a backslash, so two texts of different names
    compare as their `name=` prefixes do, whatever the values. When two keys escape to the same
    name (`x` and `x\\`), the line is sorted as a whole instead (`ordered` is False).
    """

    size: int
    values: Callable[[Mapping[str, object]], tuple[object, ...]]  # every value, in key order
    begin: int | None  # the index of beginTimeSeconds
    fields: tuple[tuple[int, str, str], ...]  # (index, key, escaped `name=`), in line order
    ordered: bool
    tag_key: Callable[[tuple[object, ...]], tuple[object, ...]]  # facet + attribute values
    known: dict[tuple[object, ...], str] = field(default_factory=dict)  # → "measurement,tags"
    leaves: _Leaves | bool | None = None  # None: not worked out yet; False: none

    @classmethod
    def of(cls, keys: tuple[str, ...], facets: Sequence[str], ctx: _Context) -> _Plan:
        names = ctx.names
        fields = []
        for index, key in enumerate(keys):
            name = names.get(key)
            if name is None:
                name = names[key] = escape_key(key) + "="
            if name:  # "": not a field
                fields.append((index, key, name))
        fields.sort(key=itemgetter(2))
        position = {key: index for index, key in enumerate(keys)}
        # the row's `facet` (if it has one), then its FACET attributes, by index in `values`
        tagged = [position[k] for k in ("facet", *facets) if k in position]
        return cls(
            size=len(keys),
            values=_getter(keys),
            begin=position.get("beginTimeSeconds"),
            fields=tuple(fields),
            ordered=len({name for _, _, name in fields}) == len(fields),
            tag_key=_tag_key(tagged, has_facet="facet" in position, spread=len(facets) > 1),
        )


def _getter(keys: tuple[str, ...]) -> Callable[[Mapping[str, object]], tuple[object, ...]]:
    """A function giving a row's values of `keys` as a tuple (KeyError when one is missing)."""
    if len(keys) >= 2:
        return itemgetter(*keys)
    return lambda row: tuple(row[key] for key in keys)


def _tag_key(
    indexes: list[int], *, has_facet: bool, spread: bool
) -> Callable[[tuple[object, ...]], tuple[object, ...]]:
    """The values that decide a row's tags: its `facet` (spread when a list) and attributes."""
    if not has_facet:
        return _getter_of_tuple(indexes)
    if not spread:  # one FACET attribute: `facet` is a value (a list is unhashable: no key)
        return _getter_of_tuple(indexes)
    facet, rest = indexes[0], _getter_of_tuple(indexes[1:])

    def key(values: tuple[object, ...]) -> tuple[object, ...]:
        value = values[facet]
        if type(value) is list:
            return (*value, *rest(values))
        return (value, *rest(values))

    return key


def _getter_of_tuple(indexes: list[int]) -> Callable[[tuple[object, ...]], tuple[object, ...]]:
    if len(indexes) >= 2:
        return itemgetter(*indexes)
    if len(indexes) == 1:
        [only] = indexes
        return lambda values: (values[only],)
    return lambda values: ()


def _begin(row: Mapping[str, object]) -> int:
    begin = row.get("beginTimeSeconds")
    if isinstance(begin, bool) or not isinstance(begin, int | float):
        raise NewRelicError(
            f"New Relic's answer has a row without a numeric beginTimeSeconds "
            f"(was TIMESERIES left out?): {dict(row)!r:.200}"
        )
    return int(begin)
