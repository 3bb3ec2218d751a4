"""The transform: golden cases (tests/transform/cases) and the rules one by one."""

import pytest

from archiver.errors import NewRelicError
from archiver.pipeline import transform
from tests.transform import golden


@pytest.mark.parametrize("case", golden.names())
def test_golden_case(case):
    rendered = golden.render(case)
    assert rendered.lines == golden.expected(case)
    assert rendered.dropped == set(rendered.query.get("dropped", []))


def test_a_row_without_fields_gives_no_point():
    rows = [{"beginTimeSeconds": 1, "facet": "x", "app": "x", "average.duration": None}]
    assert transform.to_lines(rows, ["app"], "m", {}) == []


def test_tags_are_sorted_by_key_across_static_and_facet_tags():
    rows = [{"beginTimeSeconds": 1, "facet": ["1", "2"], "zone": "1", "app": "2", "count": 1}]
    lines = transform.to_lines(rows, ["zone", "app"], "m", {"m_static": "s"})
    assert lines == ["m,app=2,m_static=s,zone=1 count=1.0 1"]


# -- real answers: rows without `facet`, funnels, nested objects, dropped keys ----------------

GO_CLIENT_ROWS = [  # newrelic-client-go pkg/nrdb/nrdb_customized_unit_test.go: no `facet` key
    {"appName": "App1", "beginTimeSeconds": 1748910826, "count": 100, "endTimeSeconds": 1748914426},
    {"appName": "App2", "beginTimeSeconds": 1748910826, "count": 50, "endTimeSeconds": 1748914426},
]


def test_rows_without_facet_key_take_the_tag_from_the_attribute():
    lines = transform.to_lines(GO_CLIENT_ROWS, ["appName"], "m", {})
    assert lines == [
        "m,appName=App1 count=100.0 1748910826",
        "m,appName=App2 count=50.0 1748910826",
    ]


def test_rows_without_facet_key_on_several_attributes():
    rows = [{"beginTimeSeconds": 1, "zone": "b", "app": "a", "count": 1}]
    assert transform.to_lines(rows, ["app", "zone"], "m", {}) == ["m,app=a,zone=b count=1.0 1"]


@pytest.mark.parametrize(
    ("facet", "attribute"),
    [
        pytest.param("419", 419, id="string-facet-number-attribute"),
        pytest.param("true", True, id="string-facet-boolean-attribute"),
        pytest.param("", "", id="empty"),
        pytest.param(None, None, id="null"),
    ],
)
def test_facet_and_attribute_that_agree_as_tag_values(facet, attribute):
    rows = [{"beginTimeSeconds": 1, "facet": facet, "code": attribute, "count": 1}]
    assert len(transform.to_lines(rows, ["code"], "m", {})) == 1


def test_facet_and_attribute_that_disagree_are_refused():
    rows = [{"beginTimeSeconds": 1, "facet": "App1", "appName": "App2", "count": 1}]
    with pytest.raises(NewRelicError, match=r"facet 'App1' disagrees with its attribute appName"):
        transform.to_lines(rows, ["appName"], "m", {})


def test_a_facet_list_of_the_wrong_length_is_refused():
    rows = [{"beginTimeSeconds": 1, "facet": ["a", "b", "c"], "count": 1}]
    with pytest.raises(NewRelicError, match=r"2 attribute\(s\) \['app', 'zone'\]"):
        transform.to_lines(rows, ["app", "zone"], "m", {})


def test_a_row_without_begin_time_is_a_clear_error():
    with pytest.raises(NewRelicError, match="without a numeric beginTimeSeconds"):
        transform.to_lines([{"count": 1}], [], "m", {})


def test_funnel_steps_get_one_field_each_named_from_the_nrql():
    rows = [{"beginTimeSeconds": 1, "funnel.session": {"steps": [112, 94, 8]}}]
    steps = {"funnel.session": ("Enter Checkout", "Payment", "Orders")}
    lines = transform.to_lines(rows, [], "m", {}, funnels=steps)
    assert lines == [
        r"m funnel.session.Enter\ Checkout=112.0,funnel.session.Orders=8.0,"
        r"funnel.session.Payment=94.0 1"
    ]


def test_funnel_steps_without_names_are_step1_to_n():
    rows = [{"beginTimeSeconds": 1, "funnel.session": {"steps": [3, 2]}}]
    assert transform.to_lines(rows, [], "m", {}) == [
        "m funnel.session.step1=3.0,funnel.session.step2=2.0 1"
    ]


def test_a_funnel_sent_as_a_bare_list_is_read_as_steps():
    rows = [{"beginTimeSeconds": 1, "f": [3, 2]}]
    lines = transform.to_lines(rows, [], "m", {}, funnels={"f": ("a", "b")})
    assert lines == ["m f.a=3.0,f.b=2.0 1"]


def test_nested_objects_are_flattened_at_any_depth():
    rows = [{"beginTimeSeconds": 1, "x": {"a": {"b": 1, "c": "s"}}}]
    assert transform.to_lines(rows, [], "m", {}) == ['m x.a.b=1.0,x.a.c="s" 1']


def test_keys_without_line_protocol_form_are_reported_as_dropped():
    rows = [
        {"beginTimeSeconds": 1, "uniques.user": ["a", "b"], "count": 2, "h": {"x": [1]}},
        {"beginTimeSeconds": 2, "average.duration": None, "count": float("nan")},
    ]
    dropped: set[str] = set()
    lines = transform.to_lines(rows, [], "m", {}, dropped=dropped)
    assert lines == ["m count=2.0 1"]
    assert dropped == {"uniques.user", "h.x"}  # nulls and NaN are no data, not dropped keys
