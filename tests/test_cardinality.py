"""The series guard sees the facet values of rows with or without a `facet` key."""

import pytest

from archiver.pipeline.cardinality import CardinalityError, SeriesGuard

UUID = "3f2b8c1e-9a4d-4e7b-8c2a-1b2c3d4e5f60"


@pytest.mark.parametrize(
    "row",
    [
        pytest.param({"facet": UUID, "requestId": UUID, "count": 1}, id="facet-key"),
        pytest.param({"requestId": UUID, "count": 1}, id="attribute-only"),
    ],
)
def test_id_like_facet_values_are_refused(row):
    with pytest.raises(CardinalityError, match="facet 'requestId' has id-like values"):
        SeriesGuard(["requestId"], 100).check([row], ["requestId"])


def test_max_series_counts_rows_without_facet_key():
    rows = [{"appName": f"app {i}", "count": 1} for i in range(3)]
    with pytest.raises(CardinalityError, match="3 series exceed max_series 2"):
        SeriesGuard(["appName"], 2).check(rows, ["appName"])


def test_several_attributes_without_facet_key():
    rows = [{"zone": "a", "requestId": UUID, "count": 1}]
    with pytest.raises(CardinalityError, match="'requestId'"):
        SeriesGuard(["zone", "requestId"], 100).check(rows, ["zone", "requestId"])


def test_the_distinct_facets_of_an_answer_are_checked_as_its_rows_are():
    rows = [{"facet": ["a", "x"], "count": 1}, {"facet": ["b", "x"]}, {"facet": ["a", "x"]}]
    guard = SeriesGuard(["appName", "host"], 2)
    guard.check(rows, ["appName", "host"])
    assert guard.seen == {("a", "x"), ("b", "x")}
    ones = SeriesGuard(["code"], 1)
    ones.check_facets([1, 1.0, True], ["code"])  # one series in InfluxDB: code=1
    assert len(ones.seen) == 1
    with pytest.raises(CardinalityError, match="3 series exceed max_series 2"):
        SeriesGuard(["code"], 2).check_facets(["1", 1, 2.0], ["code"])
    with pytest.raises(CardinalityError, match="facet 'requestId' has id-like values"):
        SeriesGuard(["zone", "requestId"], 100).check_facets([("a", UUID)], [])


def test_raw_events_with_a_list_as_a_tag_value_are_counted_not_refused():
    # events.to_lines tags such a value with its text; the guard counted it with a TypeError
    guard = SeriesGuard(["host", "labels"], max_series=2)
    rows = [
        {"host": "a", "labels": ["x", "y"], "timestamp": 1},
        {"host": "a", "labels": ["x", "y"], "timestamp": 2},
        {"host": "a", "labels": {"k": "v"}, "timestamp": 3},
    ]
    guard.check_events(rows)
    assert len(guard.seen) == 2
    with pytest.raises(CardinalityError, match="exceed max_series 2"):
        guard.check_events([{"host": "b", "labels": ["z"], "timestamp": 4}])


def test_raw_events_are_counted_alike_whether_every_row_has_every_tag_or_not():
    complete = [{"host": f"h{i % 3}", "app": "a", "timestamp": i} for i in range(30)]
    partial = [*complete, {"app": "a", "timestamp": 99}]  # no host: counted as a series too
    fast, slow = SeriesGuard(["host", "app"], 10), SeriesGuard(["host", "app"], 10)
    fast.check_events(complete)
    slow.check_events(partial)
    assert fast.seen == {("h0", "a"), ("h1", "a"), ("h2", "a")}
    assert slow.seen == fast.seen | {(None, "a")}
    with pytest.raises(CardinalityError, match="id-like"):
        fast.check_events([{"host": "3f2b9c1e-7a4d-4b8e-9c2f-1a2b3c4d5e6f", "app": "a"}])
