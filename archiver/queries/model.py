"""The queries as the rest of the archiver sees them: `QueryDef` and its `Target`s.

A `QueryDef` is one query file, validated (`schema.py`) with every default applied. It knows
what its NRQL says (facets, LIMIT, the sample counts sent with percentiles) and builds the
exact NRQL sent for a window; the window arithmetic itself is `archiver/windows.py`'s.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, computed_field

from archiver.queries.nrql import NrqlShape, analyse_nrql, facet_limit
from archiver.queries.samples import SampleCounts, SampleGuard, sample_counts
from archiver.timeparse import nrql_timeseries
from archiver.windows import aligned_buckets, epoch_ms

DEFAULT_LAG = timedelta(minutes=5)
DEFAULT_NR_RETENTION = timedelta(days=8)
DEFAULT_MAX_SERIES = 10_000
Mode = Literal["aggregate", "events"]
ACCOUNT_TAG = "account_id"  # the tag an `account_ids` file adds to every point
OTHER_TAG_VALUE = "__other__"  # the facet tags of otherResult's points (`other: true`)


class Target(BaseModel, frozen=True):
    """One retention policy a query feeds, at one TIMESERIES interval."""

    database: str
    retention_policy: str | None  # None: the database's default retention policy
    interval: timedelta
    retention_duration: str | None = None  # InfluxQL literal ("104w"): create the RP if missing

    @property
    def key(self) -> str:
        """Stable id of the target within its query, used for checkpoints: 'db.rp' or 'db'."""
        if self.retention_policy is None:
            return self.database
        return f"{self.database}.{self.retention_policy}"


class QueryDef(BaseModel, frozen=True):
    """One query file, validated, with every default applied."""

    name: str
    path: Path
    nrql: str  # as written, stripped
    measurement: str
    targets: tuple[Target, ...] = Field(min_length=1)
    lag: timedelta = DEFAULT_LAG
    lookback: timedelta = timedelta(0)  # re-exported before the checkpoint (late data)
    start: datetime | None = None  # UTC
    account_id: int | None = None
    account_ids: tuple[int, ...] = ()  # one job per account, each tagged account_id=<id>
    tags: dict[str, str] = Field(default_factory=dict)
    nr_retention: timedelta = DEFAULT_NR_RETENTION
    max_series: int = DEFAULT_MAX_SERIES
    description: str | None = None
    mode: Mode = "aggregate"
    tag_attributes: tuple[str, ...] = ()  # events mode: attributes that become tags
    other: bool = False  # archive otherResult (facets beyond LIMIT) under OTHER_TAG_VALUE

    def __hash__(self) -> int:  # tags is a dict: hash by identity of the file instead
        return hash((self.name, self.path))

    @cached_property
    def _shape(self) -> NrqlShape:
        return analyse_nrql(self.nrql)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def facets(self) -> tuple[str, ...]:
        """FACET attribute names in FACET order, backticks removed (the alias when given)."""
        return self._shape.facets

    @computed_field  # type: ignore[prop-decorator]
    @property
    def has_limit(self) -> bool:
        """The nrql has its own LIMIT clause."""
        return self._shape.has_limit

    @cached_property
    def _counted(self) -> SampleCounts:
        return sample_counts(self._shape.sendable)

    @property
    def sample_guards(self) -> tuple[SampleGuard, ...]:
        """The helper counts sent with the percentiles, and the fields each one vouches for."""
        return () if self.mode == "events" else self._counted.guards

    @cached_property
    def facet_limit(self) -> int:
        """How many facets New Relic answers at most: the nrql's LIMIT, else LIMIT MAX (worked
        out once: it scans the NRQL, and every window asks it; bench row e: 0.085 ms each,
        twice a window)."""
        return facet_limit(self._shape.sendable)

    def accounts(self, default: int | None) -> tuple[int | None, ...]:
        """The accounts this query runs against: `account_ids`, else `account_id` or `default`."""
        return self.account_ids or (self.account_id or default,)

    def job_name(self, account_id: int | None) -> str:
        """The name this query's checkpoints, backfill progress, leases and run log go by.

        The query name; for an `account_ids` file `<name>@<account id>`. A query name never
        holds '@', so a multi-account key can never be a single-account file's key.
        """
        return f"{self.name}@{account_id}" if self.account_ids else self.name

    def job_tags(self, account_id: int | None) -> dict[str, str]:
        """The static tags of every point; an `account_ids` file adds `account_id=<id>`."""
        if not self.account_ids:
            return self.tags
        return {**self.tags, ACCOUNT_TAG: str(account_id)}

    def nrql_for(self, since: datetime, until: datetime, interval: timedelta) -> str:
        """The exact NRQL sent for the half-open window [since, until) at this interval.

        The window must be aligned to the interval and hold 1 to 366 buckets: anything else
        is a bug in the caller, so `windows.aligned_buckets` raises ValueError rather than
        letting a shifted query be sent.
        """
        if self.mode == "events":  # raw events: any window, split while New Relic caps it
            return events_nrql(self._shape.sendable, since, until)
        aligned_buckets(since, until, interval)
        limit = " LIMIT MAX" if self.facets and not self.has_limit else ""
        return (
            f"{self._counted.nrql}{limit} SINCE {epoch_ms(since)} UNTIL {epoch_ms(until)}"
            f" TIMESERIES {nrql_timeseries(interval)}"
        )


def events_nrql(nrql: str, since: datetime, until: datetime) -> str:
    """The query file's NRQL (which has no LIMIT) for the half-open window [since, until)."""
    return f"{nrql.strip()} LIMIT MAX SINCE {epoch_ms(since)} UNTIL {epoch_ms(until)}"
