"""Time that moves only when a test (or the code under test, sleeping) says so.

One fake clock for the monotonic clocks (seconds as a float: the limiter, progress) and the
wall clocks (aware datetimes: the scheduler), and one fake `sleep` for retries.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import datetime, timedelta


class FakeClock:
    """Returns `now`, which moves on `advance` and on `sleep` (which records the waits)."""

    def __init__(self, now: float | datetime = 1000.0) -> None:
        self.now = now
        self.sleeps: list[float] = []

    def __call__(self) -> float | datetime:
        return self.now

    def advance(self, by: float | timedelta) -> None:
        if isinstance(self.now, datetime):
            self.now += by if isinstance(by, timedelta) else timedelta(seconds=by)
        else:
            self.now += by.total_seconds() if isinstance(by, timedelta) else by

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.advance(seconds)


class FakeSleep:
    """Records the waits asked for (tenacity's) and runs `on_sleep` instead of sleeping."""

    def __init__(self, on_sleep: Callable[[], None] | None = None) -> None:
        self.waits: list[float] = []
        self.on_sleep = on_sleep

    def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)
        if self.on_sleep:
            self.on_sleep()


class FakeTimeEvent(threading.Event):
    """A stop event whose wait lets fake time pass instead of real time."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__()
        self.clock = clock

    def wait(self, timeout: float | None = None) -> bool:
        assert timeout is not None, "the scheduler must never wait without a timeout here"
        if not self.is_set():
            self.clock.advance(timedelta(seconds=timeout))
        return self.is_set()
