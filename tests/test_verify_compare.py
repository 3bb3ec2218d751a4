"""The verify comparison: line protocol read as InfluxDB reads it, points compared exactly."""

from __future__ import annotations

import pytest

from archiver.pipeline import transform
from archiver.verify.compare import LineError, Point, compare, parse_line, tag_set

S = 1_000_000_000


def point(tags: dict, time_s: int, **fields) -> Point:
    return Point("m", tag_set(tags), time_s * S, fields)


@pytest.mark.parametrize(
    ("line", "measurement", "tags", "fields"),
    [
        pytest.param("m f=1.5 10", "m", {}, {"f": 1.5}, id="float"),
        pytest.param("m f=14 10", "m", {}, {"f": 14.0}, id="integral-float"),
        pytest.param("m f=14i,u=3u 10", "m", {}, {"f": 14, "u": 3}, id="integers"),
        pytest.param("m ok=true,no=F 10", "m", {}, {"ok": True, "no": False}, id="booleans"),
        pytest.param(
            r'm s="a \"q\" \\ b, c=d" 10', "m", {}, {"s": 'a "q" \\ b, c=d'}, id="string-escapes"
        ),
        pytest.param(
            r"nr\ errors\,\ by\ app,app=a\ b\,c\=d f=1 10",
            "nr errors, by app",
            {"app": "a b,c=d"},
            {"f": 1.0},
            id="escaped-delimiters",
        ),
        pytest.param(
            r"m,app=C:\tmp,x=a\\,b f=1 10",
            "m",
            {"app": r"C:\tmp", "x": "a\\,b"},
            {"f": 1.0},
            id="backslashes-kept-as-influxdb-keeps-them",
        ),
        pytest.param(
            r"m percentile.duration.95=1.5,a\ b=2 10",
            "m",
            {},
            {"percentile.duration.95": 1.5, "a b": 2.0},
            id="field-keys",
        ),
    ],
)
def test_parse_line_reads_what_influxdb_stores(line, measurement, tags, fields):
    parsed = parse_line(line)
    assert parsed.measurement == measurement
    assert dict(parsed.tags) == tags
    assert parsed.time_ns == 10 * S
    assert {k: (type(v), v) for k, v in parsed.fields.items()} == {
        k: (type(v), v) for k, v in fields.items()
    }


def test_parse_line_reads_every_facet_value_the_transform_writes_back_to_the_value():
    values = ["Call Center API", "billing,eu", "a=b", 'say "hi"', "Zürich ☃ 東京", r"a\,b", "x y"]
    rows = [{"beginTimeSeconds": 60, "facet": v, "count": 1, "s": v} for v in values]
    lines = transform.to_lines(rows, ["app"], "nr m", {"source": "n r"})
    parsed = [parse_line(line) for line in lines]
    assert [dict(p.tags)["app"] for p in parsed] == values
    assert [p.fields["s"] for p in parsed] == values
    assert {p.measurement for p in parsed} == {"nr m"}
    assert {dict(p.tags)["source"] for p in parsed} == {"n r"}


def test_parse_line_knows_the_precision():
    assert parse_line("m f=1 1700000000123456789", "ns").time_ns == 1700000000123456789
    assert parse_line("m f=1 1700000000", "s").time_ns == 1700000000 * S


@pytest.mark.parametrize("line", ["m 10", "m f=1", "m f=nope 10", "m,t f=1 10"])
def test_parse_line_rejects_what_is_not_line_protocol(line):
    with pytest.raises(LineError):
        parse_line(line)


def test_compare_finds_missing_different_and_extra():
    expected = [
        point({"app": "a"}, 60, count=1.0),
        point({"app": "a"}, 120, count=2.0),
        point({"app": "b"}, 60, count=3.0, avg=0.5),
    ]
    actual = [
        point({"app": "a"}, 60, count=1.0),  # same
        point({"app": "b"}, 60, count=3.0),  # a field missing
        point({"app": "c"}, 60, count=9.0),  # a series New Relic does not have
        point({"app": "a"}, 180, count=4.0),  # a time New Relic does not have
    ]
    result = compare(expected, actual)
    assert result.checked == 5
    assert [(d.kind, dict(d.point.tags), d.point.time_ns // S) for d in result.differences] == [
        ("different", {"app": "b"}, 60),
        ("extra", {"app": "c"}, 60),
        ("missing", {"app": "a"}, 120),
        ("extra", {"app": "a"}, 180),
    ]


@pytest.mark.parametrize(
    ("influx", "same"),
    [
        pytest.param(1.5, True, id="same-float"),
        pytest.param(1.5000000000000002, False, id="one-ulp-off"),
        pytest.param(2, False, id="integer-is-not-float"),
        pytest.param("1.5", False, id="string-is-not-float"),
    ],
)
def test_floats_compare_exactly_and_types_matter(influx, same):
    result = compare([point({}, 60, f=1.5)], [point({}, 60, f=influx)])
    assert result.clean is same


def test_extra_fields_in_influxdb_are_a_difference_rewriting_cannot_fix():
    result = compare([point({}, 60, f=1.0)], [point({}, 60, f=1.0, grafana=2.0)])
    (difference,) = result.differences
    assert difference.kind == "different"
    assert difference.fields_only_in_influxdb


def test_equal_sets_are_clean():
    points = [point({"app": "a"}, t, count=float(t)) for t in (60, 120)]
    result = compare(points, list(reversed(points)))
    assert result.clean and result.checked == 2
