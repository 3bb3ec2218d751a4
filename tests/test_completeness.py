"""Issue 11, items 5-7: empty-bucket percentiles, otherResult and the facet cap, and New
Relic's messages, below the end-to-end level (NRQL rewrite, row filter, clients, validation)."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import responses

from archiver import app
from archiver.errors import NewRelicError
from archiver.newrelic.insights import InsightsClient
from archiver.newrelic.nerdgraph import GRAPHQL, GRAPHQL_WITH_OTHER, NerdGraphClient
from archiver.pipeline import completeness
from archiver.pipeline.transform import to_lines
from archiver.queries import LoadResult
from archiver.queries.load import load_file
from archiver.queries.model import OTHER_TAG_VALUE
from archiver.queries.nrql import facet_limit
from archiver.queries.samples import SampleGuard, sample_counts
from archiver.settings import Settings
from fakes.insights import FakeInsights
from fakes.nerdgraph import FakeNerdGraph
from tests.e2e import ACCOUNT

NOW = 1_795_003_200
HOUR_MS = 3_600_000
N = "__nr_archiver_n_"

# -- the NRQL sent: one sample count per (attribute, filter) of the percentiles ------------------

REWRITES = [
    pytest.param(
        "SELECT average(duration), percentile(duration, 95, 99), count(*) FROM Transaction"
        " FACET appName, host",
        "SELECT average(duration), percentile(duration, 95, 99), count(*),"
        f" count(duration) AS '{N}0' FROM Transaction FACET appName, host",
        [(f"{N}0", ("percentile.duration",))],
        id="percentile",
    ),
    pytest.param(
        "SELECT percentile(duration, 50) AS 'p50', median(duration), percentile(duration, 99)"
        " AS `p99` FROM T",
        f"SELECT percentile(duration, 50) AS 'p50', median(duration), percentile(duration, 99)"
        f" AS `p99`, count(duration) AS '{N}0' FROM T",
        [(f"{N}0", ("p50", "median.duration", "p99"))],
        id="one_count_shared_by_aliases_and_median",
    ),
    pytest.param(
        "SELECT filter(percentile(duration, 75), WHERE name = 'a, (b) AS c') AS 'p75',"
        " filter(count(*), WHERE x) FROM T",
        "SELECT filter(percentile(duration, 75), WHERE name = 'a, (b) AS c') AS 'p75',"
        f" filter(count(*), WHERE x), filter(count(duration), WHERE name = 'a, (b) AS c')"
        f" AS '{N}0' FROM T",
        [(f"{N}0", ("p75",))],
        id="filter_with_the_same_where_quotes_and_parentheses",
    ),
    pytest.param(
        "SELECT filter(median(`my attr`), WHERE ok IS true) FROM T",
        f"SELECT filter(median(`my attr`), WHERE ok IS true),"
        f" filter(count(`my attr`), WHERE ok IS true) AS '{N}0' FROM T",
        [(f"{N}0", ("filter.median.my attr",))],
        id="unaliased_filter_backticks",
    ),
    pytest.param(
        "SELECT percentile(duration, 95) * 1000 AS 'p95 ms', percentile(a, 9) - percentile(b, 9)"
        " AS d, percentile(duration, 90) / 2 FROM T",
        f"SELECT percentile(duration, 95) * 1000 AS 'p95 ms', percentile(a, 9) - percentile(b, 9)"
        f" AS d, percentile(duration, 90) / 2, count(duration) AS '{N}0' FROM T",
        [(f"{N}0", ("p95 ms",))],
        id="arithmetic_only_aliased_and_single_attribute",
    ),
    pytest.param(
        "SELECT percentile(d, 90), percentile(e, 90) FROM T WHERE s = 'SELECT x FROM y'"
        " FACET g LIMIT 20",
        f"SELECT percentile(d, 90), percentile(e, 90), count(d) AS '{N}0', count(e) AS '{N}1'"
        " FROM T WHERE s = 'SELECT x FROM y' FACET g LIMIT 20",
        [(f"{N}0", ("percentile.d",)), (f"{N}1", ("percentile.e",))],
        id="two_attributes_and_keywords_in_quotes",
    ),
    pytest.param(
        "FROM T SELECT percentile(d, 90) WHERE x > 1",
        f"FROM T SELECT percentile(d, 90), count(d) AS '{N}0' WHERE x > 1",
        [(f"{N}0", ("percentile.d",))],
        id="from_first",
    ),
    pytest.param(
        "SELECT percentile(duration * 1000, 95) AS ms, percentile(numeric(x), 50) FROM T",
        "SELECT percentile(duration * 1000, 95) AS ms, percentile(numeric(x), 50) FROM T",
        [],
        id="percentile_of_an_expression_untouched",
    ),
    pytest.param(
        "SELECT max(p) FROM (SELECT percentile(duration, 95) AS p FROM T TIMESERIES 1 minute)",
        "SELECT max(p) FROM (SELECT percentile(duration, 95) AS p FROM T TIMESERIES 1 minute)",
        [],
        id="nested_query_untouched",
    ),
    pytest.param(
        "SELECT count(*), average(x) FROM T",
        "SELECT count(*), average(x) FROM T",
        [],
        id="no_percentile",
    ),
]


@pytest.mark.parametrize(("nrql", "sent", "guards"), REWRITES)
def test_percentiles_bring_their_sample_count_into_the_same_query(nrql, sent, guards):
    counted = sample_counts(nrql)
    assert counted.nrql == sent
    assert [(g.helper, g.guarded) for g in counted.guards] == guards


@pytest.mark.parametrize(
    ("nrql", "limit"),
    [
        ("SELECT count(*) FROM T FACET a", 5000),
        ("SELECT count(*) FROM T FACET a LIMIT MAX", 5000),
        ("SELECT count(*) FROM T FACET a limit 25", 25),
        ("SELECT count(*) FROM T WHERE s = 'LIMIT 3' FACET a", 5000),
        ("SELECT count(*) FROM T FACET a LIMIT 9000", 5000),
    ],
)
def test_facet_limit_is_the_users_limit_or_limit_max(nrql, limit):
    assert facet_limit(nrql) == limit


def write_query(tmp_path: Path, **content) -> Path:
    path = tmp_path / "q.yaml"
    base = {"measurement": "m", "interval": "1m", "database": "db"}
    path.write_text(json.dumps({**base, **content}))
    return path


def test_dry_run_nrql_is_the_nrql_sent_with_its_sample_count(tmp_path):
    path = write_query(tmp_path, nrql="SELECT percentile(duration, 95) FROM T FACET a")
    query, problems = load_file(path, now=datetime.now(UTC))
    assert not problems and query is not None
    since = datetime(2026, 11, 1, tzinfo=UTC)
    assert query.nrql_for(since, since + timedelta(hours=1), timedelta(minutes=1)) == (
        f"SELECT percentile(duration, 95), count(duration) AS '{N}0' FROM T FACET a LIMIT MAX"
        f" SINCE {int(since.timestamp() * 1000)} UNTIL {int(since.timestamp() * 1000) + HOUR_MS}"
        " TIMESERIES 1 minute"
    )
    assert query.sample_guards == (SampleGuard(f"{N}0", ("percentile.duration",)),)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (
            {"nrql": "SELECT count(*) FROM T", "other": True},
            "q.yaml: key 'other': `other: true` needs an aggregate query with FACET",
        ),
        (
            {"nrql": "SELECT a FROM T", "mode": "events", "other": True},
            "q.yaml: key 'other': `other: true` needs an aggregate query with FACET",
        ),
        (
            {"nrql": "SELECT count(*) FROM T FACET a", "other": "yes"},
            "q.yaml: key 'other': must be true or false (got 'yes')",
        ),
        (
            {"nrql": f"SELECT count(x) AS '{N}0' FROM T"},
            f"q.yaml: key 'nrql': names starting with {N} are reserved",
        ),
    ],
)
def test_query_file_problems(tmp_path, content, message):
    path = write_query(tmp_path, **content)
    query, problems = load_file(path, now=datetime.now(UTC))
    assert query is None
    assert [str(p).removeprefix(f"{tmp_path}/") for p in problems] == [message]


def test_other_is_refused_with_the_insights_api_only(tmp_path):
    path = write_query(tmp_path, nrql="SELECT count(*) FROM T FACET a", other=True)
    query, _ = load_file(path, now=datetime.now(UTC))
    assert query is not None and query.other
    loaded = LoadResult([query], [])
    insights = Settings(new_relic_query_key="NRIQ-x")
    refused = app.for_api(insights, loaded)
    assert refused.queries == []
    assert [str(p) for p in refused.problems] == [
        f"{path}: key 'other': `other: true` needs NerdGraph's otherResult, which the Insights "
        "query API does not answer: set NEW_RELIC_API_KEY (a user key) or remove `other: true`"
    ]
    both = Settings(new_relic_api_key="NRAK-x", new_relic_query_key="NRIQ-x")
    assert app.for_api(both, loaded) is loaded


# -- rows ---------------------------------------------------------------------------------------


def test_a_zero_sample_count_drops_its_percentiles_and_the_count_is_never_kept():
    guards = (SampleGuard(f"{N}0", ("percentile.duration", "p")), SampleGuard(f"{N}1", ("f",)))
    rows = [
        {"percentile.duration": {"95": 0}, "p": {"50": 0}, "average.duration": None,
         "count": 0, f"{N}0": 0, "f": {"75": 0.0}, f"{N}1": 0.0},
        {"percentile.duration": {"95": 0}, "p": {"50": 1.5}, "count": 3, f"{N}0": 3,
         "f": {"75": 2}, f"{N}1": 1},
        {"percentile.duration": {"95": 0}, f"{N}0": None},  # unknown: kept as sent
    ]  # fmt: skip
    assert completeness.drop_unsampled(rows, guards) == set()
    assert rows == [
        {"average.duration": None, "count": 0},
        {"percentile.duration": {"95": 0}, "p": {"50": 1.5}, "count": 3, "f": {"75": 2}},
        {"percentile.duration": {"95": 0}},
    ]


def test_a_guarded_key_the_answer_names_otherwise_is_reported():
    rows = [{"percentile.Duration": {"95": 0}, f"{N}0": 0}]
    unseen = completeness.drop_unsampled(rows, (SampleGuard(f"{N}0", ("percentile.duration",)),))
    assert unseen == {"percentile.duration"}
    assert rows == [{"percentile.Duration": {"95": 0}}]


def test_other_result_becomes_rows_tagged_other_on_every_facet():
    other = [{"beginTimeSeconds": 60, "endTimeSeconds": 120, "count": 42}]
    assert completeness.other_rows(other, ("appName", "host")) == [
        {"beginTimeSeconds": 60, "endTimeSeconds": 120, "count": 42,
         "appName": OTHER_TAG_VALUE, "host": OTHER_TAG_VALUE,
         "facet": [OTHER_TAG_VALUE, OTHER_TAG_VALUE]},
    ]  # fmt: skip
    single = completeness.other_rows({"count": 42}, ("appName",))
    assert single == [{"count": 42, "appName": OTHER_TAG_VALUE, "facet": OTHER_TAG_VALUE}]
    assert completeness.other_rows(None, ("appName",)) == []
    line = to_lines(completeness.other_rows(other, ("appName",)), ("appName",), "m", {})
    assert line == ["m,appName=__other__ count=42.0 60"]


def test_facet_count_reads_the_attributes_or_the_facet_key():
    rows = [
        {"appName": "a", "facet": "a", "beginTimeSeconds": 0},
        {"appName": "a", "facet": "a", "beginTimeSeconds": 60},
        {"appName": "b", "beginTimeSeconds": 0},  # no facet key, as in real answers
        {"facet": "c", "beginTimeSeconds": 0},
        {"appName": None, "facet": None, "beginTimeSeconds": 0},
    ]
    assert completeness.facet_keys(rows, ("appName",)).count == 4
    pairs = [{"facet": ["a", "x"]}, {"facet": ["a", "x"]}, {"facet": ["a", None]}]
    assert completeness.facet_keys(pairs, ("appName", "host")).count == 2


def test_facet_keys_tell_apart_values_json_tells_apart():
    scalars = [{"facet": value} for value in (1, 1.0, True, "1", 1, "1", None)]
    assert completeness.facet_keys(scalars, ("code",)).count == 5  # 1, 1.0, true, "1", null
    lists = [{"facet": [value, "a"]} for value in (1, 1.0, True, "1", "1", 1.0)]
    lists.append({"facet": ["1", "a"]})
    assert completeness.facet_keys(lists, ("code", "name")).count == 4
    # text and list facets, with or without the facet key: each as the series guard keys it
    rows = [
        {"facet": "a"}, {"facet": ["a", "b"]}, {"facet": ["a", "b"]}, {"facet": ["a", 2]},
        {"appName": "c", "host": "d"}, {"appName": "c", "host": "d"},
    ]  # fmt: skip
    keys = completeness.facet_keys(rows, ("appName", "host"))
    assert keys.count == 4
    assert sorted(map(repr, keys.values)) == sorted(
        map(repr, ["a", ("a", "b"), ("a", 2), ("c", "d")])
    )
    assert completeness.facet_keys([{"appName": ["x", "y"]}], ("appName",)).values == [("x", "y")]


def test_messages_are_read_from_nerdgraph_and_insights_metadata():
    assert completeness.messages({"messages": ["a  b", "c"], "facets": None}) == ("a b", "c")
    insights = {
        "messages": ["top"],
        "contents": {"messages": ["top", "nested"], "timeSeries": {"messages": []}},
    }
    assert completeness.messages(insights) == ("top", "nested")
    assert completeness.messages({"messages": [{"message": "as object"}, ""]}) == ("as object",)
    assert completeness.messages(None) == ()


# -- clients ------------------------------------------------------------------------------------

URL = "https://api.newrelic.com/graphql"


@responses.activate
def test_nerdgraph_asks_for_other_result_only_when_told_and_reads_messages():
    other = [{"beginTimeSeconds": 60, "endTimeSeconds": 120, "count": 42}]
    metadata = {"facets": ["appName"], "messages": ["Your results were sampled"]}
    nrql = {"results": [], "otherResult": other, "metadata": metadata}
    responses.post(URL, json={"data": {"actor": {"account": {"nrql": nrql}}}})
    with NerdGraphClient(URL, "NRAK-TEST0123456789ABCDEFGHIJKLM") as client:
        plain = client.query(ACCOUNT, "SELECT 1")
        asked = client.query(ACCOUNT, "SELECT 1", other=True)
    sent = [json.loads(call.request.body)["query"] for call in responses.calls]
    assert sent == [GRAPHQL, GRAPHQL_WITH_OTHER]
    assert "otherResult" in GRAPHQL_WITH_OTHER and "otherResult" not in GRAPHQL
    assert asked.other == other
    assert plain.messages == asked.messages == ("Your results were sampled",)


def test_insights_client_refuses_other_before_any_request():
    with (
        InsightsClient("http://127.0.0.1:9", "NRIQ-x") as client,
        pytest.raises(NewRelicError, match="Insights query API does not answer"),
    ):
        client.query(ACCOUNT, "SELECT count(*) FROM T FACET a", other=True)


@pytest.fixture(scope="module")
def both_apis() -> Iterator[tuple[NerdGraphClient, InsightsClient]]:
    with (
        FakeNerdGraph(now=lambda: NOW) as nerdgraph,
        FakeInsights(now=lambda: NOW) as insights,
        NerdGraphClient(nerdgraph.url, nerdgraph.api_key) as nerdgraph_client,
        InsightsClient(insights.url, insights.api_key) as insights_client,
    ):
        nerdgraph.add_messages("FROM Transaction", ["a warning"])
        insights.add_messages("FROM Transaction", ["a warning"])
        yield nerdgraph_client, insights_client


def test_both_apis_answer_the_sample_counts_and_give_the_same_points(both_apis):
    since, until = NOW * 1000 - 3 * HOUR_MS, NOW * 1000 - HOUR_MS
    nrql = sample_counts(
        "SELECT percentile(duration, 95, 99), median(duration), filter(percentile(duration, 75),"
        " WHERE error IS true) AS 'p75', count(*) FROM Transaction FACET appName LIMIT MAX"
    )
    text = f"{nrql.nrql} SINCE {since} UNTIL {until} TIMESERIES 5 minutes"
    lines = []
    for client in both_apis:
        answer = client.query(ACCOUNT, text)
        assert answer.messages == ("a warning",)
        rows = answer.results
        assert all(guard.helper in row for row in rows for guard in nrql.guards)
        empty = [row for row in rows if row["count"] == 0]
        assert empty and all(row["percentile.duration"] == {"95": 0, "99": 0} for row in empty)
        assert completeness.drop_unsampled(rows, nrql.guards) == set()
        assert all("percentile.duration" not in row and "p75" not in row for row in empty)
        assert all(not key.startswith(N) for row in rows for key in row)
        lines.append(to_lines(rows, answer.facets, "m", {}))
    assert lines[0] and lines[0] == lines[1]


def test_a_run_says_each_message_once_per_query(caplog):
    from archiver.pipeline.job import JobResult, Said

    once = Said()  # one per run, shared by its jobs
    first, second = JobResult("q", "db.a"), JobResult("q", "db.b")
    with caplog.at_level(logging.WARNING, logger="archiver.pipeline.job"):
        once.messages("q", first, ("m1", "m2"))
        once.messages("q", first, ("m1",))
        once.messages("q", second, ("m1",))
        once.messages("other query", second, ("m1",))
    said = [r.getMessage() for r in caplog.records]
    assert said == [
        "q: New Relic says: m1",
        "q: New Relic says: m2",
        "other query: New Relic says: m1",
    ]
    assert (len(first.messages), len(second.messages)) == (2, 1)


def test_every_self_metric_field_is_documented_under_monitoring():
    import re

    from archiver.pipeline import metrics

    readme = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")
    monitoring = readme.split("## Monitoring the archiver", 1)[1].split("\n## ", 1)[0]
    line = metrics.job_line(
        query="q", target="t", kind="incremental", status="ok", points=1, windows=1,
        nr_requests=1, retries=0, seconds=1.0, exported_until=datetime.now(UTC),
        now=datetime.now(UTC), nr_messages=2, facet_limit_hit=1,
    )  # fmt: skip
    fields = re.findall(r"([a-z_]+)=", line.split(" ")[1])
    assert {"nr_messages", "facet_limit_hit"} <= set(fields)
    assert [f for f in fields if f"`{f}`" not in monitoring] == []
