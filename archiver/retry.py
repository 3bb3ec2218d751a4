"""The one retry policy of the InfluxDB sinks: TransientError only, backoff with jitter.

Waits grow exponentially (1 s, 2 s, 4 s … at most 30 s) with random jitter, and are never
shorter than a `Retry-After` the server sent. Attempts and total time are both capped; the
last TransientError is re-raised saying how many attempts were made.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import TypeVar

import tenacity

from archiver.errors import TransientError

log = logging.getLogger(__name__)
T = TypeVar("T")


class RetryPolicy:
    def __init__(
        self,
        *,
        max_attempts: int = 6,
        max_total_seconds: float = 120.0,
        sleep: Callable[[float], None] = time.sleep,
        max_wait: float = 30.0,
    ) -> None:
        self._backoff = tenacity.wait_exponential_jitter(initial=1, max=max_wait)
        self._retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception_type(TransientError),
            stop=tenacity.stop_after_attempt(max_attempts)
            | tenacity.stop_before_delay(max_total_seconds),
            wait=self._wait,
            sleep=sleep,
            before_sleep=_log_retry,
            reraise=True,
        )

    def call(self, action: Callable[[], T]) -> tuple[T, int]:
        """`action()` retried while it raises TransientError; its result and the attempts."""
        retrying = self._retrying.copy()
        try:
            return retrying(action), retrying.statistics["attempt_number"]
        except TransientError as exc:
            attempts = retrying.statistics["attempt_number"]
            raise TransientError(f"{exc} (gave up after {attempts} attempts)") from exc

    def _wait(self, state: tenacity.RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        retry_after = exc.retry_after if isinstance(exc, TransientError) else None
        return max(self._backoff(state), retry_after or 0.0)


def _log_retry(state: tenacity.RetryCallState) -> None:
    exc = state.outcome.exception() if state.outcome else None
    wait = state.next_action.sleep if state.next_action else 0.0
    log.warning("%s; retrying in %.1f s (attempt %d)", exc, wait, state.attempt_number + 1)


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
