"""A cap on how hard the archiver presses on New Relic, shared by every query thread.

New Relic asks for at most about 5 concurrent NRQL queries and allows 3,000 per account and
minute; the defaults stay well under both. The per-minute cap is a sliding window: at most
`per_minute` requests start in any 60 seconds.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import requests

    from archiver.newrelic.transport import Transport

WINDOW_SECONDS = 60.0


class Limiter:
    """Caps concurrent New Relic requests and requests per minute.

    Thread-safe; entering blocks until both caps allow one more request. Use it as a context
    manager around each HTTP request (not around retry sleeps).
    """

    def __init__(
        self,
        max_concurrent: int = 5,
        per_minute: int = 1000,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if max_concurrent < 1 or per_minute < 1:
            raise ValueError("max_concurrent and per_minute must be at least 1")
        self.max_concurrent = max_concurrent
        self.per_minute = per_minute
        self._slots = threading.BoundedSemaphore(max_concurrent)
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._recent_starts: deque[float] = deque()
        self._waits = threading.local()

    def __repr__(self) -> str:
        return f"Limiter(max_concurrent={self.max_concurrent}, per_minute={self.per_minute})"

    def waited(self) -> float:
        """Seconds the calling thread has spent at the door so far (a running total): the
        retry policy leaves them out of its total-time cap."""
        return getattr(self._waits, "seconds", 0.0)

    def __enter__(self) -> Limiter:
        # The slot first, then the rate: the start is recorded when the request really goes out.
        arrived = self._clock()
        self._slots.acquire()
        try:
            self._wait_for_rate()
        except BaseException:
            self._slots.release()
            raise
        finally:
            self._waits.seconds = self.waited() + (self._clock() - arrived)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._slots.release()

    def _wait_for_rate(self) -> None:
        while (delay := self._reserve_start()) > 0:
            self._sleep(delay)

    def _reserve_start(self) -> float:
        """Record a request start now and return 0, or return how long to wait for room."""
        with self._lock:
            now = self._clock()
            while self._recent_starts and self._recent_starts[0] <= now - WINDOW_SECONDS:
                self._recent_starts.popleft()
            if len(self._recent_starts) < self.per_minute:
                self._recent_starts.append(now)
                return 0.0
            return self._recent_starts[0] + WINDOW_SECONDS - now


class LimitedTransport:
    """A Transport whose every request (each retry and each poll included) passes the limiter;
    the waits between retries happen outside it."""

    def __init__(self, transport: Transport, limiter: Limiter) -> None:
        self._transport = transport
        self.limiter = limiter
        self.url = transport.url

    def request(self, method: str, url: str, **kwargs: Any) -> requests.Response:
        with self.limiter:
            return self._transport.request(method, url, **kwargs)

    def close(self) -> None:
        self._transport.close()
