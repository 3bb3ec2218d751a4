"""Reading points back from InfluxDB 1.x, and deleting some, with InfluxQL (for `verify`).

Both InfluxDB sinks' `read_points` / `delete_points` come here with an `InfluxQLClient`
(`archiver.sinks.influxql`); the file sink has nothing to read back.

Facet values are data anyone can send to New Relic, so every value in a statement is an
InfluxQL string literal (`\\` and `'` escaped) and every name a quoted identifier: a tag value
like `x' OR "host" =~ /.*/ OR 'y` selects and deletes only its own series.

InfluxDB 1.x `DELETE` (checked against influxd 1.6.7) takes no retention policy
(`DELETE FROM "rp"."m"` is a parse error: "retention policy not supported"), cannot filter on
fields, and deletes in every retention policy of the database; a tag compared with `''` matches
series without that tag. So one point is deleted with one statement naming every tag key the
measurement has (the point's value, or `''`) and its exact time, and before it runs the other
retention policies are read: a point that another policy holds at the same series and time is
never deleted (it is reported as kept), since the statement would delete that one too.

InfluxDB 2.x and 3.x answer the same InfluxQL on `/query` (2.x through the DBRP mapping);
2.x deletes through its delete API instead (`archiver.sinks.influx_client`), with
`delete_predicate`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime

from archiver.sinks.base import Deleted, Series
from archiver.sinks.influxql import InfluxQLClient, quote_identifier
from archiver.verify.compare import Point, Value, tag_set

DELETES_PER_REQUEST = 200
FIELD_TYPES = {"float": float, "integer": int, "string": str, "boolean": bool}


def quote_string(value: str) -> str:
    """An InfluxQL string literal."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def source(database: str, retention_policy: str | None, measurement: str) -> str:
    rp = quote_identifier(retention_policy) if retention_policy else ""
    return f"{quote_identifier(database)}.{rp}.{quote_identifier(measurement)}"


def select_statement(
    database: str, retention_policy: str | None, series: Series, since_ns: int, until_ns: int
) -> str:
    conditions = [
        f"{quote_identifier(k)} = {quote_string(v)}" for k, v in series.static_tags.items()
    ]
    conditions += [f"time >= {since_ns}", f"time < {until_ns}"]
    return (
        f"SELECT * FROM {source(database, retention_policy, series.measurement)} "
        f"WHERE {' AND '.join(conditions)} GROUP BY *"
    )


def delete_statement(measurement: str, tag_keys: Iterable[str], point: Point) -> str:
    tags = dict(point.tags)
    conditions = [
        f"{quote_identifier(key)} = {quote_string(tags.get(key, ''))}"
        for key in sorted(set(tag_keys) | tags.keys())
    ]
    conditions.append(f"time = {point.time_ns}")
    return f"DELETE FROM {quote_identifier(measurement)} WHERE {' AND '.join(conditions)}"


def series_at(
    sink: InfluxQLClient,
    database: str,
    retention_policy: str | None,
    measurement: str,
    point: Point,
) -> list[str]:
    """Other series with (at least) the point's tags that have a point at its time."""
    conditions = [f"{quote_identifier(k)} = {quote_string(v)}" for k, v in point.tags]
    conditions.append(f"time = {point.time_ns}")
    statement = (
        f"SELECT * FROM {source(database, retention_policy, measurement)} "
        f"WHERE {' AND '.join(conditions)} GROUP BY *"
    )
    found = []
    for one in sink.series_rows(statement, database):
        tags = tag_set(one.get("tags") or {})
        if tags != point.tags:
            found.append(",".join(f"{k}={v}" for k, v in tags))
    return found


def delete_predicate(measurement: str, point: Point) -> str:
    """InfluxDB 2.x's delete predicate for the point's series (names and values quoted)."""
    parts = [f"_measurement={quote_identifier(measurement)}"]
    parts += [f"{quote_identifier(k)}={quote_identifier(v)}" for k, v in point.tags]
    return " AND ".join(parts)


def rfc3339_ns(time_ns: int) -> str:
    seconds, ns = divmod(time_ns, 1_000_000_000)
    return f"{datetime.fromtimestamp(seconds, UTC):%Y-%m-%dT%H:%M:%S}.{ns:09d}Z"


def typed(value: object, field_type: str | None) -> Value:
    """A JSON value as the type InfluxDB keeps (JSON writes the float 14.0 as 14)."""
    kind = FIELD_TYPES.get(field_type or "")
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value  # type: ignore[return-value]


def field_types(sink: InfluxQLClient, database: str, rp: str | None, measurement: str) -> dict:
    rows = sink.query(f"SHOW FIELD KEYS FROM {source(database, rp, measurement)}", database)
    return {row["fieldKey"]: row["fieldType"] for row in rows}


def read_points(
    sink: InfluxQLClient,
    database: str,
    retention_policy: str | None,
    series: Series,
    since_ns: int,
    until_ns: int,
) -> list[Point]:
    """The points of `series` in [since_ns, until_ns), typed as InfluxDB keeps them."""
    statement = select_statement(database, retention_policy, series, since_ns, until_ns)
    answered = sink.series_rows(statement, database)
    if not answered:
        return []
    types = field_types(sink, database, retention_policy, series.measurement)
    points = []
    for one in answered:
        tags = one.get("tags") or {}
        if not series.matches(tags):
            continue
        columns = one["columns"]
        for values in one.get("values", []):
            row = dict(zip(columns, values, strict=True))
            time_ns = row.pop("time")
            fields = {k: typed(v, types.get(k)) for k, v in row.items() if v is not None}
            if fields:
                points.append(Point(series.measurement, tag_set(tags), time_ns, fields))
    return points


def delete_points(
    sink: InfluxQLClient,
    database: str,
    retention_policy: str | None,
    series: Series,
    points: Sequence[Point],
) -> Deleted:
    """Delete exactly these points of `series` (see the module docstring for what is kept)."""
    if not points:
        return Deleted([], [])
    policies = sink.retention_policies(database)
    target = next(
        (
            p.name
            for p in policies
            if p.name == retention_policy or (not retention_policy and p.is_default)
        ),
        None,
    )
    tag_keys: set[str] = set()
    for policy in policies:
        rows = sink.query(
            f"SHOW TAG KEYS FROM {source(database, policy.name, series.measurement)}", database
        )
        tag_keys.update(row["tagKey"] for row in rows)
    since_ns = min(p.time_ns for p in points)
    until_ns = max(p.time_ns for p in points) + 1
    elsewhere: dict[tuple, str] = {}
    for policy in policies:
        if policy.name == target:
            continue
        for held in read_points(sink, database, policy.name, series, since_ns, until_ns):
            elsewhere.setdefault(held.key, policy.name)
    deleted, kept, statements = [], [], []
    for point in points:
        other = elsewhere.get(point.key)
        if other is not None:
            kept.append(
                (
                    point,
                    f'retention policy "{other}" holds a point at the same series and time, and '
                    "InfluxDB 1.x DELETE cannot be restricted to one retention policy",
                )
            )
            continue
        statements.append(delete_statement(series.measurement, tag_keys, point))
        deleted.append(point)
    for start in range(0, len(statements), DELETES_PER_REQUEST):
        sink.query("; ".join(statements[start : start + DELETES_PER_REQUEST]), database)
    return Deleted(deleted, kept)
