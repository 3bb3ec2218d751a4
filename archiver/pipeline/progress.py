"""Progress of a run, in seconds of data exported: a tqdm bar on a terminal, log lines elsewhere.

Time covered, not windows, is the unit: window sizes adapt to the answers (and events windows
split), while the length of the planned ranges is known from the start, so rate and ETA are
honest.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING, TextIO

from archiver.timeparse import compact_duration

if TYPE_CHECKING:
    from tqdm import tqdm

log = logging.getLogger(__name__)

LOG_EVERY_SECONDS = 30.0


class Progress:
    def __init__(
        self,
        *,
        stream: TextIO | None = None,
        clock: Callable[[], float] = time.monotonic,
        log_every: float = LOG_EVERY_SECONDS,
    ) -> None:
        self.stream = stream or sys.stderr
        self.clock = clock
        self.log_every = log_every
        self.total = 0
        self.done = 0
        self.points = 0
        self._lock = threading.Lock()
        self._started = clock()
        self._last_log = self._started
        self._bar: tqdm | None = None
        if self.stream.isatty():
            from tqdm import tqdm  # only for a terminal

            self._bar = tqdm(
                total=0,
                unit="s",
                unit_scale=True,
                desc="data exported",
                file=self.stream,
                dynamic_ncols=True,
                bar_format="{desc}: {percentage:3.0f}%|{bar}| {elapsed}<{remaining}{postfix}",
            )

    def plan(self, seconds: float) -> None:
        """A job announces how much time (seconds of data) it will export."""
        with self._lock:
            self.total += seconds
            if self._bar is not None:
                self._bar.total = self.total
                self._bar.refresh()

    def advance(self, seconds: float, points: int) -> None:
        with self._lock:
            self.done += seconds
            self.points += points
            if self._bar is not None:
                self._bar.update(seconds)
                # a string: tqdm would print a number as 1.01e+6
                self._bar.set_postfix(points=str(self.points), refresh=False)
            elif self.clock() - self._last_log >= self.log_every:
                self._last_log = self.clock()
                log.info("%s", self.summary())

    def summary(self) -> str:
        elapsed = max(self.clock() - self._started, 1e-9)
        rate = self.done / elapsed
        percent = 100.0 * self.done / self.total if self.total else 100.0
        eta = (self.total - self.done) / rate if rate else float("inf")
        eta_text = compact_duration(timedelta(seconds=eta)) if eta < 10**9 else "unknown"
        return (
            f"progress: {percent:.0f}% of the range ({_hours(self.done)} of "
            f"{_hours(self.total)} of data), {self.points / elapsed:.0f} points/s, ETA {eta_text}"
        )

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:.1f}h"
