"""What `verify` checks of one (query, target): its range, its series and a sample of windows.

The range is what was exported and New Relic still holds: from the query's `start` or the
oldest window the state logged, whichever is older, to the checkpoint, narrowed to what New
Relic and the retention policy keep, and by `--since` / `--until`; never past the checkpoint.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from datetime import datetime, timedelta

from archiver import queries, windows
from archiver.lineprotocol import escape_key, unescape_key
from archiver.pipeline.plan import PlannedJob, sizer_for
from archiver.sinks.base import RetentionPolicy, Series
from archiver.state.store import State
from archiver.timeparse import influxdb_duration_seconds
from archiver.windows import Window


def series_of(query: queries.QueryDef, account: int | None = None) -> Series:
    """Static tags and tag keys of the query's points for `account`, as InfluxDB stores them."""

    def stored(text: str) -> str:
        return unescape_key(escape_key(text))

    tags = query.job_tags(account)  # an `account_ids` file adds account_id=<id>
    static = {stored(k): stored(str(v)) for k, v in tags.items() if stored(str(v))}
    dynamic = {stored(name) for name in (query.tag_attributes or query.facets)}
    fixed = {k: v for k, v in static.items() if k not in dynamic}  # an attribute wins (events)
    return Series(stored(query.measurement), fixed, frozenset(static.keys() | dynamic))


def verify_range(
    state: State,
    query: queries.QueryDef,
    target: queries.Target,
    policy: RetentionPolicy | None,
    name: str,
    *,
    now: Callable[[], datetime],
    since: datetime | None,
    until: datetime | None,
) -> windows.Range | None:
    """What was exported and New Relic still holds; None when nothing was exported yet."""
    checkpoint = state.checkpoint(name, target.key)
    if checkpoint is None:
        return None
    at = now()
    interval = timedelta(seconds=1) if query.mode == "events" else target.interval
    # What was exported begins at `start` or at the oldest window logged (a backfill may
    # reach further back); --since only narrows it.
    logged = [s for s, _ in state.windows_written(name, target.key)]
    starts = [*logged, *([query.start] if query.start is not None else [])]
    begin = windows.floor(min(starts, default=at - query.nr_retention), interval)
    if since is not None:
        begin = max(begin, windows.floor(since, interval))
    end = checkpoint
    if until is not None:
        end = min(end, windows.ceil(until, interval))
    if policy is not None:
        seconds = policy.duration_seconds
    else:
        seconds = influxdb_duration_seconds(target.retention_duration or "INF")
    rng = windows.clamp(
        begin,
        end,
        now=at,
        interval=interval,
        nr_retention=query.nr_retention,
        rp_duration=timedelta(seconds=seconds) if seconds else None,
    )
    return windows.Range(rng.since, max(rng.since, rng.until), rng.skipped)


class Sampler:
    """N of the windows `run` would cut (at the size it uses now), chosen at random; one
    seeded generator shared by the verify's threads, so a `--seed` repeats the sample."""

    def __init__(self, state: State, count: int | None, seed: int | None) -> None:
        self.state = state
        self.count = count
        self._random = random.Random(seed)
        self._lock = threading.Lock()

    def sample(self, job: PlannedJob) -> list[Window]:
        (since, until), query = job.segments[0], job.query
        if query.mode == "events":
            buckets = 1
        else:
            buckets = sizer_for(self.state, job).buckets(bool(query.facets))
        planned = list(windows.plan(since, until, job.target.interval, buckets))
        with self._lock:
            chosen = self._random.sample(planned, min(self.count or 0, len(planned)))
        return sorted(chosen, key=lambda window: window.since)
