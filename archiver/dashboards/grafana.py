"""`nr-archiver grafana`: query files → one Grafana dashboard of the archived series.

The dashboard is Grafana's classic JSON model (what "Export" and file provisioning use): one
time-series panel per (query, target) reading the archived measurement with InfluxQL, a
template variable per FACET tag (and for the `account_id` tag of an `account_ids` query), and a
row about the archiver itself from `nr_archiver`.
Field names are predicted from the NRQL the way New Relic keys its results (`count`,
`average.duration`, `percentile.duration.95`, an alias as written); a SELECT item whose key
cannot be predicted (an expression without alias, `apdex`...), and a `mode: events` query, make
the panel read every numeric field (`mean(*)`, which skips text fields) instead of guessing.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from archiver.dashboards import DEFAULT_DATASOURCE_UID
from archiver.pipeline import metrics
from archiver.queries import QueryDef, Target
from archiver.queries.model import ACCOUNT_TAG
from archiver.queries.nrql import SelectItem, select_items
from archiver.timeparse import format_duration

DASHBOARD_UID = "nr-archiver"
SCHEMA_VERSION = 39  # Grafana 11's classic model; newer Grafana migrates it when loading
STALL_SECONDS = 7200  # the README's stall alert: no checkpoint younger than 2 hours
PANEL_WIDTH, PANEL_HEIGHT = 12, 8
_SUMMED = {"count", "sum"}  # additive per bucket: a wider Grafana bucket sums them
_UNIT_BY_FUNCTION = {"percentage": "percent", "count": "short", "uniquecount": "short"}
_TIME_FUNCTIONS = {"average", "max", "min", "percentile", "median", "latest", "sum", "stddev"}
_WRAPPING = {"percentage", "filter", "rate"}


@dataclass(frozen=True)
class Field:
    key: str  # the InfluxDB field
    aggregate: str  # InfluxQL function applied per Grafana bucket
    unit: str | None  # Grafana unit id


def dashboard(queries: Iterable[QueryDef], datasource_uid: str = DEFAULT_DATASOURCE_UID) -> dict:
    """The dashboard JSON (a dict) for these queries."""
    queries = list(queries)
    source = {"type": "influxdb", "uid": datasource_uid}
    variables = _Variables(queries, source)
    panels: list[dict] = [_row("Archived series", 0)]
    y = 1
    for index, (query, target) in enumerate((q, t) for q in queries for t in q.targets):
        position = {"h": PANEL_HEIGHT, "w": PANEL_WIDTH, "x": (index % 2) * PANEL_WIDTH, "y": y}
        panels.append(_series_panel(query, target, source, variables, position))
        y += PANEL_HEIGHT if index % 2 else 0
    y += PANEL_HEIGHT if len(panels) % 2 == 0 else 0
    panels.append(_row("nr-archiver", y))
    panels += _archiver_panels(queries, source, y + 1)
    for number, panel in enumerate(panels, start=1):
        panel["id"] = number
    return {
        "uid": DASHBOARD_UID,
        "title": "nr-archiver: archived New Relic series",
        "description": "Written by `nr-archiver grafana` from the query files.",
        "tags": ["nr-archiver", "newrelic"],
        "timezone": "utc",
        "editable": True,
        "graphTooltip": 1,
        "schemaVersion": SCHEMA_VERSION,
        "version": 1,
        "time": {"from": "now-24h", "to": "now"},
        "refresh": "",
        "links": [],
        "annotations": {"list": []},
        "templating": {"list": variables.definitions()},
        "panels": panels,
    }


def to_json(board: dict) -> str:
    return json.dumps(board, indent=2, ensure_ascii=False) + "\n"


# -- the archived series ---------------------------------------------------------------------


def _series_panel(
    query: QueryDef, target: Target, source: dict, variables: _Variables, position: dict
) -> dict:
    # events: which attributes are numbers is unknown; mean(*) reads those, skips the texts
    fields = None if query.mode == "events" else predicted_fields(query.nrql)
    tags = tag_keys(query)
    names = [variables.name(target.database, tag) for tag in tags]
    where = [f"{_ident(tag)} =~ /^${name}$/" for tag, name in zip(tags, names, strict=True)]
    group_by = "".join(f", {_ident(tag)}" for tag in tags)
    from_ = _source(target.database, target.retention_policy, query.measurement)
    conditions = "".join(f"{condition} AND " for condition in where)

    def influxql(selection: str) -> str:
        return (
            f"SELECT {selection} FROM {from_} WHERE {conditions}$timeFilter "
            f"GROUP BY time($__interval){group_by} fill(none)"
        )

    groups: dict[str | None, list[Field]] = {}  # one Grafana query per unit
    for item in fields or []:
        groups.setdefault(item.unit, []).append(item)
    targets, overrides = [], []
    if fields is None:
        targets.append(_target("A", source, influxql("mean(*)")))
    for number, (unit, members) in enumerate(groups.items()):
        ref = chr(ord("A") + number)
        selection = ", ".join(
            f"{item.aggregate}({_ident(item.key)}) AS {_ident(item.key)}" for item in members
        )
        targets.append(_target(ref, source, influxql(selection)))
        if number and unit:
            overrides.append(
                {
                    "matcher": {"id": "byFrameRefID", "options": ref},
                    "properties": [{"id": "unit", "value": unit}],
                }
            )
    first_unit = next(iter(groups), None)
    defaults: dict[str, Any] = {"custom": {"drawStyle": "line", "spanNulls": False}}
    if first_unit:
        defaults["unit"] = first_unit
    return {
        "type": "timeseries",
        "title": f"{query.name} ({target.key}, every {format_duration(target.interval)})",
        "description": query.description or query.nrql,
        "datasource": source,
        "gridPos": position,
        "interval": _grafana_interval(target.interval),
        "targets": targets,
        "fieldConfig": {"defaults": defaults, "overrides": overrides},
        "options": _panel_options(),
    }


def tag_keys(query: QueryDef) -> tuple[str, ...]:
    """The tags a query's points carry besides its static ones: facets, or event attributes,
    and the `account_id` of an `account_ids` query (one series per account)."""
    keys = query.tag_attributes if query.mode == "events" else query.facets
    return (*keys, ACCOUNT_TAG) if query.account_ids else keys


def predicted_fields(nrql: str) -> list[Field] | None:
    """The fields an aggregate query's points carry, or None when one cannot be predicted."""
    fields: list[Field] = []
    for item in select_items(nrql):
        item_fields = _item_fields(item)
        if item_fields is None:
            return None
        fields += item_fields
    return fields


def _item_fields(item: SelectItem) -> list[Field] | None:
    function = (item.function or "").lower()
    key = item.alias or _result_key(item)
    if key is None:
        return None
    attribute = item.arguments[0] if item.arguments else ""
    aggregate = "sum" if function in _SUMMED or function == "rate" else "mean"
    # latest()/earliest() may be texts: last/first work on any field type
    aggregate = {"max": "max", "min": "min", "latest": "last", "earliest": "first"}.get(
        function, aggregate
    )
    unit = _unit(function, attribute)
    if function == "percentile" and len(item.arguments) > 1:
        return [Field(f"{key}.{_percentile_key(p)}", aggregate, unit) for p in item.arguments[1:]]
    return [Field(key, aggregate, unit)]


def _result_key(item: SelectItem) -> str | None:
    """New Relic's key for an unaliased item: 'count', 'average.duration', 'rate.count'."""
    function = item.function
    if function is None or not item.arguments:
        return None
    attribute = item.arguments[0]
    if function.lower() in _WRAPPING:
        inner = select_items(f"SELECT {attribute} FROM x")
        inner_key = _result_key(inner[0]) if len(inner) == 1 and not inner[0].alias else None
        return f"{function}.{inner_key}" if inner_key else None
    if function.lower() == "count" and attribute == "*":
        return "count"
    if not re.fullmatch(r"`[^`]+`|[\w.]+", attribute) or function.lower() == "apdex":
        return None
    return f"{function}.{attribute.strip('`')}"


def _unit(function: str, attribute: str) -> str | None:
    if function in _UNIT_BY_FUNCTION:
        return _UNIT_BY_FUNCTION[function]
    if function in _TIME_FUNCTIONS and "duration" in attribute.lower():
        return "s"  # New Relic's durations are in seconds
    return None


def _percentile_key(text: str) -> str:
    number = float(text)
    return str(int(number)) if number.is_integer() else repr(number)


# -- the archiver's own row ------------------------------------------------------------------


def _archiver_panels(queries: list[QueryDef], source: dict, y: int) -> list[dict]:
    databases = list(dict.fromkeys(t.database for q in queries for t in q.targets))
    from_ = ", ".join(_source(db, None, metrics.MEASUREMENT) for db in databases)
    # an account_ids query's jobs (and self-metrics points) are named `<name>@<account id>`
    names = "|".join(re.escape(q.name) + ("@[0-9]+" if q.account_ids else "") for q in queries)
    only = f'"query" =~ /^({names})$/ AND ' if names else ""

    def influxql(selection: str, where: str = "", by: str = ', "query", "target"') -> str:
        return (
            f"SELECT {selection} FROM {from_} WHERE {where}{only}$timeFilter "
            f"GROUP BY time($__interval){by} fill(none)"
        )

    lag = _archiver_panel(
        "Lag per query (stalled above 2 h)",
        influxql('max("lag_seconds") AS "lag_seconds"', "\"kind\" = 'incremental' AND "),
        source,
        {"h": PANEL_HEIGHT, "w": PANEL_WIDTH, "x": 0, "y": y},
        unit="s",
        threshold=STALL_SECONDS,
    )
    failures = _archiver_panel(
        "Failures",
        influxql('max("failed") AS "failed"'),
        source,
        {"h": PANEL_HEIGHT, "w": PANEL_WIDTH, "x": PANEL_WIDTH, "y": y},
        unit="short",
        threshold=1,
    )
    points = _archiver_panel(
        "Points per run",
        influxql('sum("points") AS "points"'),
        source,
        {"h": PANEL_HEIGHT, "w": PANEL_WIDTH, "x": 0, "y": y + PANEL_HEIGHT},
        unit="short",
    )
    requests = _archiver_panel(
        "New Relic requests",
        influxql(
            'sum("nr_requests") AS "nr_requests", sum("retries") AS "retries"', by=', "query"'
        ),
        source,
        {"h": PANEL_HEIGHT, "w": PANEL_WIDTH, "x": PANEL_WIDTH, "y": y + PANEL_HEIGHT},
        unit="short",
    )
    return [lag, failures, points, requests]


def _archiver_panel(
    title: str, influxql: str, source: dict, position: dict, *, unit: str, threshold: float = 0
) -> dict:
    defaults: dict[str, Any] = {
        "unit": unit,
        "custom": {"drawStyle": "line", "spanNulls": False},
    }
    if threshold:
        defaults["thresholds"] = {
            "mode": "absolute",
            "steps": [{"color": "green", "value": None}, {"color": "red", "value": threshold}],
        }
        defaults["custom"]["thresholdsStyle"] = {"mode": "line+area"}
    return {
        "type": "timeseries",
        "title": title,
        "datasource": source,
        "gridPos": position,
        "targets": [_target("A", source, influxql)],
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": _panel_options(),
    }


# -- template variables ----------------------------------------------------------------------


class _Variables:
    """One multi-value variable per (database, FACET tag), named after the tag."""

    def __init__(self, queries: list[QueryDef], source: dict) -> None:
        self._source = source
        self._measurements: dict[tuple[str, str], list[str]] = {}
        for query in queries:
            for target in query.targets:
                for tag in tag_keys(query):
                    found = self._measurements.setdefault((target.database, tag), [])
                    if query.measurement not in found:
                        found.append(query.measurement)
        self._names: dict[tuple[str, str], str] = {}
        taken: set[str] = set()
        for database, tag in self._measurements:
            name = _variable_name(tag)
            if name in taken:
                name = _variable_name(f"{tag}_{database}")
            while name in taken:
                name += "_"
            taken.add(name)
            self._names[(database, tag)] = name

    def name(self, database: str, tag: str) -> str:
        return self._names[(database, tag)]

    def definitions(self) -> list[dict]:
        variables = []
        for (database, tag), measurements in self._measurements.items():
            sources = ", ".join(_ident(m) for m in measurements)
            query = f"SHOW TAG VALUES ON {_ident(database)} FROM {sources} WITH KEY = {_ident(tag)}"
            variables.append(
                {
                    "type": "query",
                    "name": self._names[(database, tag)],
                    "label": tag,
                    "datasource": self._source,
                    "query": query,
                    "refresh": 1,  # on dashboard load
                    "multi": True,
                    "includeAll": True,
                    # All is a regex that also matches series without the tag (a null facet)
                    "allValue": ".*",
                    "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
                    "options": [],
                    "sort": 1,
                    "hide": 0,
                    "regex": "",
                    "skipUrlSync": False,
                }
            )
        return variables


def _variable_name(text: str) -> str:
    name = re.sub(r"\W+", "_", text, flags=re.ASCII).strip("_") or "tag"
    return name if not name[0].isdigit() else f"_{name}"


# -- small pieces ----------------------------------------------------------------------------


def _ident(name: str) -> str:
    """An InfluxQL double-quoted identifier."""
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _source(database: str, retention_policy: str | None, measurement: str) -> str:
    policy = _ident(retention_policy) if retention_policy else ""
    return f"{_ident(database)}.{policy}.{_ident(measurement)}"


def _target(ref: str, source: dict, influxql: str) -> dict:
    return {
        "refId": ref,
        "datasource": source,
        "query": influxql,
        "rawQuery": True,
        "resultFormat": "time_series",
    }


def _row(title: str, y: int) -> dict:
    return {
        "type": "row",
        "title": title,
        "collapsed": False,
        "gridPos": {"h": 1, "w": 24, "x": 0, "y": y},
        "panels": [],
    }


def _panel_options() -> dict:
    return {
        "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
        "tooltip": {"mode": "multi", "sort": "desc"},
    }


def _grafana_interval(interval: timedelta) -> str:
    """Grafana's minimum interval for a panel ('1m', '5m', '1h', '1d')."""
    seconds = int(interval.total_seconds())
    for size, unit in ((86400, "d"), (3600, "h"), (60, "m")):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"
