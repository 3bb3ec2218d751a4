"""The rows of the bench matrix: one query shape each, as a query file and a time span.

(a)–(g) are the shapes of issue 16; `live` is (a) over 30 days with answers computed by the
fake while the archiver runs (its CPU then competes with the archiver's), which is also the
memory figure: its peak RSS against (a)'s 7 days.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta

MINUTE = timedelta(minutes=1)
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
LATENCY_SECONDS = 0.3  # row (g)

A_NRQL = "SELECT average(duration), count(*) FROM Bench FACET name"
B_NRQL = "SELECT average(duration), count(*) FROM BenchEscaped FACET appName, host"


@dataclass(frozen=True)
class Shape:
    key: str
    title: str
    query: Mapping[str, object]  # the query file, without name, measurement and database
    span: timedelta  # the backfill's length
    short_span: timedelta  # the same in `--short` mode
    latency: float = 0.0  # seconds the fake waits before each answer
    live: bool = False  # answers computed by the fake during the run
    # the span whose lines measure the limit, when not `span` (the live row's 30 days would
    # take the bench minutes to compute; the rate of the same shape over 7 days is the limit)
    limit_span: timedelta | None = None
    short_limit_span: timedelta | None = None

    def query_file(self, database: str) -> dict[str, object]:
        return {
            "nrql": "",
            "measurement": f"bench_{self.key}",
            "interval": "1 minute",
            "nr_retention": "31d",
            **self.query,
            "database": database,
        }


SHAPES = (
    Shape("a", "1 facet x 100 plain values, 2 aggregates", {"nrql": A_NRQL}, 7 * DAY, 30 * MINUTE),
    Shape(
        "b",
        "2 facets x 100 values needing escaping, average + count",
        {"nrql": B_NRQL},
        2 * DAY,
        30 * MINUTE,
    ),
    Shape(
        "c",
        "3 facets x 100 values, 5 aggregates incl. percentile(x, 50, 95, 99)",
        {
            "nrql": "SELECT average(duration), min(duration), max(duration), count(*), "
            "percentile(duration, 50, 95, 99) FROM BenchEscaped FACET appName, host, name"
        },
        2 * DAY,
        30 * MINUTE,
    ),
    Shape(
        "d",
        "5,000 facets (LIMIT MAX) at 1 minute",
        {"nrql": "SELECT average(duration), count(*) FROM Bench5000 FACET name"},
        3 * HOUR,  # the first window is 60 buckets (the runner's guess), the next ones 4
        5 * MINUTE,
    ),
    Shape(
        "e",
        "no facet, 10 aggregates",
        {
            "nrql": "SELECT count(*), average(duration), min(duration), max(duration), "
            "sum(duration), latest(duration), uniqueCount(name), "
            "average(databaseCallCount), max(databaseCallCount), sum(databaseCallCount) "
            "FROM Bench"
        },
        30 * DAY,
        6 * HOUR,
    ),
    Shape(
        "f",
        "mode: events, 1-minute windows split at 5,000 rows (~6,000 events a minute)",
        {
            "nrql": "SELECT duration, name, appName, host FROM Busy100Transaction",
            "mode": "events",
            "tag_attributes": ["appName", "host"],
        },
        HOUR,
        2 * MINUTE,
    ),
    Shape(
        "g",
        f"(b) with {LATENCY_SECONDS * 1000:.0f} ms answer latency",
        {"nrql": B_NRQL},
        2 * DAY,
        30 * MINUTE,
        latency=LATENCY_SECONDS,
    ),
    Shape(
        "live",
        "(a) over 30 days, live answers (fake's CPU included)",
        {"nrql": A_NRQL},
        30 * DAY,
        2 * HOUR,
        live=True,
        limit_span=7 * DAY,
        short_limit_span=30 * MINUTE,
    ),
)
KEYS = tuple(shape.key for shape in SHAPES)


def select(keys: str | None) -> list[Shape]:
    """The shapes named in `keys` ("b,g"), in matrix order; every shape for None."""
    if not keys:
        return list(SHAPES)
    wanted = [key.strip() for key in keys.split(",") if key.strip()]
    unknown = [key for key in wanted if key not in KEYS]
    if unknown:
        raise ValueError(f"--rows: unknown row {', '.join(unknown)}; rows are {', '.join(KEYS)}")
    return [shape for shape in SHAPES if shape.key in wanted]
