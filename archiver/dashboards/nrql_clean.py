"""A dashboard widget's NRQL → the NRQL of a query file, or the reason it cannot be archived.

A widget's query carries the time range of the chart (SINCE, UNTIL, TIMESERIES, COMPARE WITH,
WITH TIMEZONE) and display options (EXTRAPOLATE); the archiver owns time, so those top-level
clauses are cut out. The TIMESERIES step, if it divides a day, becomes the file's interval.
Reading the NRQL is left to `archiver.queries.nrql` (one scanner for the whole project).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta

from archiver.queries.nrql import (
    MAX_FACETS,
    TIME_CLAUSE_PROBLEM,
    Clause,
    analyse_nrql,
    select_items,
    top_level_clauses,
    without_clauses,
)
from archiver.timeparse import parse_duration
from archiver.windows import interval_problem

DEFAULT_INTERVAL = timedelta(minutes=1)
REMOVED_CLAUSES = ("SINCE", "UNTIL", "TIMESERIES", "COMPARE WITH", "WITH TIMEZONE", "EXTRAPOLATE")
_SUBQUERY = re.compile(r"\(\s*(?:SELECT|FROM)\b", re.IGNORECASE)
_DASHBOARD_VARIABLE = re.compile(r"\{\{\s*[\w.-]+\s*\}\}")
_STEP = re.compile(r"TIMESERIES\s+(.+)", re.IGNORECASE)


@dataclass(frozen=True)
class CleanQuery:
    nrql: str
    interval: timedelta
    timeseries: bool  # the widget drew a time series (it had TIMESERIES)
    compare_with: bool  # the widget compared with an earlier period


class NotArchivable(ValueError):
    """The widget query cannot become a query file; the message says why."""


def clean(nrql: str) -> CleanQuery:
    """The query without the clauses the archiver owns, and the interval to archive it at."""
    if variable := _DASHBOARD_VARIABLE.search(nrql):
        raise NotArchivable(
            f"uses the dashboard variable {variable.group(0)}, which only the dashboard can fill "
            "in: write the query file by hand with the value you want archived"
        )
    try:
        clauses = top_level_clauses(nrql)
    except ValueError as exc:
        raise NotArchivable(str(exc)) from None
    keywords = {clause.keyword for clause in clauses}
    _check_select(nrql)
    cleaned = without_clauses(nrql, REMOVED_CLAUSES)
    shape = analyse_nrql(cleaned)  # time clauses still there are inside parentheses
    if any(problem.startswith(TIME_CLAUSE_PROBLEM) for problem in shape.problems):
        _nested_time_clause(top_level_clauses(cleaned))
    if len(shape.facets) > MAX_FACETS:
        raise NotArchivable(
            f"{len(shape.facets)} FACET attributes: New Relic's TIMESERIES allows at most "
            f"{MAX_FACETS}"
        )
    steps = [c.text for c in clauses if c.keyword == "TIMESERIES"]
    return CleanQuery(
        nrql=cleaned,
        interval=_interval(steps[0]) if steps else DEFAULT_INTERVAL,
        timeseries=bool(steps),
        compare_with="COMPARE WITH" in keywords,
    )


def _nested_time_clause(clauses: tuple[Clause, ...]) -> None:
    nested_from = any(c.keyword == "FROM" and _SUBQUERY.search(c.text) for c in clauses)
    if nested_from:  # nested aggregation: New Relic allows TIMESERIES inside, not the archiver
        raise NotArchivable(
            "the nested query in FROM has its own SINCE, UNTIL, TIMESERIES or COMPARE WITH: "
            "the archiver sends one TIMESERIES per window and owns every time clause; write "
            "the nested query without it"
        )
    raise NotArchivable(
        "a subquery has its own SINCE, UNTIL, TIMESERIES or COMPARE WITH: New Relic does not "
        "run subqueries as a TIMESERIES, and a fixed range would not follow the archiver's "
        "windows"
    )


def _check_select(nrql: str) -> None:
    items = select_items(nrql)
    if not items:
        raise NotArchivable("no SELECT list: not a query the archiver can run")
    if any(item.text == "*" for item in items):
        raise NotArchivable(
            "SELECT * lists raw events of every attribute: archive them with a `mode: events` "
            "query file that names its attributes"
        )
    if not any("(" in item.text for item in items):
        raise NotArchivable(
            "raw attributes, no aggregate function: archive them with a `mode: events` query "
            "file (tag_attributes, no LIMIT)"
        )


def _interval(timeseries_clause: str) -> timedelta:
    """The TIMESERIES step when it is a fixed duration that divides a day, else 1 minute."""
    match = _STEP.match(timeseries_clause)
    if not match:  # bare TIMESERIES: New Relic picks the step for the chart
        return DEFAULT_INTERVAL
    step_text = re.split(r"\bSLIDE\s+BY\b", match.group(1), flags=re.IGNORECASE)[0].strip()
    try:
        step = parse_duration(step_text)
    except ValueError:  # AUTO, MAX, months...
        return DEFAULT_INTERVAL
    if interval_problem(step):
        return DEFAULT_INTERVAL
    return step
