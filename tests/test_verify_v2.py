"""verify's read-back and prune through influxdb-client's sink (2.x, 3.x), on recorded HTTP.

No real InfluxDB 2.x runs here (tests/test_influx_v2.py says why): the fake records what the
sink sends — InfluxQL on the v1-compatible /query with the token, the delete API's predicate —
and answers as InfluxDB 2.x documents it. The 1.x path runs on a real influxd (test_verify.py).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import pytest

from archiver.errors import InfluxError
from archiver.sinks.base import Series
from archiver.sinks.influx_client import InfluxClientSink
from archiver.verify.compare import Point, tag_set
from tests.test_influx_v2 import ORG, TOKEN, FakeInflux2, Recorded, serving

EVIL = "x' OR \"appName\" =~ /.*/ OR 'y"
T = 1_795_935_300_000_000_000
SERIES = Series("nr_tx", {"source": "newrelic"}, frozenset({"appName", "source"}))


@dataclass
class FakeInflux2Query(FakeInflux2):
    """Also answers InfluxQL on /query: SELECTs with `series`, SHOW FIELD KEYS with `fields`."""

    series: list[dict] = field(default_factory=list)
    fields: dict[str, str] = field(default_factory=dict)

    def handle(self, request: Recorded):
        if request.path == "/query":
            self.requests.append(request)
            if request.headers.get("Authorization") != f"Token {self.token}":
                return 401, {"error": "unauthorized"}, {}
            statement = request.query["q"]
            if statement.startswith("SHOW FIELD KEYS"):
                values = [[k, v] for k, v in self.fields.items()]
                answer = [{"name": "nr_tx", "columns": ["fieldKey", "fieldType"], "values": values}]
            else:
                answer = self.series
            return 200, {"results": [{"statement_id": 0, "series": answer}]}, {}
        if request.path == "/api/v2/delete":
            self.requests.append(request)
            return 204, None, {}
        return super().handle(request)


@contextmanager
def sink_on(fake: FakeInflux2Query, flavour: str) -> Iterator[InfluxClientSink]:
    with (
        serving(fake) as running,
        InfluxClientSink(running.url, flavour=flavour, token=TOKEN, org=ORG) as sink,
    ):
        yield sink


def one_series(tags: dict, rows: list[list]) -> dict:
    return {"name": "nr_tx", "tags": tags, "columns": ["time", "count", "name"], "values": rows}


@pytest.mark.parametrize("flavour", ["2.x", "3.x"])
def test_read_points_asks_influxql_with_the_token_and_types_the_values(flavour):
    fake = FakeInflux2Query(token=TOKEN, fields={"count": "float", "name": "string"})
    fake.series = [
        one_series({"appName": "checkout", "source": "newrelic"}, [[T, 14, "a"]]),
        one_series({"appName": "checkout", "source": "newrelic", "user": "bob"}, [[T, 7, None]]),
    ]
    with sink_on(fake, flavour) as sink:
        points = sink.read_points("newrelic", "raw", SERIES, T, T + 300 * 10**9)
    (query, _) = [r for r in fake.requests if r.path == "/query"]
    statement = query.query["q"]
    source = '"newrelic"."raw"' if flavour == "2.x" else '"newrelic/raw".'
    assert statement.startswith(f'SELECT * FROM {source}."nr_tx" WHERE "source" = \'newrelic\'')
    assert f"time >= {T} AND time < {T + 300 * 10**9} GROUP BY *" in statement
    assert query.query["epoch"] == "ns"
    # the series with a tag key the query does not write is not the query's
    assert points == [
        Point("nr_tx", tag_set({"appName": "checkout", "source": "newrelic"}), T,
              {"count": 14.0, "name": "a"})
    ]  # fmt: skip
    assert type(points[0].fields["count"]) is float


def test_2x_prune_deletes_one_point_with_a_quoted_predicate_and_its_exact_time():
    fake = FakeInflux2Query(token=TOKEN)
    point = Point("nr_tx", tag_set({"appName": EVIL, "source": "newrelic"}), T, {"count": 1.0})
    with sink_on(fake, "2.x") as sink:
        result = sink.delete_points("newrelic", "raw", SERIES, [point])
    assert result.deleted == [point] and result.kept == []
    (delete,) = fake.sent("POST", "/api/v2/delete")
    assert delete.query == {"bucket": "newrelic/raw", "org": ORG}
    body = json.loads(delete.body)
    assert body["start"] == body["stop"] == "2026-11-29T06:55:00.000000000Z"
    assert body["predicate"] == (
        '_measurement="nr_tx" AND "appName"="x\' OR \\"appName\\" =~ /.*/ OR \'y" '
        'AND "source"="newrelic"'
    )


def test_2x_prune_keeps_a_point_whose_predicate_would_delete_another_series():
    """The delete API matches every series with these tags; one with more tags would go too."""
    fake = FakeInflux2Query(token=TOKEN, fields={"count": "float"})
    fake.series = [
        one_series({"appName": "a", "source": "newrelic", "user": "bob"}, [[T, 7, None]])
    ]
    point = Point("nr_tx", tag_set({"appName": "a", "source": "newrelic"}), T, {"count": 1.0})
    with sink_on(fake, "2.x") as sink:
        result = sink.delete_points("newrelic", "raw", SERIES, [point])
    assert result.deleted == []
    assert "appName=a,source=newrelic,user=bob" in result.kept[0][1]
    assert fake.sent("POST", "/api/v2/delete") == []


def test_3x_prune_is_refused():
    fake = FakeInflux2Query(token=TOKEN, version="3.0.1")
    refused = pytest.raises(InfluxError, match="InfluxDB 3 has no delete of single points")
    with sink_on(fake, "3.x") as sink, refused:
        sink.delete_points("newrelic", None, SERIES, [Point("nr_tx", (), T, {})])
