"""Window arithmetic: pure functions of (checkpoint, settings, now). No I/O here.

Every instant is aligned to the target's interval in UTC (epoch-aligned buckets), and every
range is half-open `[since, until)`, so two runs over the same range ask New Relic for the same
buckets and produce the same timestamps.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from archiver.timeparse import as_utc, compact_duration, format_duration

MAX_BUCKETS = 366  # New Relic: "TIMESERIES supports a maximum of 366 buckets"
ROWS_PER_REQUEST = 20_000  # keep each answer small: facets × buckets stays under this
FIRST_FACET_BUCKETS = 60  # before the first answer tells how many facets a query has

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Window:
    since: datetime
    until: datetime

    def buckets(self, interval: timedelta) -> int:
        return (self.until - self.since) // interval

    def __str__(self) -> str:
        return f"[{iso(self.since)}, {iso(self.until)})"


@dataclass(frozen=True)
class Range:
    """What one job will export, and what it had to leave out (said in the log)."""

    since: datetime
    until: datetime
    skipped: list[str] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return self.since >= self.until


def iso(t: datetime) -> str:
    """`2026-11-26T03:50:00Z`: whole seconds (a fraction is cut, never shown)."""
    return t.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def floor(t: datetime, interval: timedelta) -> datetime:
    return t - (t - EPOCH) % interval


def ceil(t: datetime, interval: timedelta) -> datetime:
    floored = floor(t, interval)
    return floored if floored == t else floored + interval


def epoch_ms(moment: datetime) -> int:
    return (as_utc(moment) - EPOCH) // timedelta(milliseconds=1)


def aligned_buckets(since: datetime, until: datetime, interval: timedelta) -> int:
    """How many buckets of `interval` the window [since, until) holds, as New Relic counts them.

    Both ends must be aligned to the interval in whole epoch milliseconds (as SINCE and UNTIL
    are sent) and the window must hold 1 to MAX_BUCKETS buckets: New Relic would shift or
    refuse anything else, so it is a bug in the caller and raises ValueError.
    """
    since_ms, until_ms = epoch_ms(since), epoch_ms(until)
    step_ms = interval // timedelta(milliseconds=1)
    if step_ms <= 0 or since_ms % step_ms or until_ms % step_ms:
        raise ValueError(
            f"window {as_utc(since):%Y-%m-%dT%H:%M:%SZ}..{as_utc(until):%Y-%m-%dT%H:%M:%SZ}"
            f" is not aligned to the interval of {format_duration(interval)}"
        )
    buckets = (until_ms - since_ms) // step_ms
    if not 1 <= buckets <= MAX_BUCKETS:
        raise ValueError(f"a window must hold 1 to {MAX_BUCKETS} buckets, not {buckets}")
    return buckets


def oldest_exportable(
    now: datetime,
    interval: timedelta,
    nr_retention: timedelta,
    rp_duration: timedelta | None,
) -> tuple[datetime, str]:
    """The first bucket start that both New Relic still holds and the retention policy keeps.

    Returns it with the name of the limit that decided it. Buckets that begin before it are
    never requested: for time it no longer holds, New Relic answers zeros, not "no data".
    """
    oldest, reason = (
        ceil(now - nr_retention, interval),
        f"New Relic keeps {compact_duration(nr_retention)}",
    )
    if rp_duration is not None:
        rp_oldest = ceil(now - rp_duration, interval)
        if rp_oldest > oldest:
            oldest, reason = (
                rp_oldest,
                f"the retention policy keeps {compact_duration(rp_duration)}",
            )
    return oldest, reason


def clamp(
    since: datetime,
    until: datetime,
    *,
    now: datetime,
    interval: timedelta,
    nr_retention: timedelta,
    rp_duration: timedelta | None,
) -> Range:
    oldest, reason = oldest_exportable(now, interval, nr_retention, rp_duration)
    skipped = []
    if since < oldest:
        skipped.append(f"skipped {Window(since, min(oldest, until))}: older than {reason}")
        since = oldest
    return Range(since, until, skipped)


def incremental_range(
    *,
    checkpoint: datetime | None,
    start: datetime | None,
    now: datetime,
    interval: timedelta,
    lag: timedelta,
    lookback: timedelta,
    nr_retention: timedelta,
    rp_duration: timedelta | None,
) -> Range:
    """From the checkpoint (minus `lookback`) to floor(now − lag).

    A query without a checkpoint starts at `start`, by default one day before now.
    """
    until = floor(now - lag, interval)
    if checkpoint is not None:
        since = floor(checkpoint - lookback, interval)
    else:
        since = floor(start if start is not None else now - timedelta(days=1), interval)
    return clamp(
        since, until, now=now, interval=interval, nr_retention=nr_retention, rp_duration=rp_duration
    )


def backfill_range(
    *,
    since: datetime,
    until: datetime | None,
    now: datetime,
    interval: timedelta,
    lag: timedelta,
    nr_retention: timedelta,
    rp_duration: timedelta | None,
) -> Range:
    """`--since/--until` aligned outward to whole buckets, never newer than floor(now − lag)."""
    newest = floor(now - lag, interval)
    end = newest if until is None else min(ceil(until, interval), newest)
    return clamp(
        floor(since, interval),
        end,
        now=now,
        interval=interval,
        nr_retention=nr_retention,
        rp_duration=rp_duration,
    )


def subtract(
    rng: tuple[datetime, datetime], done: list[tuple[datetime, datetime]]
) -> list[tuple[datetime, datetime]]:
    """The parts of `rng` not covered by the `done` segments (used to resume a backfill)."""
    remaining = [rng]
    for done_since, done_until in sorted(done):
        next_remaining = []
        for since, until in remaining:
            if done_until <= since or done_since >= until:
                next_remaining.append((since, until))
                continue
            if since < done_since:
                next_remaining.append((since, done_since))
            if done_until < until:
                next_remaining.append((done_until, until))
        remaining = next_remaining
    return remaining


def next_window(since: datetime, until: datetime, interval: timedelta, buckets: int) -> Window:
    """The next request's window: whole buckets, at most `buckets` of them, ending by `until`."""
    buckets = max(1, min(buckets, MAX_BUCKETS))
    return Window(since, min(since + buckets * interval, until))


def plan(since: datetime, until: datetime, interval: timedelta, buckets: int) -> Iterator[Window]:
    """Fixed-size windows over a range (the runner adapts `buckets` as it learns; see below)."""
    while since < until:
        window = next_window(since, until, interval, buckets)
        yield window
        since = window.until


def buckets_per_request(*, has_facets: bool, rows_per_bucket: float | None) -> int:
    """How many buckets the next request may cover, from the rows per bucket seen so far.

    Without FACET a bucket is one row, so the only limit is New Relic's 366. With FACET every
    bucket brings one row per facet value: keep facets × buckets under ROWS_PER_REQUEST.
    """
    if not has_facets:
        return MAX_BUCKETS
    if rows_per_bucket is None:
        return FIRST_FACET_BUCKETS
    return max(1, min(MAX_BUCKETS, int(ROWS_PER_REQUEST // max(rows_per_bucket, 1.0))))
