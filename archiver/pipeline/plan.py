"""Planning, pure: which range each (query, target) exports and in which windows.

Every function takes `now` and what the state knows (the checkpoint, the backfill's finished
parts, the last window written) as arguments and asks nothing itself (dlt's incremental state
functions): `run`, `--dry-run`, `verify` and the bench plan with the same code. `facts` and
`dry_run` are the only readers of the state here, so that callers need not repeat them.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from archiver import windows
from archiver.errors import ConfigError
from archiver.queries import QueryDef, Target
from archiver.timeparse import parse_time, time_spec
from archiver.windows import Range, Window, iso

if TYPE_CHECKING:  # planning needs neither a database driver nor an HTTP client to import
    from archiver.sinks.base import RetentionPolicy
    from archiver.state.logged_windows import WindowCosts
    from archiver.state.store import State


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Backfill:
    """A backfill as the user asked for it.

    `since_spec`/`until_spec` say how (`7d`, or an ISO instant; `now` for no --until): the
    same command run again resumes its unfinished backfill, even with ages, whose instants
    move with the clock. Empty specs stand for the instants themselves.
    """

    since: datetime
    until: datetime | None = None
    since_spec: str = ""
    until_spec: str = ""

    @classmethod
    def parse(cls, since: str, until: str | None, now: datetime) -> Backfill:
        """From `--since`/`--until` text; ValueError for a time that cannot be read."""
        return cls(
            parse_time(since, now),
            parse_time(until, now) if until else None,
            time_spec(since, now),
            time_spec(until, now) if until else "now",
        )

    @property
    def request(self) -> tuple[str, str]:
        until = self.until_spec or (iso(self.until) if self.until else "now")
        return self.since_spec or iso(self.since), until


@dataclass
class WindowSizer:
    """Learns rows per bucket from each answer, so the next request stays small.

    `max_buckets` caps every window once New Relic refused a bigger one (QueryTooBig).
    """

    interval: timedelta
    rows_per_bucket: float | None = None
    max_buckets: int | None = None
    bytes_per_bucket: float | None = None  # of New Relic's JSON answers, when told

    @classmethod
    def resume(
        cls,
        interval: timedelta,
        last_window: tuple[datetime, datetime, int] | None,
        bucket_cap: int | None,
    ) -> WindowSizer:
        """Start from the last window this (query, target) wrote (since, until, points), if any."""
        sizer = cls(interval)
        if last_window:
            sizer.learn(Window(last_window[0], last_window[1]), last_window[2])
            sizer.max_buckets = bucket_cap
        return sizer

    def buckets(self, has_facets: bool, *, facet_limit: int = 0, left: int = 0) -> int:
        """The next window's buckets, at most.

        Before the first answer of a FACET query tells how many facets it has, a range of more
        than FIRST_FACET_BUCKETS buckets (`left` in the segment) starts with
        ROWS_PER_REQUEST / `facet_limit` buckets (the query's LIMIT, or LIMIT MAX: 4 buckets),
        so that its first answer is no bigger than the ones sized after it, even with 5,000
        facets; a shorter range (an hourly run's) is asked whole, in one request.
        """
        learned = windows.buckets_per_request(
            has_facets=has_facets, rows_per_bucket=self.rows_per_bucket
        )
        if has_facets and self.rows_per_bucket is None and facet_limit and left > learned:
            learned = max(1, min(learned, windows.ROWS_PER_REQUEST // facet_limit))
        return learned if self.max_buckets is None else min(learned, self.max_buckets)

    def learn(self, window: Window, rows: int, size: int | None = None) -> None:
        """From the answer for `window`: its rows, and the bytes of its JSON (`size`)."""
        buckets = max(1, window.buckets(self.interval))
        self.rows_per_bucket = rows / buckets
        if size is not None:
            self.bytes_per_bucket = size / buckets

    def expected_bytes(self, window: Window) -> float:
        """The JSON bytes New Relic's answer for `window` should take (0 before any answer)."""
        return (self.bytes_per_bucket or 0.0) * window.buckets(self.interval)

    def shrink(self, window: Window) -> int:
        """New Relic refused `window`: from now on at most half its buckets (at least 1)."""
        self.max_buckets = max(1, window.buckets(self.interval) // 2)
        return self.max_buckets


@dataclass(frozen=True)
class PlannedJob:
    query: QueryDef
    target: Target
    account_id: int
    segments: list[tuple[datetime, datetime]]
    skipped: list[str]
    range: tuple[datetime, datetime] | None = None  # the whole range a backfill asks for
    costs: WindowCosts | None = None  # what earlier windows of this job cost (dry runs only)

    @property
    def name(self) -> str:
        """The query's name in the state database (`<name>@<account>` for account_ids)."""
        return self.query.job_name(self.account_id)

    @property
    def seconds(self) -> float:
        return sum((until - since).total_seconds() for since, until in self.segments)


@dataclass(frozen=True)
class Facts:
    """What the state knows about one (query, target), as planning needs it."""

    checkpoint: datetime | None = None  # the incremental export's
    backfilled: list[tuple[datetime, datetime]] = field(default_factory=list)  # of this request


def account_for(query: QueryDef, default: int | None) -> int:
    account = query.accounts(default)[0]
    if account is None:
        raise ConfigError(
            f"{query.path}: query {query.name!r} has no account_id and NEW_RELIC_ACCOUNT_ID "
            "is not set"
        )
    return account


def plan(
    query: QueryDef,
    target: Target,
    account: int,
    backfill: Backfill | None,
    rp: RetentionPolicy | None,
    *,
    now: datetime,
    facts: Facts,
) -> PlannedJob:
    """The job of (query, target) for `account`, from the state's `facts` at `now`."""
    rp_duration = timedelta(seconds=rp.duration_seconds) if rp and rp.duration_seconds else None
    rng = job_range(query, target, backfill, now, rp_duration, facts.checkpoint)
    segments = [] if rng.empty else [(rng.since, rng.until)]
    if backfill is not None and segments:
        segments = windows.subtract(segments[0], facts.backfilled)
    return PlannedJob(
        query,
        target,
        account,
        segments,
        rng.skipped,
        (rng.since, max(rng.since, rng.until)) if backfill is not None else None,
    )


def job_range(
    query: QueryDef,
    target: Target,
    backfill: Backfill | None,
    now: datetime,
    rp_duration: timedelta | None,
    checkpoint: datetime | None,
) -> Range:
    """A backfill's range, or the incremental one from the checkpoint (or `start`)."""
    common = {
        "now": now,
        # events have no buckets: their ranges are aligned to the second only
        "interval": timedelta(seconds=1) if query.mode == "events" else target.interval,
        "lag": query.lag,
        "nr_retention": query.nr_retention,
        "rp_duration": rp_duration,
    }
    if backfill is not None:
        return windows.backfill_range(since=backfill.since, until=backfill.until, **common)
    return windows.incremental_range(
        checkpoint=checkpoint, start=query.start, lookback=query.lookback, **common
    )


def windows_of(job: PlannedJob, sizer: WindowSizer) -> Iterator[Window]:
    """The job's windows; each one's size follows the rows per bucket seen so far.

    An events query has no buckets: its windows are one `interval` long.
    """
    query, interval = job.query, job.target.interval
    for since, until in job.segments:
        while since < until:
            events_mode = query.mode == "events"
            buckets = 1 if events_mode else window_buckets(sizer, query, since, until, interval)
            window = windows.next_window(since, until, interval, buckets)
            yield window
            since = window.until


def window_buckets(
    sizer: WindowSizer, query: QueryDef, since: datetime, until: datetime, interval: timedelta
) -> int:
    """The buckets of the TIMESERIES window from `since` (`WindowSizer.buckets`)."""
    left = Window(since, until).buckets(interval)
    return sizer.buckets(bool(query.facets), facet_limit=query.facet_limit, left=left)


# -- what the state knows --------------------------------------------------------------------


def facts(state: State, name: str, target: str, backfill: Backfill | None) -> Facts:
    if backfill is not None:
        return Facts(backfilled=state.backfill_done(name, target, backfill.request))
    return Facts(checkpoint=state.checkpoint(name, target))


def sizer_for(state: State, job: PlannedJob) -> WindowSizer:
    """The sizer of a job, starting from the last window its (query, target) wrote."""
    name, key = job.name, job.target.key
    last = state.last_window(name, key)
    cap = state.bucket_cap(name, key) if last else None
    return WindowSizer.resume(job.target.interval, last, cap)


def dry_run(
    state: State,
    queries: list[QueryDef],
    backfill: Backfill | None,
    default_account: int | None,
    now: datetime,
) -> Iterator[tuple[PlannedJob, list[Window]]]:
    """The plan without touching New Relic or InfluxDB (retention policies are not read).

    Each job carries what its logged windows cost, for an estimate of this plan's cost.
    """
    for query in queries:
        for account in query.accounts(default_account):
            for target in query.targets:
                account = account if account is not None else account_for(query, default_account)
                name = query.job_name(account)
                job = plan(
                    query, target, account, backfill, None,
                    now=now, facts=facts(state, name, target.key, backfill),
                )  # fmt: skip
                job = replace(job, costs=state.window_costs(name, target.key))
                yield job, list(windows_of(job, sizer_for(state, job)))
