"""The one retry policy (archiver/retry.py) that New Relic's clients and the InfluxDB sinks use,
with an injected clock and sleep."""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest

from archiver.errors import NewRelicError, QueryTooBig, TransientError
from archiver.retry import RetryPolicy
from tests.clocks import FakeClock


def failing(times: int, error: Callable[[], Exception], value: str = "ok") -> Callable[[], str]:
    calls = 0

    def action() -> str:
        nonlocal calls
        calls += 1
        if calls <= times:
            raise error()
        return value

    return action


def policy(fake_time: FakeClock, **caps: float) -> RetryPolicy:
    return RetryPolicy(sleep=fake_time.sleep, clock=fake_time, **caps)  # type: ignore[arg-type]


def test_a_transient_failure_is_retried_and_the_attempts_counted(fake_time: FakeClock) -> None:
    action = failing(2, lambda: TransientError("HTTP 503"))

    assert policy(fake_time).call(action) == ("ok", 3)
    first, second = fake_time.sleeps
    assert 1.0 <= first <= 2.0 and 2.0 <= second <= 3.0  # exponential, up to `base` of jitter


def test_waits_start_from_base_and_stop_growing_at_max_wait(fake_time: FakeClock) -> None:
    action = failing(7, lambda: TransientError("HTTP 503"))

    policy(fake_time, max_attempts=8, max_total_seconds=1e6, base=0.5, max_wait=3.0).call(action)

    assert 0.5 <= fake_time.sleeps[0] <= 1.0
    assert all(wait <= 3.0 for wait in fake_time.sleeps) and fake_time.sleeps[-1] == 3.0


def test_a_retry_after_longer_than_the_backoff_is_honoured(fake_time: FakeClock) -> None:
    action = failing(1, lambda: TransientError("HTTP 429", retry_after=7.0))

    policy(fake_time).call(action)

    assert fake_time.sleeps == [7.0]


def test_attempts_are_capped_and_the_last_error_says_so(fake_time: FakeClock) -> None:
    action = failing(99, lambda: TransientError("HTTP 502", retry_after=5.0))

    with pytest.raises(TransientError) as raised:
        policy(fake_time, max_attempts=3).call(action)

    assert str(raised.value) == "HTTP 502 (gave up after 3 attempts in 10 s)"
    assert raised.value.retry_after == 5.0 and fake_time.sleeps == [5.0, 5.0]


def test_no_wait_is_begun_that_would_end_past_the_total_time_cap(fake_time: FakeClock) -> None:
    action = failing(99, lambda: TransientError("HTTP 429", retry_after=4.0))

    with pytest.raises(TransientError, match=r"gave up after 3 attempts in 8 s\)$"):
        policy(fake_time, max_total_seconds=10).call(action)
    assert fake_time.sleeps == [4.0, 4.0]  # a third wait would end at 12 s > 10 s


def test_time_spent_in_the_action_counts_towards_the_total_time_cap(fake_time: FakeClock) -> None:
    def slow() -> str:
        fake_time.now += 20.0
        raise TransientError("timed out")

    with pytest.raises(TransientError, match=r"gave up after 2 attempts in 4\d s\)$"):
        policy(fake_time, max_total_seconds=30).call(slow)


def test_a_permanent_failure_is_raised_at_once_unchanged(fake_time: FakeClock) -> None:
    with pytest.raises(NewRelicError, match=r"^NRQL Syntax Error$"):
        policy(fake_time).call(failing(1, lambda: NewRelicError("NRQL Syntax Error")))
    assert fake_time.sleeps == []


def test_a_caller_may_retry_one_more_class(fake_time: FakeClock) -> None:
    action = failing(1, lambda: QueryTooBig("too big", retry_after=3.0))

    assert policy(fake_time).call(action, retry_on=(TransientError, QueryTooBig)) == ("ok", 2)
    assert fake_time.sleeps == [3.0]


def test_each_retry_is_logged_with_what_failed(
    fake_time: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    action = failing(1, lambda: TransientError("HTTP 500: boom"))

    with caplog.at_level(logging.WARNING, logger="archiver.retry"):
        policy(fake_time, max_attempts=4).call(action, what="InfluxDB request to http://x:8086")

    [record] = caplog.records
    assert record.getMessage().startswith(
        "InfluxDB request to http://x:8086 failed (attempt 1 of 4), retrying in "
    )
    assert record.getMessage().endswith(" s: HTTP 500: boom")
