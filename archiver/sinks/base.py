"""The sink interface and what every sink shares: the types, error rules and URL cleaning.

A sink is wherever the points go: InfluxDB 1.x (`influx_v1`), InfluxDB 1.8+, 2.x and 3.x
through influxdb-client (`influx_client`), or a line-protocol file (`file`); `choose` picks
one per run. The runner needs `Sink`; `verify` also reads back and deletes (`ReadableSink`,
which both InfluxDB sinks implement with `readback`). The implementations import from here
and from the shared `influxql` and `readback` modules, never from each other.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol
from urllib.parse import urlsplit, urlunsplit

from archiver.errors import InfluxError

if TYPE_CHECKING:
    from archiver.verify.compare import Point

DEFAULT_RP = "autogen"
# Lines per write request (InfluxDB 1.x's /write; and the most lines a job writes at once).
# InfluxDB 1.x ingests best in requests of 5,000 to 10,000 lines; at 10,000 rather than 5,000
# the archiver spent 2-10% less CPU a point (bench, interleaved best of 3, 2026-11-29: µs a
# point a 2.84 -> 2.74, b 4.89 -> 4.80, e 17.8 -> 17.3, f 4.42 -> 4.00).
BATCH_SIZE = 10_000
DROPPED = re.compile(r"dropped=(\d+)")
FIELD_TYPE_CONFLICT = re.compile(
    r'input field "(?P<field>.*?)" on measurement "(?P<measurement>.*?)" '
    r"is type (?P<new>\w+), already exists as type (?P<old>\w+)"
)
INFLUXQL_DURATION = re.compile(r"(?:\d+(?:ns|u|µ|ms|s|m|h|d|w))+|INF", re.IGNORECASE)


Precision = Literal["s", "ms", "us", "ns"]  # of the timestamps in the lines


@dataclass(frozen=True)
class RetentionPolicy:
    name: str
    duration_seconds: int | None  # None = INF
    is_default: bool


@dataclass(frozen=True)
class WriteResult:
    lines: int
    dropped_beyond_retention: int
    requests: int
    retries: int


@dataclass(frozen=True)
class Series:
    """The series of one query: its measurement, static tags and every tag key it writes."""

    measurement: str
    static_tags: Mapping[str, str]  # as InfluxDB stores them
    tag_keys: frozenset[str]  # static and facet tag keys, as InfluxDB stores them

    def matches(self, tags: Mapping[str, str]) -> bool:
        present = {k: v for k, v in tags.items() if v}
        return present.keys() <= self.tag_keys and all(
            present.get(k) == v for k, v in self.static_tags.items()
        )


@dataclass(frozen=True)
class Deleted:
    deleted: list[Point]
    kept: list[tuple[Point, str]]  # with the reason it was not deleted


class Sink(Protocol):
    """What the runner needs from wherever the points go."""

    def ping(self) -> str: ...

    def ensure_target(
        self, database: str, retention_policy: str | None, retention_duration: str | None
    ) -> RetentionPolicy: ...

    def write(
        self,
        database: str,
        retention_policy: str | None,
        lines: Sequence[str],
        precision: Precision = "s",
    ) -> WriteResult:
        """Returns once every line is acknowledged. Called from several threads at once (the
        runner writes two groups of windows at a time): each call's lines are written whole."""
        ...

    def close(self) -> None: ...


class ReadableSink(Sink, Protocol):
    """A sink `verify` can read back from and delete in (both InfluxDB sinks)."""

    def existing_policy(self, database: str, name: str | None) -> RetentionPolicy | None: ...

    def read_points(
        self, database: str, retention_policy: str | None, series: Series, since: int, until: int
    ) -> list[Point]: ...

    def delete_points(
        self, database: str, retention_policy: str | None, series: Series, points: list[Point]
    ) -> Deleted: ...


def classify_bad_request(message: str, target: str) -> int:
    """A 400 from /write: points dropped as too old (a success), or an InfluxError."""
    dropped = DROPPED.search(message)
    if message.startswith("partial write") and "retention policy" in message and dropped:
        return int(dropped.group(1))
    conflict = FIELD_TYPE_CONFLICT.search(message)
    if conflict:
        raise InfluxError(
            f'field type conflict: field "{conflict["field"]}" on measurement '
            f'"{conflict["measurement"]}" is {conflict["new"]} here but already '
            f"{conflict['old']} in InfluxDB; a field keeps its type within a shard: write it "
            f"under another name or measurement, or drop the old series (InfluxDB: {message})"
        )
    if "unable to parse" in message:
        first, *others = message.splitlines()
        more = f" (and {len(others)} more bad lines)" if others else ""
        raise InfluxError(f"InfluxDB rejected line protocol for {target}: {first}{more}")
    raise InfluxError(f"InfluxDB refused the write to {target} (HTTP 400): {message}")


def check_retention_duration(retention_duration: str | None) -> None:
    """Only an InfluxQL duration may go into CREATE RETENTION POLICY (nothing else is injected)."""
    if retention_duration is not None and not INFLUXQL_DURATION.fullmatch(retention_duration):
        raise InfluxError(
            f"retention_duration {retention_duration!r} is not an InfluxQL duration "
            "such as 30d, 104w or INF"
        )


def without_userinfo(url: str) -> str:
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))
