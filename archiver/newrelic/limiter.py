"""A cap on how hard the archiver presses on New Relic, shared by every query thread.

New Relic's limits, and how the limiter keeps each one:
- 25 concurrent NerdGraph requests per user (about 5 for NRQL, New Relic advises): at most
  `max_concurrent` requests are in flight at once, whatever their account.
- 3,000 NRQL queries per account and minute: at most `per_minute` requests start in any 60 s
  for one account (each account has its own budget; requests without one, such as a dashboard
  read, share one more).
- The same query text at most 120 times a minute (then HTTP 429): at most
  `same_text_per_minute` requests carrying one NRQL text start in any 60 s, whatever the
  account. Windows of a backfill differ in their text, but every retry of a window, and
  `verify` asking it again, repeats it.

A request over a per-minute cap waits (outside its concurrency slot, so other accounts and
texts go on) until the oldest start in its way leaves the window; it is never refused.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable
from types import TracebackType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import requests

    from archiver.newrelic.transport import Transport

WINDOW_SECONDS = 60.0
# New Relic refuses the 121st request with one text in a minute; the archiver stays under 100 so
# that network jitter between its clock and New Relic's never adds the one too many.
SAME_TEXT_PER_MINUTE = 100


class SlidingWindows:
    """Request starts in the last 60 s, per key; a key with no recent start takes no memory."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self._starts: dict[Hashable, deque[float]] = {}
        self._order: deque[tuple[float, Hashable]] = deque()  # every start, oldest first

    def wait(self, key: Hashable, now: float) -> float:
        """0 if `key` may start now, else how long until its oldest start leaves the window."""
        self._forget(now)
        starts = self._starts.get(key)
        if starts is None or len(starts) < self.cap:
            return 0.0
        return starts[0] + WINDOW_SECONDS - now

    def record(self, key: Hashable, now: float) -> None:
        self._starts.setdefault(key, deque()).append(now)
        self._order.append((now, key))

    def _forget(self, now: float) -> None:
        # `start + WINDOW_SECONDS <= now`, the very sum `wait` computes: `now - WINDOW_SECONDS`
        # rounds otherwise, and a start `wait` found out of the window (a delay of 0.0) could
        # still be counted, letting one request too many start (seen with jittered retries).
        while self._order and self._order[0][0] + WINDOW_SECONDS <= now:
            _, key = self._order.popleft()
            starts = self._starts[key]
            starts.popleft()
            if not starts:
                del self._starts[key]

    def __len__(self) -> int:
        return len(self._starts)


def text_key(nrql: str) -> bytes:
    """A short digest of an NRQL text: the same-text windows never hold the texts themselves."""
    return hashlib.blake2b(nrql.encode(), digest_size=16).digest()


class Limiter:
    """Caps concurrent New Relic requests, requests per minute and account, and requests per
    minute with one NRQL text.

    Thread-safe; `acquire` blocks until every cap allows one more request, `release` gives its
    slot back. Use `request(account, nrql)` (or the limiter itself, for a request with neither)
    as a context manager around each HTTP request (not around retry sleeps).
    """

    def __init__(
        self,
        max_concurrent: int = 5,
        per_minute: int = 1000,
        *,
        same_text_per_minute: int = SAME_TEXT_PER_MINUTE,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if max_concurrent < 1 or per_minute < 1 or same_text_per_minute < 1:
            raise ValueError(
                "max_concurrent, per_minute and same_text_per_minute must be at least 1"
            )
        self.max_concurrent = max_concurrent
        self.per_minute = per_minute
        self.same_text_per_minute = same_text_per_minute
        self._slots = threading.BoundedSemaphore(max_concurrent)
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._per_account = SlidingWindows(per_minute)
        self._per_text = SlidingWindows(same_text_per_minute)
        self._waits = threading.local()

    def __repr__(self) -> str:
        return (
            f"Limiter(max_concurrent={self.max_concurrent}, per_minute={self.per_minute}, "
            f"same_text_per_minute={self.same_text_per_minute})"
        )

    def acquire(self, account: int | None = None, nrql: str | None = None) -> None:
        """Wait for a slot and for room in `account`'s and `nrql`'s minute, then take them.

        The start is recorded when the request really goes out; a request that must wait for
        its minute gives its slot back while it waits.
        """
        text = text_key(nrql) if nrql is not None else None
        arrived = self._clock()
        try:
            while True:
                self._slots.acquire()
                try:
                    delay = self._reserve_start(account, text)
                except BaseException:
                    self._slots.release()
                    raise
                if delay <= 0:
                    return
                self._slots.release()
                self._sleep(delay)
        finally:
            self._waits.seconds = self.waited() + (self._clock() - arrived)

    def release(self) -> None:
        self._slots.release()

    def request(self, account: int | None = None, nrql: str | None = None) -> _Held:
        """A context manager holding the limiter for one request of `account` with `nrql`."""
        return _Held(self, account, nrql)

    def waited(self) -> float:
        """Seconds the calling thread has spent at the door so far (a running total): the
        retry policy leaves them out of its total-time cap."""
        return getattr(self._waits, "seconds", 0.0)

    def __enter__(self) -> Limiter:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.release()

    def _reserve_start(self, account: int | None, text: bytes | None) -> float:
        """Record a request start now and return 0, or return how long to wait for room."""
        with self._lock:
            now = self._clock()
            delay = self._per_account.wait(account, now)
            if text is not None:
                delay = max(delay, self._per_text.wait(text, now))
            if delay > 0:
                return delay
            self._per_account.record(account, now)
            if text is not None:
                self._per_text.record(text, now)
            return 0.0


class _Held:
    def __init__(self, limiter: Limiter, account: int | None, nrql: str | None) -> None:
        self._limiter = limiter
        self._account = account
        self._nrql = nrql

    def __enter__(self) -> None:
        self._limiter.acquire(self._account, self._nrql)

    def __exit__(self, *exc_info: object) -> None:
        self._limiter.release()


class LimitedTransport:
    """A Transport whose every request (each retry and each poll included) passes the limiter;
    the waits between retries happen outside it."""

    def __init__(self, transport: Transport, limiter: Limiter) -> None:
        self._transport = transport
        self.limiter = limiter
        self.url = transport.url

    def request(
        self,
        method: str,
        url: str,
        *,
        account: int | None = None,
        nrql: str | None = None,
        **kwargs: Any,
    ) -> requests.Response:
        with self.limiter.request(account, nrql):
            return self._transport.request(method, url, **kwargs)

    def close(self) -> None:
        self._transport.close()
