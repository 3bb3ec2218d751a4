"""What a query's NRQL may say, and the exact NRQL sent for a window (queries/nrql.py, model.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.queryfiles import VALID, only_query, problem_lines

# -- the NRQL sent --------------------------------------------------------------------------------

SINCE = datetime(2026, 11, 19, tzinfo=UTC)
UNTIL = datetime(2026, 11, 19, 6, tzinfo=UTC)
SINCE_MS, UNTIL_MS = 1795046400000, 1795068000000


@pytest.mark.parametrize(
    ("nrql", "sent"),
    [
        pytest.param(
            "SELECT count(*) FROM Transaction FACET appName",
            "SELECT count(*) FROM Transaction FACET appName LIMIT MAX",
            id="FACET without LIMIT gets LIMIT MAX",
        ),
        pytest.param(
            "SELECT count(*) FROM Transaction FACET appName LIMIT 20",
            "SELECT count(*) FROM Transaction FACET appName LIMIT 20",
            id="own LIMIT kept",
        ),
        pytest.param(
            "SELECT count(*) FROM Transaction",
            "SELECT count(*) FROM Transaction",
            id="no FACET no LIMIT",
        ),
        pytest.param(
            "SELECT count(*) FROM Transaction WHERE name = 'facet'",
            "SELECT count(*) FROM Transaction WHERE name = 'facet'",
            id="facet inside quotes is not a FACET",
        ),
        pytest.param(
            "SELECT count(*)  -- how many\nFROM Transaction /* all of them */\n  FACET host",
            "SELECT count(*) FROM Transaction FACET host LIMIT MAX",
            id="comments removed and whitespace collapsed",
        ),
        pytest.param(
            "SELECT count(*) FROM Transaction WHERE name = 'a  --  b'",
            "SELECT count(*) FROM Transaction WHERE name = 'a  --  b'",
            id="quoted text kept as written",
        ),
    ],
)
def test_nrql_for(tmp_path: Path, nrql: str, sent: str) -> None:
    query = only_query(tmp_path, nrql=nrql)
    expected = f"{sent} SINCE {SINCE_MS} UNTIL {UNTIL_MS} TIMESERIES 1 minute"
    assert query.nrql_for(SINCE, UNTIL, timedelta(minutes=1)) == expected


def test_nrql_for_uses_utc_epoch_milliseconds_and_the_interval(tmp_path: Path) -> None:
    query = only_query(tmp_path, nrql="SELECT count(*) FROM Transaction")
    since = datetime(2026, 11, 19, 1, tzinfo=UTC).astimezone()  # any zone: same instant
    assert query.nrql_for(since, UNTIL, timedelta(hours=1)) == (
        "SELECT count(*) FROM Transaction SINCE 1795050000000 UNTIL 1795068000000 TIMESERIES 1 hour"
    )
    assert SINCE_MS % 3_600_000 == 0 and UNTIL_MS % 3_600_000 == 0


@pytest.mark.parametrize(
    ("since", "until", "interval", "message"),
    [
        pytest.param(
            SINCE + timedelta(seconds=30),
            UNTIL,
            timedelta(minutes=1),
            "is not aligned to the interval of 1 minute",
            id="misaligned since",
        ),
        pytest.param(
            SINCE,
            UNTIL - timedelta(minutes=1),
            timedelta(hours=1),
            "is not aligned to the interval of 1 hour",
            id="misaligned until",
        ),
        pytest.param(SINCE, SINCE, timedelta(minutes=1), "not 0", id="empty window"),
        pytest.param(
            SINCE, SINCE + timedelta(minutes=367), timedelta(minutes=1), "not 367", id="367"
        ),
    ],
)
def test_nrql_for_refuses_windows_new_relic_would_shift_or_reject(
    tmp_path: Path, since: datetime, until: datetime, interval: timedelta, message: str
) -> None:
    query = only_query(tmp_path)
    with pytest.raises(ValueError, match=message):
        query.nrql_for(since, until, interval)


@pytest.mark.parametrize(
    ("facet_clause", "facets"),
    [
        pytest.param("FACET appName", ("appName",), id="one"),
        pytest.param("FACET appName, host LIMIT 5", ("appName", "host"), id="two then LIMIT"),
        pytest.param("FACET `request.uri`", ("request.uri",), id="backticks removed"),
        pytest.param("FACET `a, b`, c", ("a, b", "c"), id="comma inside backticks"),
        pytest.param("facet appName where x = 1", ("appName",), id="lower case, then WHERE"),
        pytest.param(
            "FACET cases(WHERE duration < 1 AS 'fast', WHERE duration >= 1 AS 'slow') AS speed",
            ("speed",),
            id="function with alias",
        ),
        pytest.param("FACET buckets(duration, 10, 5)", ("buckets(duration, 10, 5)",), id="func"),
    ],
)
def test_facets_are_read_from_the_nrql(tmp_path: Path, facet_clause: str, facets: tuple) -> None:
    query = only_query(tmp_path, nrql=f"SELECT count(*) FROM Transaction {facet_clause}")
    assert query.facets == facets


@pytest.mark.parametrize(
    ("nrql", "clauses"),
    [
        pytest.param(
            "SELECT count(*) FROM T SINCE 1 day ago", "'SINCE 1 day ago'", id="SINCE at the end"
        ),
        pytest.param(
            "SELECT count(*) FROM T since 1 day ago FACET host",
            "'since 1 day ago'",
            id="lower-case SINCE before FACET",
        ),
        pytest.param(
            "SELECT count(*) FROM T UNTIL 10 minutes ago", "'UNTIL 10 minutes ago'", id="UNTIL"
        ),
        pytest.param(
            "SELECT count(*) FROM T TIMESERIES 5 minutes", "'TIMESERIES 5 minutes'", id="TS"
        ),
        pytest.param(
            "SELECT count(*) FROM T COMPARE WITH 1 week ago",
            "'COMPARE WITH 1 week ago'",
            id="COMPARE WITH",
        ),
        pytest.param(
            "SELECT count(*) FROM T WITH TIMEZONE 'Europe/Zurich'",
            "'WITH TIMEZONE 'Europe/Zurich''",
            id="WITH TIMEZONE",
        ),
        pytest.param(
            "SELECT count(*) FROM T SINCE 1 day ago TIMESERIES",
            "'SINCE 1 day ago' and 'TIMESERIES'",
            id="two clauses",
        ),
    ],
)
def test_nrql_must_leave_time_to_the_archiver(tmp_path: Path, nrql: str, clauses: str) -> None:
    assert (f"q.yaml: key 'nrql': the archiver owns time: remove {clauses}") in problem_lines(
        tmp_path, {**VALID, "nrql": nrql}
    )


@pytest.mark.parametrize(
    "nrql",
    [
        pytest.param("SELECT count(*) FROM T WHERE name = 'since until'", id="single quotes"),
        pytest.param('SELECT count(*) FROM T WHERE name = "timeseries"', id="double quotes"),
        pytest.param("SELECT count(*) FROM T WHERE name = 'it\\'s since'", id="escaped quote"),
        pytest.param("SELECT average(`since`) FROM T FACET `until`", id="backticks"),
        pytest.param("SELECT count(*) FROM T -- SINCE 1 day ago", id="line comment"),
        pytest.param("SELECT count(*) FROM T /* TIMESERIES */", id="block comment"),
        pytest.param("SELECT sinceLast, untilNext FROM T", id="words that contain a keyword"),
        pytest.param("FROM T SELECT count(*)", id="FROM first"),
    ],
)
def test_keywords_inside_quotes_comments_and_names_are_fine(tmp_path: Path, nrql: str) -> None:
    assert only_query(tmp_path, nrql=nrql).nrql == nrql


@pytest.mark.parametrize(
    ("nrql", "message"),
    [
        pytest.param("count(*) FROM T", "nrql must be a query of the form SELECT", id="no SELECT"),
        pytest.param("SELECT count(*)", "nrql must be a query of the form SELECT", id="no FROM"),
        pytest.param("   ", "nrql is empty", id="empty"),
        pytest.param(
            "SELECT count(*) FROM T WHERE a = 'open",
            "nrql has an unterminated ' quote",
            id="open quote",
        ),
        pytest.param(
            "SELECT count(* FROM T", "nrql has a '(' without its ')'", id="open parenthesis"
        ),
        pytest.param("SELECT count(*) FROM T FACET", "nrql has FACET without an attribute", id="F"),
        pytest.param(
            "SELECT count(*) FROM T FACET a, b, c, d, e, f",
            "nrql has 6 FACET attributes; New Relic allows at most 5",
            id="six facets",
        ),
        pytest.param(
            "SELECT count(*) FROM T FACET time",
            "FACET attribute 'time' cannot be an InfluxDB tag: 'time' is reserved by InfluxDB",
            id="facet named time",
        ),
    ],
)
def test_nrql_shape(tmp_path: Path, nrql: str, message: str) -> None:
    assert f"q.yaml: key 'nrql': {message}" in problem_lines(tmp_path, {**VALID, "nrql": nrql})


def test_five_facets_are_fine(tmp_path: Path) -> None:
    query = only_query(tmp_path, nrql="SELECT count(*) FROM T FACET a, b, c, d, e")
    assert query.facets == ("a", "b", "c", "d", "e")
