"""The one retry policy (New Relic and the InfluxDB sinks), and what makes a failure transient.

Only `TransientError` is retried (callers may add a class, e.g. New Relic's QueryTooBig for a
window that cannot shrink). Waits grow exponentially from `base` (doubling, at most `max_wait`)
with up to `base` of random jitter, and are never shorter than a `Retry-After` the server sent.
Attempts and total time are both capped: a wait that would end past `max_total_seconds` after
the first attempt started is never begun (measured on `clock`, so slow answers count too, but
not the time `not_counted` reports: waiting for the New Relic limiter to let a request out).
The last TransientError is re-raised saying how many attempts were made and how long they took.
"""

from __future__ import annotations

import logging
import socket
import ssl
import time
from collections.abc import Callable
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import TypeVar

import requests
import tenacity
import urllib3.exceptions

from archiver.errors import TransientError

log = logging.getLogger(__name__)
T = TypeVar("T")


class RetryPolicy:
    """`call(action)` retries `action` under the caps; one policy object per client or sink."""

    def __init__(
        self,
        *,
        max_attempts: int = 6,
        max_total_seconds: float = 120.0,
        base: float = 1.0,
        max_wait: float = 30.0,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_attempts = max_attempts
        self.max_total_seconds = max_total_seconds
        self._backoff = tenacity.wait_exponential_jitter(multiplier=base, max=max_wait, jitter=base)
        self._sleep = sleep
        self._clock = clock

    def call(
        self,
        action: Callable[[], T],
        *,
        what: str = "request",
        retry_on: tuple[type[Exception], ...] = (TransientError,),
        not_counted: Callable[[], float] | None = None,
    ) -> tuple[T, int]:
        """`action()` retried while it raises one of `retry_on`; its result and the attempts.

        `what` names the action in the warning logged before each wait. `not_counted`: a
        running total of seconds (this thread's) that the total-time cap leaves out.
        """
        attempts = 0

        def attempt() -> T:
            nonlocal attempts
            attempts += 1
            return action()

        left_out = not_counted or (lambda: 0.0)
        started, left_out_before = self._clock(), left_out()

        def elapsed() -> float:
            return self._clock() - started - (left_out() - left_out_before)

        def out_of_time(state: tenacity.RetryCallState) -> bool:
            # Never start a wait that would end past the total-time cap.
            return elapsed() + state.upcoming_sleep > self.max_total_seconds

        def log_retry(state: tenacity.RetryCallState) -> None:
            log.warning(
                "%s failed (attempt %d of %d), retrying in %.1f s: %s",
                what,
                state.attempt_number,
                self.max_attempts,
                state.upcoming_sleep,
                state.outcome.exception() if state.outcome else "",
            )

        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception_type(retry_on),
            wait=self._wait,
            stop=tenacity.stop_after_attempt(self.max_attempts) | out_of_time,
            sleep=self._sleep,
            before_sleep=log_retry,
            reraise=True,
        )
        try:
            return retrying(attempt), attempts
        except TransientError as exc:
            raise TransientError(
                f"{exc} (gave up after {attempts} attempt{'s' if attempts > 1 else ''} "
                f"in {self._clock() - started:.0f} s)",
                retry_after=exc.retry_after,
            ) from exc

    def _wait(self, state: tenacity.RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        retry_after = getattr(exc, "retry_after", None)
        return max(self._backoff(state), retry_after or 0.0)


def retry_after_seconds(value: str | None) -> float | None:
    """Retry-After as seconds, from either delta-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


# Most precise first: urllib3's NewConnectionError is also a ConnectTimeoutError, whatever the
# socket error underneath it.
CONNECTION_FAILURES: tuple[tuple[tuple[type[BaseException], ...], str], ...] = (
    ((ConnectionRefusedError,), "connection refused"),
    ((socket.gaierror, urllib3.exceptions.NameResolutionError), "cannot resolve the host name"),
    ((ssl.SSLError, urllib3.exceptions.SSLError), "TLS handshake failed"),
    ((ConnectionResetError,), "connection reset"),
    ((urllib3.exceptions.ProxyError,), "the proxy failed"),
    (
        (TimeoutError, requests.ConnectTimeout, urllib3.exceptions.ConnectTimeoutError),
        "connection timed out",
    ),
)


def connection_cause(exc: BaseException) -> str:
    """A few words on why a connection failed, from the chain of causes (requests, urllib3)."""
    causes = _causes(exc)
    for types, words in CONNECTION_FAILURES:
        if any(isinstance(cause, types) for cause in causes):
            return words
    return f"connection failed ({type(exc).__name__})"


def _causes(exc: BaseException) -> list[BaseException]:
    """`exc`, what it wraps (requests → urllib3 → socket), and their causes, outermost first."""
    found: list[BaseException] = []
    pending: list[BaseException] = [exc]
    while pending and len(found) < 20:
        current = pending.pop(0)
        if current in found:
            continue
        found.append(current)
        pending.extend(arg for arg in current.args if isinstance(arg, BaseException))
        reason = getattr(current, "reason", None)
        if isinstance(reason, BaseException):
            pending.append(reason)
        pending.extend(c for c in (current.__cause__, current.__context__) if c is not None)
    return found
