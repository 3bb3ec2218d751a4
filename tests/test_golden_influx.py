"""Every golden case lands in a real InfluxDB as exactly the points its expected.lp describes.

The archiver's lines go through the real sink into one influxd shared by the cases; the points
are read back with InfluxQL and compared with expected.lp, parsed by tests/lineprotocol.py (not
by the archiver) and merged the way InfluxDB merges two points of one series at one time (the
fields of the later one win). The real-answer cases never have such a pair in expected.lp.
"""

from collections.abc import Iterable, Iterator

import pytest
import requests

from archiver.sinks.influx_v1 import InfluxV1Sink
from archiver.sinks.influxql import quote_identifier
from tests import lineprotocol
from tests.influxd import InfluxServer, unique_database_name
from tests.transform import golden


@pytest.fixture(scope="module")
def sink(influxd: InfluxServer) -> Iterator[InfluxV1Sink]:
    with InfluxV1Sink(influxd.url) as sink:
        yield sink


def stored_points(server: InfluxServer, db: str, precision: str) -> list[lineprotocol.Point]:
    response = requests.get(
        f"{server.url}/query",
        params={"q": "SELECT * FROM /.*/ GROUP BY *", "db": db, "epoch": precision},
        timeout=30,
    )
    result = response.json()["results"][0]
    assert "error" not in result, result
    points = []
    for series in result.get("series", []):
        tags = tuple(sorted((k, v) for k, v in series.get("tags", {}).items() if v))
        for values in series["values"]:
            row = dict(zip(series["columns"], values, strict=True))
            time = row.pop("time")
            fields = tuple(sorted((k, _value(v)) for k, v in row.items() if v is not None))
            points.append(lineprotocol.Point(series["name"], tags, fields, time))
    return sorted(points, key=lambda p: (p.time, p.tags, p.measurement))


def merged(points: Iterable[lineprotocol.Point]) -> list[lineprotocol.Point]:
    """Points as InfluxDB stores them: one per series and time, later fields overwriting."""
    by_key: dict[tuple, lineprotocol.Point] = {}
    for point in points:
        if (old := by_key.get(point.series_and_time)) is not None:
            fields = tuple(sorted({**dict(old.fields), **dict(point.fields)}.items()))
            point = lineprotocol.Point(point.measurement, point.tags, fields, point.time)
        by_key[point.series_and_time] = point
    return sorted(by_key.values(), key=lambda p: (p.time, p.tags, p.measurement))


def _value(value: object) -> object:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else value


@pytest.mark.parametrize("case", golden.names())
def test_golden_case_lands_in_influxdb_as_expected(case, influxd, sink):
    rendered = golden.render(case)
    expected = merged(lineprotocol.parse(line) for line in golden.expected(case))
    real = case.startswith(("nerdgraph_", "insights_"))  # the others are synthetic
    if real and len(expected) != len(golden.expected(case)):
        pytest.fail(f"{case}: expected.lp has two points InfluxDB would merge")
    db = unique_database_name()
    try:
        sink.ensure_target(db, None, None)
        if rendered.lines:
            sink.write(db, None, rendered.lines, rendered.precision)
        assert stored_points(influxd, db, rendered.precision) == expected
    finally:
        influxd.query(f"DROP DATABASE {quote_identifier(db)}")
