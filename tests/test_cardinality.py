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
