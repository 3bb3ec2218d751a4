"""The transform's row plans against the implementation before them, on generated rows.

`reference_to_lines` is `transform.to_lines` as it was before rows were read through a plan per
key set (commit 9cbd9b0), kept verbatim but for module prefixes: whatever the rows, both must
give the same lines, in the same order, the same dropped keys, and the same errors.
"""

from __future__ import annotations

import math
import random
import struct
from collections.abc import Iterable, Mapping, Sequence

import pytest

from archiver import lineprotocol
from archiver.errors import NewRelicError
from archiver.pipeline import transform


def reference_to_lines(
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
    s = transform.shape(measurement, facets, static_tags)
    ctx = transform._Context(
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
                name = names[attribute] = lineprotocol.escape_key(attribute) + "="
            kind = type(value)
            if kind is float:
                if value - value == 0.0:  # finite: inf and nan give no field
                    parts.append(f"{name}{value!r}")
            elif kind is int:  # as a float: `54.0`, `1e+16` (exact below 10**15)
                if -transform._EXACT < value < transform._EXACT:
                    parts.append(f"{name}{value}.0")
                else:
                    parts.append(name + repr(float(value)))
            elif isinstance(value, dict):
                transform._nested(attribute, value, ctx, parts)
            elif isinstance(value, list) and attribute in funnel_keys:
                transform._funnel(attribute, value, ctx, parts)
            else:
                transform._number_or_other(attribute, name, value, parts, ctx.dropped)
        if not parts:
            continue
        # The cache key of the row's tags. repr() keeps 1, 1.0, True and "1" apart (equal keys
        # in a dict, different tag values); a string facet is its own key.
        facet = row.get("facet", transform._ABSENT)
        key: object = transform._ABSENT
        if type(facet) is str:
            if single is not None and row.get(single, facet) == facet:
                key = facet  # the common case: a string facet its attribute agrees with
        elif type(facet) is list and len(facet) == len(facets):
            key = (repr(facet),)  # several attributes: checked below, unless the row has none
            for name in facets:
                if name in row:
                    key = transform._ABSENT
                    break
        if key is transform._ABSENT:
            values = transform.facet_values(row, facets) if facets else ()
            key = (repr(list(values)),)
        prefix = prefixes.get(key)
        if prefix is None:
            values = transform.facet_values(row, facets) if facets else ()
            prefix = prefixes[key] = transform._series(s, values)
        try:
            begin = int(row["beginTimeSeconds"])  # type: ignore[call-overload]
        except (KeyError, TypeError, ValueError):
            begin = transform._begin(row)
        lines.append(lineprotocol.line(prefix, parts, begin))
    return lines


TEXTS = ["a", "b", "x y", "a,b", "k=v", 'q"t', "back\\slash", "end\\", "new\nline", "Zürich ☃", ""]
VALUES = [
    0, 1, 7, -3, 10**15 - 1, -(10**15) + 1, 10**15, -(10**15), 10**16, 2**63, 2**64, 0.5, 1.0,
    -2.25, -0.0, 1e-7, -2.5e-05, 0.00012, 1e16, 1e22, 1.7976931348623157e308, 5e-324,
    float("nan"), float("inf"), None, True, False, "s", 'q"t\\', [1, 2], [],
    {"50": 1.5, "95": None}, {"50": 2.5e-05, "95": 7}, {"a": {"b": 2}}, {"steps": [1, 2]}, {},
]  # fmt: skip


NUMBERS = [value for value in VALUES if type(value) in (int, float) or value is None]


def _value(rng: random.Random, numeric: bool) -> object:
    """Any value; or, for rows like real aggregates, a number, a null or percentiles."""
    if not numeric or rng.random() < 0.03:
        return rng.choice(VALUES)
    if rng.random() < 0.2:
        return {"50": rng.choice(NUMBERS), "95": rng.choice(NUMBERS), "99": rng.choice(NUMBERS)}
    return rng.choice(NUMBERS)


def _row(rng: random.Random, facets: Sequence[str], fields: Sequence[str], numeric: bool) -> dict:
    row: dict[str, object] = {}
    keys = [*list(fields), "beginTimeSeconds", "endTimeSeconds"]
    rng.shuffle(keys)
    values = [rng.choice([*TEXTS[:4], 1, "1", True, None]) for _ in facets]
    for key in keys:
        if key in ("beginTimeSeconds", "endTimeSeconds"):
            row[key] = rng.choice([1700000000, 1700000060, 1700000060.0])
        elif rng.random() < 0.9:
            row[key] = _value(rng, numeric)
    kind = rng.random()
    if facets and kind < 0.7:
        row["facet"] = values[0] if len(facets) == 1 and rng.random() < 0.5 else list(values)
    if facets and (kind >= 0.4 or "facet" not in row):
        for name, value in zip(facets, values, strict=True):
            if rng.random() < 0.85:
                row[name] = value
    return row


def _outcome(function, rows: Iterable[Mapping[str, object]], facets, **kwargs):
    dropped: set[str] = set()
    try:
        lines = function(
            list(rows), facets, "m x", {"env": "p,d", "zone": "z"}, dropped=dropped, **kwargs
        )
    except NewRelicError as exc:
        return ("error", str(exc))
    return (lines, dropped)


@pytest.mark.parametrize("seed", range(300))
def test_plans_give_the_lines_the_reference_gives(seed):
    rng = random.Random(seed)
    facets = rng.choice([[], ["app"], ["app", "host"], ["app", "host", "zone"]])
    fields = rng.sample(["count", "average.duration", "p", "steps", "x\\", "x", "a b", "a.b"], 4)
    numeric = seed % 2 == 0  # rows of numbers: every field formatted in one call (_Leaves)
    rows = [_row(rng, facets, fields, numeric) for _ in range(rng.randint(1, 40))]
    funnels = {"steps": ["first", "second"]} if rng.random() < 0.3 else None
    new = _outcome(transform.to_lines, rows, facets, funnels=funnels)
    old = _outcome(reference_to_lines, rows, facets, funnels=funnels)
    assert new == old


@pytest.mark.parametrize("kept", [transform.MAX_KEPT_SERIES, 3], ids=["kept", "dropped-at-3"])
@pytest.mark.parametrize("seed", range(60))
def test_a_line_maker_gives_each_answer_the_lines_the_reference_gives(seed, kept, monkeypatch):
    """One LineMaker for a job's answers, one after another (what it keeps from one answer to
    the next never shows), also when it starts afresh past MAX_KEPT_SERIES."""
    monkeypatch.setattr(transform, "MAX_KEPT_SERIES", kept)
    rng = random.Random(seed)
    facets = rng.choice([[], ["app"], ["app", "host"], ["app", "host", "zone"]])
    fields = rng.sample(["count", "average.duration", "p", "steps", "x\\", "x", "a b", "a.b"], 4)
    numeric = seed % 2 == 0
    funnels = {"steps": ["first", "second"]} if rng.random() < 0.3 else None
    maker = transform.LineMaker("m x", {"env": "p,d", "zone": "z"}, funnels=funnels)

    def made(rows, facets, measurement, static_tags, *, dropped, funnels):
        return maker.to_lines(rows, facets, dropped=dropped)

    for _answer in range(5):
        rows = [_row(rng, facets, fields, numeric) for _ in range(rng.randint(0, 30))]
        assert _outcome(made, rows, facets, funnels=funnels) == _outcome(
            reference_to_lines, rows, facets, funnels=funnels
        )


def test_a_line_maker_keeps_at_most_max_kept_series_and_one_answers(monkeypatch):
    monkeypatch.setattr(transform, "MAX_KEPT_SERIES", 50)
    maker = transform.LineMaker("m", {})
    kept = []
    for answer in range(10):
        rows = [
            {"beginTimeSeconds": 60, "facet": f"host-{answer}-{n}", "count": 1} for n in range(20)
        ]
        assert len(maker.to_lines(rows, ["host"])) == 20
        kept.append(maker.kept_series)

    assert kept == [20, 40, 60, 20, 40, 60, 20, 40, 60, 20]


def test_rows_that_agree_as_strings_and_differ_as_types_keep_their_own_tags():
    rows = [
        {"beginTimeSeconds": 1, "facet": ["1", "a"], "app": "1", "host": "a", "count": 1},
        {"beginTimeSeconds": 2, "facet": [1, "a"], "app": 1, "host": "a", "count": 1},
        {"beginTimeSeconds": 3, "facet": [True, "a"], "app": True, "host": "a", "count": 1},
        {"beginTimeSeconds": 4, "facet": ["1", "a"], "app": "1", "host": "a", "count": 1},
    ]
    lines = transform.to_lines(rows, ["app", "host"], "m", {})
    assert lines == reference_to_lines(rows, ["app", "host"], "m", {})
    assert [line.split(" ")[0] for line in lines] == [
        "m,app=1,host=a",
        "m,app=1,host=a",
        "m,app=True,host=a",
        "m,app=1,host=a",
    ]


def test_a_disagreement_after_the_same_strings_agreed_is_still_refused():
    agree = {"beginTimeSeconds": 1, "facet": ["x", "y"], "app": "x", "host": "y", "count": 1}
    disagree = {"beginTimeSeconds": 2, "facet": ["x", "y"], "app": "x", "host": "z", "count": 1}
    with pytest.raises(NewRelicError, match="disagrees"):
        transform.to_lines([agree, disagree], ["app", "host"], "m", {})


def test_floats_formatted_together_are_written_as_repr_writes_them():
    rng = random.Random(16)
    floats = [struct.unpack("<d", rng.randbytes(8))[0] for _ in range(20_000)]
    floats += [rng.random() * 10.0 ** rng.randint(-300, 300) for _ in range(20_000)]
    floats = [x for x in floats if math.isfinite(x)]
    rows = [
        {"beginTimeSeconds": 1, "a": a, "b": b, "c": c}
        for a, b, c in zip(floats[::3], floats[1::3], floats[2::3], strict=False)
    ]
    lines = transform.to_lines(rows, [], "m", {})
    assert lines == reference_to_lines(rows, [], "m", {})
    assert len(lines) == len(rows)
