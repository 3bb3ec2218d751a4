"""Query files: loading, rules across keys, problems (queries/load.py, schema.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from archiver.errors import ConfigError
from archiver.queries import (
    QueryDef,
    QueryFileProblem,
    Target,
    load_dir,
    select,
)
from archiver.queries.load import load_files
from tests.queryfiles import NOW, VALID, load, only_query, problem_lines, without, write

REPO = Path(__file__).resolve().parent.parent


# -- the example files ----------------------------------------------------------------------------


def test_every_example_query_file_loads_without_a_problem() -> None:
    result = load_dir(REPO / "queries", now=NOW)
    assert [str(problem) for problem in result.problems] == []
    assert len(result.queries) >= 5
    assert {q.name for q in result.queries} >= {
        "transaction_duration",
        "error_rate",
        "logins",
        "replication_lag",
        "throughput",
    }


def test_example_queries_are_answerable_by_the_fake_new_relic() -> None:
    fake_nrql = pytest.importorskip("fakes.nrql")
    since, until = datetime(2026, 11, 19, tzinfo=UTC), datetime(2026, 11, 19, 6, tzinfo=UTC)
    for query in load_dir(REPO / "queries", now=NOW).queries:
        for target in query.targets:
            parsed = fake_nrql.parse(query.nrql_for(since, until, target.interval))
            assert parsed.facets == query.facets
            assert parsed.step_seconds == target.interval.total_seconds()


def test_the_error_rate_example_feeds_two_retention_policies() -> None:
    [query] = load_files([REPO / "queries" / "error_rate.yaml"], now=NOW).queries
    assert query.targets == (
        Target(
            database="newrelic",
            retention_policy="raw_30d",
            interval=timedelta(minutes=5),
            retention_duration="30d",
        ),
        Target(
            database="newrelic",
            retention_policy="two_years",
            interval=timedelta(hours=1),
            retention_duration="104w",
        ),
    )


# -- defaults and resolution ----------------------------------------------------------------------


def test_defaults(tmp_path: Path) -> None:
    query = only_query(tmp_path)
    assert query.name == "q"
    assert query.path == tmp_path / "q.yaml"
    assert query.lag == timedelta(minutes=5)
    assert query.lookback == timedelta(0)
    assert query.nr_retention == timedelta(days=8)
    assert query.max_series == 10_000
    assert (query.start, query.account_id, query.description) == (None, None, None)
    assert query.tags == {}
    assert query.facets == ("appName", "host")
    assert query.has_limit is False


def test_every_key_is_read(tmp_path: Path) -> None:
    query = only_query(
        tmp_path,
        name="custom.name-1",
        description="what it is",
        lag="2m",
        lookback="30 minutes",
        start="2026-11-19T00:00:00Z",
        account_id=1234567,
        tags={"source": "newrelic", "tier": 1, "canary": True},
        nr_retention="30 days",
        max_series=50,
    )
    assert query.name == "custom.name-1"
    assert query.description == "what it is"
    assert query.lag == timedelta(minutes=2)
    assert query.lookback == timedelta(minutes=30)
    assert query.start == datetime(2026, 11, 19, tzinfo=UTC)
    assert query.account_id == 1234567
    assert query.tags == {"source": "newrelic", "tier": "1", "canary": "true"}
    assert query.nr_retention == timedelta(days=30)
    assert query.max_series == 50


def test_start_from_a_yaml_timestamp_and_from_an_age(tmp_path: Path) -> None:
    write(tmp_path, "start: 2026-11-19 02:00:00+02:00\n" + yaml.safe_dump(VALID), "a.yaml")
    write(tmp_path, {**VALID, "start": "36h"}, "b.yaml")
    write(tmp_path, {**VALID, "start": "2030-01-01"}, "future.yaml")
    result = load_dir(tmp_path, now=NOW)
    assert result.problems == []
    starts = {query.name: query.start for query in result.queries}
    assert starts == {
        "a": datetime(2026, 11, 19, tzinfo=UTC),
        "b": NOW - timedelta(hours=36),
        "future": datetime(2030, 1, 1, tzinfo=UTC),
    }


def test_top_level_keys_form_the_single_target(tmp_path: Path) -> None:
    query = only_query(tmp_path, retention_duration="30 days")
    assert query.targets == (
        Target(
            database="newrelic",
            retention_policy="raw_30d",
            interval=timedelta(minutes=1),
            retention_duration="30d",
        ),
    )
    assert query.targets[0].key == "newrelic.raw_30d"


def test_no_retention_policy_means_the_default_one(tmp_path: Path) -> None:
    [target] = only_query(tmp_path, retention_policy=None).targets
    assert target.retention_policy is None
    assert target.key == "newrelic"


def test_targets_take_the_top_level_values_as_defaults(tmp_path: Path) -> None:
    query = only_query(
        tmp_path,
        retention_duration="30d",
        targets=[
            {},
            {"retention_policy": "two_years", "interval": "1h", "retention_duration": "104w"},
            {"retention_policy": None, "interval": "5m"},
            {"database": "other", "retention_policy": "raw_30d"},
        ],
    )
    assert [(t.key, t.interval, t.retention_duration) for t in query.targets] == [
        ("newrelic.raw_30d", timedelta(minutes=1), "30d"),
        ("newrelic.two_years", timedelta(hours=1), "104w"),
        ("newrelic", timedelta(minutes=5), None),
        ("other.raw_30d", timedelta(minutes=1), None),  # another database's policy
    ]


def test_targets_can_give_what_the_top_level_leaves_out(tmp_path: Path) -> None:
    query = only_query(
        tmp_path,
        database=None,
        interval=None,
        targets=[{"database": "a", "interval": "1m"}, {"database": "b", "interval": "1h"}],
    )
    assert [target.key for target in query.targets] == ["a.raw_30d", "b.raw_30d"]


# -- problems: each names the file and the key ---------------------------------------------------


def test_yaml_syntax_error_gives_the_line(tmp_path: Path) -> None:
    text = "nrql: SELECT count(*) FROM T\nmeasurement: [oops\ninterval: 1m\n"
    assert "q.yaml: invalid YAML at line 3" in problem_lines(tmp_path, text)


def test_a_key_given_twice_is_an_error(tmp_path: Path) -> None:
    text = yaml.safe_dump(VALID) + "interval: 5m\n"
    lines = problem_lines(tmp_path, text)
    assert "q.yaml: key 'interval': invalid YAML at line" in lines
    assert "the key 'interval' is given twice" in lines


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param("", "q.yaml: the file is empty", id="empty"),
        pytest.param("# only a comment\n", "q.yaml: the file is empty", id="comment only"),
        pytest.param("- nrql: x\n", "q.yaml: the file holds a list, not a mapping", id="list"),
        pytest.param("just text\n", "q.yaml: the file holds a str, not a mapping", id="scalar"),
    ],
)
def test_a_file_that_is_not_a_mapping(tmp_path: Path, text: str, message: str) -> None:
    assert message in problem_lines(tmp_path, text)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        pytest.param(
            {**VALID, "measurment": "x"},
            "key 'measurment': unknown key; did you mean 'measurement'?",
            id="misspelt top-level key",
        ),
        pytest.param(
            {**VALID, "colour": "red"},
            "key 'colour': unknown key; a query file takes name, description, nrql",
            id="unknown key without a close match",
        ),
        pytest.param(
            {**VALID, "targets": [{"retention_polcy": "x"}]},
            "key 'targets[0].retention_polcy': unknown key; did you mean 'retention_policy'?",
            id="misspelt target key",
        ),
        pytest.param(
            {**VALID, "targets": [{"lag": "1m"}]},
            "key 'targets[0].lag': unknown key; a target takes database, retention_policy, "
            "interval, retention_duration",
            id="query key inside a target",
        ),
    ],
)
def test_unknown_keys(tmp_path: Path, content: dict[str, Any], message: str) -> None:
    assert f"q.yaml: {message}" in problem_lines(tmp_path, content)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        pytest.param(without("nrql"), "key 'nrql': required key is missing", id="nrql"),
        pytest.param(
            without("measurement"), "key 'measurement': required key is missing", id="measurement"
        ),
        pytest.param(without("database"), "key 'database': required key is missing", id="db"),
        pytest.param(without("interval"), "key 'interval': required key is missing", id="interval"),
        pytest.param(
            {**without("interval"), "targets": [{"interval": "1m"}, {"retention_policy": "b"}]},
            "key 'targets[1].interval': no interval: give `interval` in this target or at the "
            "top level",
            id="interval of one target",
        ),
    ],
)
def test_missing_required_keys(tmp_path: Path, content: dict[str, Any], message: str) -> None:
    assert f"q.yaml: {message}" in problem_lines(tmp_path, content)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        pytest.param({"measurement": 5}, "key 'measurement': must be text (got 5)", id="measure"),
        pytest.param({"nrql": ["SELECT"]}, "key 'nrql': must be text", id="nrql list"),
        pytest.param({"tags": ["a"]}, "key 'tags': must be a mapping", id="tags list"),
        pytest.param({"targets": {"interval": "1m"}}, "key 'targets': must be a list", id="tgts"),
        pytest.param({"targets": ["raw"]}, "key 'targets[0]': must be a mapping", id="target"),
        pytest.param({"description": 3}, "key 'description': must be text", id="description"),
        pytest.param(
            {"account_id": "abc"}, "key 'account_id': must be a whole number", id="account text"
        ),
        pytest.param(
            {"account_id": True}, "key 'account_id': must be a whole number", id="account bool"
        ),
        pytest.param(
            {"account_id": 0}, "key 'account_id': must be greater than 0 (got 0)", id="account 0"
        ),
        pytest.param({"account_id": -5}, "key 'account_id': must be greater than 0", id="neg"),
        pytest.param({"max_series": 0}, "key 'max_series': must be at least 1 (got 0)", id="0"),
        pytest.param({"max_series": 2.5}, "key 'max_series': must be a whole number", id="2.5"),
    ],
)
def test_wrong_types(tmp_path: Path, changes: dict[str, Any], message: str) -> None:
    assert f"q.yaml: {message}" in problem_lines(tmp_path, {**VALID, **changes})


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        pytest.param("interval", "5 mins", "'5 mins' is not a duration; use e.g.", id="interval"),
        pytest.param("lag", "soon", "'soon' is not a duration", id="lag"),
        pytest.param("lookback", "1 fortnight", "'1 fortnight' is not a duration", id="lookback"),
        pytest.param("nr_retention", "8", None, id="nr_retention number is seconds"),
        pytest.param("nr_retention", "0d", "'0d' must be longer than zero", id="nr_retention 0"),
        pytest.param("lag", "-5m", "'-5m' must not be negative", id="negative lag"),
        pytest.param("lookback", -60, "-60 must not be negative", id="negative lookback"),
        pytest.param("start", "yesterday", "'yesterday' is not a time", id="start"),
    ],
)
def test_durations_and_times_that_do_not_parse(
    tmp_path: Path, key: str, value: Any, message: str | None
) -> None:
    if message is None:
        assert only_query(tmp_path, **{key: value}).nr_retention == timedelta(seconds=8)
        return
    assert f"q.yaml: key '{key}': {message}" in problem_lines(tmp_path, {**VALID, key: value})


@pytest.mark.parametrize(
    ("interval", "message"),
    [
        pytest.param("7 minutes", "does not divide a day evenly", id="7 minutes"),
        pytest.param("7h", "does not divide a day evenly", id="7 hours"),
        pytest.param("2d", "is longer than the longest interval, 1 day", id="2 days"),
        pytest.param("1.5s", "is not a whole number of seconds", id="1.5 seconds"),
        pytest.param("0s", "must be longer than zero", id="zero"),
    ],
)
def test_intervals_must_line_up_in_utc(tmp_path: Path, interval: str, message: str) -> None:
    lines = problem_lines(tmp_path, {**VALID, "interval": interval})
    assert f"q.yaml: key 'interval': '{interval}' {message}" in lines
    lines = problem_lines(tmp_path, {**VALID, "targets": [{}, {"interval": interval}]})
    assert f"q.yaml: key 'targets[1].interval': '{interval}' {message}" in lines


@pytest.mark.parametrize(
    "interval", ["1s", "30s", "1m", "5m", "15m", "1h", "3h", "8h", "12h", "1d", "90 seconds"]
)
def test_intervals_that_divide_a_day(tmp_path: Path, interval: str) -> None:
    only_query(tmp_path, interval=interval)


@pytest.mark.parametrize(
    ("measurement", "message"),
    [
        pytest.param("", "measurement must not be empty", id="empty"),
        pytest.param("a\nb", "measurement must not contain newlines", id="newline"),
        pytest.param("a\tb", "measurement must not contain newlines or other control", id="tab"),
        pytest.param("time", "measurement 'time' is reserved by InfluxDB", id="time"),
        pytest.param("_field", "measurement '_field' is reserved by InfluxDB", id="_field"),
        pytest.param("_measurement", "measurement '_measurement' is reserved", id="_measurement"),
        pytest.param("_nr", "'_nr': InfluxDB reserves measurement names starting with '_'", id="_"),
    ],
)
def test_measurement_names_influxdb_rejects(tmp_path: Path, measurement: str, message: str) -> None:
    lines = problem_lines(tmp_path, {**VALID, "measurement": measurement})
    assert f"q.yaml: key 'measurement': {message}" in lines


def test_measurement_with_spaces_and_commas_is_fine(tmp_path: Path) -> None:
    assert only_query(tmp_path, measurement="nr, transaction").measurement == "nr, transaction"


@pytest.mark.parametrize(
    ("tags", "key", "message"),
    [
        pytest.param({"time": "x"}, "tags.time", "tag name 'time' is reserved", id="time"),
        pytest.param({"_field": "x"}, "tags._field", "tag name '_field' is reserved", id="_field"),
        pytest.param({"": "x"}, "tags.''", "tag name must not be empty", id="empty name"),
        pytest.param({"a\nb": "x"}, "tags.a\nb", "tag name must not contain", id="newline"),
        pytest.param({"env": ["a"]}, "tags.env", "a tag value must be a single", id="list value"),
        pytest.param({"env": {"a": 1}}, "tags.env", "a tag value must be a single", id="mapping"),
        pytest.param({"env": None}, "tags.env", "a tag value must be a single", id="null"),
        pytest.param({"env": ""}, "tags.env", "'': a tag value must be non-empty", id="empty"),
        pytest.param(
            {"appName": "x"},
            "tags.appName",
            "'appName' is also a FACET attribute: a static tag would overwrite it",
            id="collides with a facet",
        ),
    ],
)
def test_tags(tmp_path: Path, tags: dict[str, Any], key: str, message: str) -> None:
    assert f"q.yaml: key '{key}': {message}" in problem_lines(tmp_path, {**VALID, "tags": tags})


@pytest.mark.parametrize(
    ("changes", "key", "message"),
    [
        pytest.param(
            {"retention_duration": "30m"},
            "retention_duration",
            "'30m' is shorter than InfluxDB's minimum retention of 1h",
            id="shorter than 1h",
        ),
        pytest.param(
            {"retention_duration": "1 year"},
            "retention_duration",
            "'1 year' is not a duration",
            id="not a duration",
        ),
        pytest.param(
            {"targets": [{}, {"retention_policy": "b", "retention_duration": "59m"}]},
            "targets[1].retention_duration",
            "'59m' is shorter than InfluxDB's minimum",
            id="in a target",
        ),
        pytest.param(
            {"retention_policy": None, "retention_duration": "30d"},
            "retention_duration",
            "needs a retention_policy to create",
            id="without a retention policy",
        ),
        pytest.param(
            {"targets": [{"retention_policy": None, "retention_duration": "30d"}]},
            "targets[0].retention_duration",
            "needs a retention_policy to create",
            id="target without a retention policy",
        ),
        pytest.param(
            {"retention_duration": "30d", "targets": [{"retention_policy": "other"}]},
            "retention_duration",
            "no target writes to the top-level retention_policy",
            id="top-level duration nobody uses",
        ),
    ],
)
def test_retention_duration(
    tmp_path: Path, changes: dict[str, Any], key: str, message: str
) -> None:
    assert f"q.yaml: key '{key}': {message}" in problem_lines(tmp_path, {**VALID, **changes})


def test_inf_retention_duration(tmp_path: Path) -> None:
    assert only_query(tmp_path, retention_duration="INF").targets[0].retention_duration == "INF"


@pytest.mark.parametrize(
    ("targets", "message"),
    [
        pytest.param(
            [],
            "key 'targets': lists no target: list at least one, or leave out `targets`",
            id="empty list",
        ),
        pytest.param(
            [{"interval": "1m"}, {"interval": "5m"}],
            "key 'targets[1]': writes to newrelic.raw_30d like targets[0]; "
            "each target needs its own retention policy",
            id="same retention policy twice",
        ),
    ],
)
def test_targets_problems(tmp_path: Path, targets: list, message: str) -> None:
    assert f"q.yaml: {message}" in problem_lines(tmp_path, {**VALID, "targets": targets})


@pytest.mark.parametrize(
    ("content", "file_name", "message"),
    [
        pytest.param(
            {**VALID, "name": "my query"},
            "q.yaml",
            "q.yaml: key 'name': 'my query' is not a valid query name: use letters, digits",
            id="explicit name",
        ),
        pytest.param(
            VALID,
            "my query.yaml",
            "my query.yaml: key 'name': the file name 'my query' is not a valid query name; "
            "set `name:`",
            id="file stem",
        ),
    ],
)
def test_query_names(tmp_path: Path, content: dict, file_name: str, message: str) -> None:
    assert message in problem_lines(tmp_path, content, file_name)


def test_an_invalid_file_stem_is_fine_with_an_explicit_name(tmp_path: Path) -> None:
    result = load(tmp_path, {**VALID, "name": "my_query"}, "my query.yaml")
    assert [query.name for query in result.queries] == ["my_query"]


def test_every_problem_of_a_file_is_reported(tmp_path: Path) -> None:
    result = load(tmp_path, {**VALID, "interval": "5 mins", "lag": "-1m", "colour": 1})
    assert [problem.key for problem in result.problems] == ["interval", "lag", "colour"]


def test_problem_line_format(tmp_path: Path) -> None:
    path = Path("queries/foo.yaml")
    assert str(QueryFileProblem(path, "interval", "bad", "foo")) == (
        "queries/foo.yaml: key 'interval': bad"
    )
    assert str(QueryFileProblem(path, None, "the file is empty")) == (
        "queries/foo.yaml: the file is empty"
    )
    assert str(QueryFileProblem(path, "lag", "bad", "renamed")) == (
        "queries/foo.yaml (query 'renamed'): key 'lag': bad"
    )


def test_problems_name_the_query_when_the_file_names_it(tmp_path: Path) -> None:
    [problem] = load(tmp_path, {**VALID, "name": "renamed", "lag": "x"}).problems
    assert problem.query == "renamed"
    assert str(problem).startswith(f"{tmp_path / 'q.yaml'} (query 'renamed'): key 'lag':")


# -- several files --------------------------------------------------------------------------------


def test_a_broken_file_does_not_stop_the_good_ones(tmp_path: Path) -> None:
    write(tmp_path, VALID, "good.yaml")
    write(tmp_path, "nrql: [\n", "broken.yaml")
    write(tmp_path, {**VALID, "interval": "7m"}, "invalid.yaml")
    result = load_dir(tmp_path, now=NOW)
    assert [query.name for query in result.queries] == ["good"]
    assert sorted(problem.path.name for problem in result.problems) == [
        "broken.yaml",
        "invalid.yaml",
    ]


def test_duplicate_names_reject_both_files(tmp_path: Path) -> None:
    write(tmp_path, {**VALID, "name": "same"}, "a.yaml")
    write(tmp_path, {**VALID, "name": "same"}, "b.yml")
    write(tmp_path, VALID, "other.yaml")
    result = load_dir(tmp_path, now=NOW)
    assert [query.name for query in result.queries] == ["other"]
    lines = sorted(str(problem) for problem in result.problems)
    assert lines == [
        f"{tmp_path / 'a.yaml'} (query 'same'): key 'name': the query name 'same' is also used "
        f"by {tmp_path / 'b.yml'}: names must be unique",
        f"{tmp_path / 'b.yml'} (query 'same'): key 'name': the query name 'same' is also used "
        f"by {tmp_path / 'a.yaml'}: names must be unique",
    ]


def test_load_dir_reads_yaml_and_yml_in_name_order_and_skips_hidden_files(tmp_path: Path) -> None:
    write(tmp_path, VALID, "b.yml")
    write(tmp_path, VALID, "a.yaml")
    write(tmp_path, VALID, "c.yaml")
    write(tmp_path, "not: [valid", ".c.yaml.swp.yaml")
    write(tmp_path, "not a query", "notes.txt")
    result = load_dir(tmp_path, now=NOW)
    assert result.problems == []
    assert [query.name for query in result.queries] == ["a", "b", "c"]


def test_load_files_reports_a_missing_file_and_loads_a_path_once(tmp_path: Path) -> None:
    good = write(tmp_path, VALID, "good.yaml")
    result = load_files([good, tmp_path / "missing.yaml", good], now=NOW)
    assert [query.name for query in result.queries] == ["good"]
    [problem] = result.problems
    assert (
        str(problem)
        == f"{tmp_path / 'missing.yaml'}: cannot read the file: No such file or directory"
    )


def test_load_files_reports_a_file_that_is_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes("measurement: Zürich\n".encode("latin-1"))
    [problem] = load_files([path], now=NOW).problems
    assert str(problem) == f"{path}: the file is not UTF-8 text"


@pytest.mark.parametrize(
    ("make_folder", "message"),
    [
        pytest.param(lambda tmp: tmp / "nope", "queries folder '{}' does not exist", id="missing"),
        pytest.param(lambda tmp: tmp, "queries folder '{}' has no *.yaml files", id="empty"),
        pytest.param(
            lambda tmp: write(tmp, VALID, "file.yaml"),
            "queries folder '{}' is not a folder",
            id="a file",
        ),
    ],
)
def test_load_dir_refuses_a_folder_without_queries(
    tmp_path: Path, make_folder: Any, message: str
) -> None:
    folder = make_folder(tmp_path)
    with pytest.raises(ConfigError) as error:
        load_dir(folder)
    assert str(error.value) == message.format(folder)


# -- select ---------------------------------------------------------------------------------------


@pytest.fixture
def three_queries(tmp_path: Path) -> list[QueryDef]:
    for name in ("c", "a", "b"):
        write(tmp_path, VALID, f"{name}.yaml")
    return load_dir(tmp_path, now=NOW).queries


def test_select_keeps_the_named_queries_in_loading_order(three_queries: list[QueryDef]) -> None:
    assert [query.name for query in select(three_queries, ["c", "a", "c"])] == ["a", "c"]


def test_select_without_names_keeps_every_query(three_queries: list[QueryDef]) -> None:
    assert select(three_queries, []) == three_queries


def test_select_an_unknown_name_lists_the_known_ones(three_queries: list[QueryDef]) -> None:
    with pytest.raises(ConfigError) as error:
        select(three_queries, ["a", "nope"])
    assert str(error.value) == "unknown query 'nope'; known queries: a, b, c"


def test_query_defs_can_be_built_directly_and_hashed() -> None:
    target = Target(database="db", retention_policy=None, interval=timedelta(minutes=1))
    query = QueryDef(
        name="direct",
        path=Path("direct.yaml"),
        nrql="SELECT count(*) FROM T FACET `a.b`",
        measurement="m",
        targets=(target,),
        tags={"x": "y"},
    )
    assert query.facets == ("a.b",)
    assert {query: 1}[query] == 1
    assert query.lag == timedelta(minutes=5)


# -- mode: events ----------------------------------------------------------------------------


def _events_file(tmp_path, extra: str) -> Path:
    path = tmp_path / "events.yaml"
    path.write_text(
        "nrql: SELECT duration, name, appName FROM Transaction\nmode: events\n"
        "measurement: nr_events\ndatabase: newrelic\n" + extra
    )
    return path


def test_events_mode_defaults_and_nrql(tmp_path):
    loaded = load_files([_events_file(tmp_path, "tag_attributes: [appName]\n")])
    assert loaded.problems == []
    query = loaded.queries[0]
    assert (query.mode, query.tag_attributes) == ("events", ("appName",))
    assert query.targets[0].interval == timedelta(hours=1)
    since = datetime(2026, 1, 1, tzinfo=UTC)
    assert query.nrql_for(since, since + timedelta(seconds=7), query.targets[0].interval) == (
        "SELECT duration, name, appName FROM Transaction LIMIT MAX "
        "SINCE 1767225600000 UNTIL 1767225607000"
    )


@pytest.mark.parametrize(
    ("nrql", "extra", "key", "message"),
    [
        pytest.param("SELECT a FROM T FACET b", "mode: events\n", "nrql", "no FACET", id="facet"),
        pytest.param(
            "SELECT a FROM T LIMIT 10", "mode: events\n", "nrql", "remove LIMIT", id="limit"
        ),
        pytest.param(
            "SELECT count(*) FROM T",
            "tag_attributes: [a]\n",
            "tag_attributes",
            "only for",
            id="tag-attributes-need-events",
        ),
        pytest.param(
            "SELECT a FROM T",
            "mode: events\ntag_attributes: [a]\ntags: {a: x}\n",
            "tags.a",
            "also in tag_attributes",
            id="collision",
        ),
        pytest.param("SELECT a FROM T", "mode: raw\n", "mode", "", id="unknown-mode"),
    ],
)
def test_events_mode_rules(tmp_path, nrql, extra, key, message):
    path = tmp_path / "q.yaml"
    path.write_text(f"nrql: {nrql}\nmeasurement: m\ndatabase: d\ninterval: 1m\n{extra}")
    problems = load_files([path]).problems
    assert problems, "expected a problem"
    assert any(p.key == key and message in p.message for p in problems), problems


@pytest.mark.parametrize(
    ("body", "key"),
    [
        pytest.param('measurement: "m\\\\"\ntags: {a: b}\n', "measurement", id="measurement"),
        pytest.param('measurement: m\ntags: {"k\\\\": v}\n', "tags", id="tag-key"),
    ],
)
def test_names_ending_with_a_backslash_are_refused(tmp_path, body, key):
    path = tmp_path / "q.yaml"
    path.write_text(f"nrql: SELECT count(*) FROM T\ninterval: 1m\ndatabase: d\n{body}")
    problems = load_files([path]).problems
    assert any(p.key.startswith(key) and "backslash" in p.message for p in problems), problems


# -- account_ids --------------------------------------------------------------------------------


def test_account_ids_give_one_job_name_and_tag_per_account(tmp_path: Path) -> None:
    query = only_query(tmp_path, account_ids=[11, 22], tags={"env": "prod"})
    assert query.accounts(default=99) == (11, 22)
    assert [query.job_name(a) for a in query.accounts(None)] == ["q@11", "q@22"]
    assert query.job_tags(22) == {"env": "prod", "account_id": "22"}
    single = only_query(tmp_path, account_id=11)
    assert (single.accounts(99), single.job_name(11), single.job_tags(11)) == ((11,), "q", {})
    assert only_query(tmp_path).accounts(99) == (99,)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        pytest.param(
            {"account_id": 1, "account_ids": [2, 3]},
            "key 'account_ids': give either account_id or account_ids, not both",
            id="both-keys",
        ),
        pytest.param(
            {"account_ids": [2], "tags": {"account_id": "x"}},
            "key 'tags.account_id': account_ids adds the account_id tag itself: remove this tag",
            id="account-tag",
        ),
        pytest.param(
            {"account_ids": [2, 3, 2]}, "key 'account_ids': lists 2 twice", id="duplicate"
        ),
        pytest.param({"account_ids": []}, "key 'account_ids': ", id="empty"),
        pytest.param(
            {"account_ids": [0]}, "key 'account_ids[0]': must be greater than 0", id="zero"
        ),
        pytest.param(
            {"account_ids": [2], "nrql": "SELECT count(*) FROM T FACET account_id"},
            "key 'nrql': FACET account_id would collide with the account_id tag",
            id="facet",
        ),
    ],
)
def test_account_ids_are_validated(tmp_path: Path, changes: dict, message: str) -> None:
    assert f"q.yaml: {message}" in problem_lines(tmp_path, {**VALID, **changes})
