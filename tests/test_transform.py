"""Golden cases: tests/transform/cases/<name>/{response.json, query.yaml, expected.lp}."""

import json
from pathlib import Path

import pytest
import yaml

from archiver import transform

CASES = Path(__file__).parent / "transform" / "cases"


@pytest.mark.parametrize("case", sorted(p.name for p in CASES.iterdir()))
def test_golden_case(case):
    folder = CASES / case
    response = json.loads((folder / "response.json").read_text(encoding="utf-8"))
    query = yaml.safe_load((folder / "query.yaml").read_text(encoding="utf-8"))
    lines = transform.to_lines(
        response["results"], response["facets"], query["measurement"], query["tags"]
    )
    assert lines == (folder / "expected.lp").read_text(encoding="utf-8").splitlines()


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param(1, "1.0", id="int-becomes-float"),
        pytest.param(2.5, "2.5", id="float"),
        pytest.param(True, "true", id="bool-is-not-a-number"),
        pytest.param(None, None, id="null-gives-no-field"),
        pytest.param(float("nan"), None, id="nan-gives-no-field"),
        pytest.param(float("inf"), None, id="inf-gives-no-field"),
        pytest.param('a"b\\c', '"a\\"b\\\\c"', id="string-escaped"),
        pytest.param([1, 2], None, id="list-gives-no-field"),
    ],
)
def test_format_field(value, expected):
    assert transform.format_field(value) == expected


def test_a_row_without_fields_gives_no_point():
    rows = [{"beginTimeSeconds": 1, "facet": "x", "app": "x", "average.duration": None}]
    assert transform.to_lines(rows, ["app"], "m", {}) == []


def test_tags_are_sorted_by_key_across_static_and_facet_tags():
    rows = [{"beginTimeSeconds": 1, "facet": ["1", "2"], "zone": "1", "app": "2", "count": 1}]
    lines = transform.to_lines(rows, ["zone", "app"], "m", {"m_static": "s"})
    assert lines == ["m,app=2,m_static=s,zone=1 count=1.0 1"]
