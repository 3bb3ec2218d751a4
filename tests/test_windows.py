import re
from datetime import UTC, datetime, timedelta

import pytest

from archiver import windows
from archiver.windows import Window

MIN = timedelta(minutes=1)
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)


def t(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.mark.parametrize(
    ("moment", "interval", "floored", "ceiled"),
    [
        pytest.param(
            "2026-11-26 10:07:31", MIN, "2026-11-26 10:07:00", "2026-11-26 10:08:00", id="1m"
        ),
        pytest.param(
            "2026-11-26 10:07:00",
            MIN,
            "2026-11-26 10:07:00",
            "2026-11-26 10:07:00",
            id="1m-aligned",
        ),
        pytest.param(
            "2026-11-26 10:07:31", 5 * MIN, "2026-11-26 10:05:00", "2026-11-26 10:10:00", id="5m"
        ),
        pytest.param(
            "2026-11-26 10:07:31", HOUR, "2026-11-26 10:00:00", "2026-11-26 11:00:00", id="1h"
        ),
        pytest.param(
            "2026-11-26 10:07:31", DAY, "2026-11-26 00:00:00", "2026-11-27 00:00:00", id="1d-utc"
        ),
    ],
)
def test_floor_and_ceil_align_to_the_interval_in_utc(moment, interval, floored, ceiled):
    assert windows.floor(t(moment), interval) == t(floored)
    assert windows.ceil(t(moment), interval) == t(ceiled)


NOW = t("2026-11-26 10:07:31")


@pytest.mark.parametrize(
    ("checkpoint", "start", "lag", "lookback", "since", "until"),
    [
        pytest.param(
            None,
            None,
            5 * MIN,
            timedelta(0),
            "2026-11-25 10:07:00",
            "2026-11-26 10:02:00",
            id="first-run-one-day-back",
        ),
        pytest.param(
            None,
            "2026-11-26 08:00:30",
            5 * MIN,
            timedelta(0),
            "2026-11-26 08:00:00",
            "2026-11-26 10:02:00",
            id="first-run-start",
        ),
        pytest.param(
            "2026-11-26 09:00:00",
            None,
            5 * MIN,
            timedelta(0),
            "2026-11-26 09:00:00",
            "2026-11-26 10:02:00",
            id="from-checkpoint",
        ),
        pytest.param(
            "2026-11-26 09:00:00",
            None,
            5 * MIN,
            15 * MIN,
            "2026-11-26 08:45:00",
            "2026-11-26 10:02:00",
            id="lookback",
        ),
        pytest.param(
            "2026-11-26 10:02:00",
            None,
            5 * MIN,
            timedelta(0),
            "2026-11-26 10:02:00",
            "2026-11-26 10:02:00",
            id="up-to-date",
        ),
        pytest.param(
            "2026-11-26 09:00:00",
            None,
            timedelta(0),
            timedelta(0),
            "2026-11-26 09:00:00",
            "2026-11-26 10:07:00",
            id="no-lag",
        ),
    ],
)
def test_incremental_range(checkpoint, start, lag, lookback, since, until):
    rng = windows.incremental_range(
        checkpoint=t(checkpoint) if checkpoint else None,
        start=t(start) if start else None,
        now=NOW,
        interval=MIN,
        lag=lag,
        lookback=lookback,
        nr_retention=timedelta(days=8),
        rp_duration=None,
    )
    assert (rng.since, rng.until) == (t(since), t(until))
    assert not rng.skipped


def test_range_is_narrowed_to_new_relic_retention_and_says_so():
    rng = windows.backfill_range(
        since=NOW - timedelta(days=10),
        until=None,
        now=NOW,
        interval=MIN,
        lag=5 * MIN,
        nr_retention=timedelta(days=8),
        rp_duration=None,
    )
    assert rng.since == t("2026-11-18 10:08:00")  # the first whole bucket New Relic still holds
    assert "older than New Relic keeps 8d" in rng.skipped[0]


def test_range_is_narrowed_to_the_retention_policy_when_it_is_shorter():
    rng = windows.backfill_range(
        since=NOW - timedelta(days=10),
        until=None,
        now=NOW,
        interval=MIN,
        lag=5 * MIN,
        nr_retention=timedelta(days=8),
        rp_duration=HOUR,
    )
    assert (rng.since, rng.until) == (t("2026-11-26 09:08:00"), t("2026-11-26 10:02:00"))
    assert "retention policy keeps 1h" in rng.skipped[0]


def test_backfill_until_is_never_newer_than_now_minus_lag():
    rng = windows.backfill_range(
        since=t("2026-11-26 09:00:00"),
        until=t("2026-11-27 00:00:00"),
        now=NOW,
        interval=MIN,
        lag=5 * MIN,
        nr_retention=timedelta(days=8),
        rp_duration=None,
    )
    assert rng.until == t("2026-11-26 10:02:00")


@pytest.mark.parametrize(
    ("buckets", "expected"),
    [
        pytest.param(366, [("00:00", "06:06"), ("06:06", "10:00")], id="max-buckets"),
        pytest.param(1000, [("00:00", "06:06"), ("06:06", "10:00")], id="capped-at-366"),
        pytest.param(
            120,
            [
                ("00:00", "02:00"),
                ("02:00", "04:00"),
                ("04:00", "06:00"),
                ("06:00", "08:00"),
                ("08:00", "10:00"),
            ],
            id="even",
        ),
    ],
)
def test_plan_covers_the_range_with_whole_buckets(buckets, expected):
    day = "2026-11-26 "
    planned = list(windows.plan(t(day + "00:00"), t(day + "10:00"), MIN, buckets))
    assert [(w.since, w.until) for w in planned] == [(t(day + a), t(day + b)) for a, b in expected]
    assert all(w.buckets(MIN) <= windows.MAX_BUCKETS for w in planned)


def test_window_prints_half_open():
    assert str(Window(t("2026-11-26 00:00"), t("2026-11-26 01:00"))) == (
        "[2026-11-26T00:00:00Z, 2026-11-26T01:00:00Z)"
    )


@pytest.mark.parametrize(
    ("has_facets", "rows_per_bucket", "expected"),
    [
        pytest.param(False, None, 366, id="no-facet"),
        pytest.param(True, None, windows.FIRST_FACET_BUCKETS, id="facet-unknown"),
        pytest.param(True, 100.0, 200, id="100-facets"),
        pytest.param(True, 5000.0, 4, id="5000-facets"),
        pytest.param(True, 1_000_000.0, 1, id="never-zero"),
        pytest.param(True, 0.0, 366, id="empty-answers"),
    ],
)
def test_buckets_per_request_keeps_answers_small(has_facets, rows_per_bucket, expected):
    assert (
        windows.buckets_per_request(has_facets=has_facets, rows_per_bucket=rows_per_bucket)
        == expected
    )


@pytest.mark.parametrize(
    ("done", "remaining"),
    [
        pytest.param([], [(0, 10)], id="nothing-done"),
        pytest.param([(0, 4)], [(4, 10)], id="resume"),
        pytest.param([(0, 10)], [], id="all-done"),
        pytest.param([(3, 5)], [(0, 3), (5, 10)], id="hole"),
        pytest.param([(-5, 2), (8, 20)], [(2, 8)], id="overlapping-both-ends"),
        pytest.param([(20, 30)], [(0, 10)], id="unrelated"),
    ],
)
def test_subtract_done_segments(done, remaining):
    def at(n: int) -> datetime:
        return t("2026-11-26 00:00") + n * MIN

    result = windows.subtract((at(0), at(10)), [(at(a), at(b)) for a, b in done])
    assert result == [(at(a), at(b)) for a, b in remaining]


@pytest.mark.parametrize(
    ("since", "until", "interval", "buckets"),
    [
        pytest.param("2026-11-26 10:00:00", "2026-11-26 10:01:00", MIN, 1, id="one"),
        pytest.param("2026-11-26 00:00:00", "2026-11-26 06:06:00", MIN, 366, id="the-most"),
        pytest.param("2026-11-26 00:00:00", "2026-11-27 00:00:00", HOUR, 24, id="1h"),
    ],
)
def test_aligned_buckets_counts_whole_buckets(since, until, interval, buckets):
    assert windows.aligned_buckets(t(since), t(until), interval) == buckets


@pytest.mark.parametrize(
    ("since", "until", "interval", "message"),
    [
        pytest.param(
            "2026-11-26 10:00:30",
            "2026-11-26 10:02:00",
            MIN,
            "window 2026-11-26T10:00:30Z..2026-11-26T10:02:00Z is not aligned to the interval "
            "of 1 minute",
            id="since-off",
        ),
        pytest.param(
            "2026-11-26 00:00:00",
            "2026-11-26 06:07:00",
            MIN,
            "a window must hold 1 to 366 buckets, not 367",
            id="367",
        ),
        pytest.param(
            "2026-11-26 10:00:00",
            "2026-11-26 10:00:00",
            MIN,
            "a window must hold 1 to 366 buckets, not 0",
            id="empty",
        ),
        pytest.param(  # SINCE and UNTIL are sent in whole milliseconds: the same instant
            "2026-11-26 10:00:00",
            "2026-11-26 10:00:00.000999",
            MIN,
            "a window must hold 1 to 366 buckets, not 0",
            id="under-a-ms-apart",
        ),
        pytest.param(
            "2026-11-26 10:00:00",
            "2026-11-26 10:01:00",
            timedelta(microseconds=500),
            "is not aligned",
            id="under-a-ms",
        ),
    ],
)
def test_aligned_buckets_refuses_what_new_relic_would_shift_or_reject(
    since, until, interval, message
):
    with pytest.raises(ValueError, match=re.escape(message)):
        windows.aligned_buckets(t(since), t(until), interval)
