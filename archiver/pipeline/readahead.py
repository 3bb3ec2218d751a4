"""Read ahead: work on the next windows while InfluxDB writes the current one, bounded.

- `read_ahead`: an iterator's items produced on a helper thread, a bounded number ahead (raw
  events: New Relic asked and the rows transformed on that thread).
- `Turns`: when each of the windows asked at once may be parsed and transformed (TIMESERIES
  windows): once the consumer takes it; until then it waits as JSON bytes, the least memory
  an answer takes.

The bounds keep memory to a few windows, whatever the length of the range.
"""

from __future__ import annotations

import queue
import threading
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from typing import TypeVar

T = TypeVar("T")
_END = object()
JOIN_POLL_SECONDS = 0.1


@dataclass(frozen=True)
class _Raised:
    error: BaseException


def read_ahead(items: Iterator[T], depth: int = 1, name: str = "read-ahead") -> Iterator[T]:
    """Yield `items`, produced on a helper thread at most `depth` items ahead of the consumer.

    An exception raised while producing is raised here, after the items produced before it.
    Closing this generator (use `contextlib.closing`) stops the producer before its next item
    and waits for the item in progress, so nothing runs on behind the caller's back.
    """
    slots: queue.Queue[object] = queue.Queue(maxsize=depth)
    stopped = threading.Event()

    def offer(entry: object) -> bool:
        if stopped.is_set():
            return False
        slots.put(entry)  # never blocks for good: the consumer drains the queue when it stops
        return True

    def produce() -> None:
        try:
            for item in items:
                if not offer(item):
                    return
            offer(_END)
        except BaseException as error:  # raised again in the consumer's thread
            offer(_Raised(error))
        finally:
            close = getattr(items, "close", None)
            if close is not None:
                close()

    producer = threading.Thread(target=produce, name=name, daemon=True)
    producer.start()
    try:
        while (entry := slots.get()) is not _END:
            if isinstance(entry, _Raised):
                raise entry.error
            yield entry  # type: ignore[misc]
    finally:
        stopped.set()
        while producer.is_alive():
            _drain(slots)
            producer.join(timeout=JOIN_POLL_SECONDS)


def _drain(slots: queue.Queue[object]) -> None:
    try:
        while True:
            slots.get_nowait()
    except queue.Empty:
        pass


class Hold:
    """The consumer's say on whether a group that is not full waits for more items.

    `read_ahead_groups(..., hold=h)` yields a group short of its limit only when `holding()`
    is false, or when no more items can join it (the next one does not fit, or none follows).
    `holding` is called on the consumer's thread, as it waits for its next group; call `wake`
    (from any thread) when its answer may have changed.
    """

    def __init__(self, holding: Callable[[], bool]) -> None:
        self.holding = holding
        self.condition = threading.Condition()  # the groups' own: `wake` notifies their waits

    def wake(self) -> None:
        with self.condition:
            self.condition.notify_all()


def read_ahead_groups(
    items: Iterator[T],
    *,
    limit: int,
    size: Callable[[T], int],
    name: str = "read-ahead",
    hold: Hold | None = None,
) -> Iterator[list[T]]:
    """`items` produced on a helper thread, yielded as groups of what is ready.

    Each group is the next item (waited for) and the items already produced after it, while
    their `size`s add up to at most `limit`. The producer stops when the items waiting add up
    to `limit` (one item waits whatever its size), so memory stays bounded by `limit` and one
    item. Slow items are yielded one by one as they come, never held to fill a group, unless
    `hold` says so (`Hold`); an exception is raised after the items produced before it;
    closing this generator stops the producer as `read_ahead` does.
    """
    ready: deque[tuple[object, int]] = deque()  # (item or _END or _Raised, its size)
    changed = hold.condition if hold is not None else threading.Condition()
    waiting = [0]  # the size of the items in `ready`
    full = [False]  # the producer waits for room: no more items can join the next group
    stopped = threading.Event()

    def offer(entry: object, weight: int) -> bool:
        with changed:
            while ready and waiting[0] + weight > limit and not stopped.is_set():
                if not full[0]:
                    full[0] = True
                    changed.notify_all()
                changed.wait()
            full[0] = False
            if stopped.is_set():
                return False
            ready.append((entry, weight))
            waiting[0] += weight
            changed.notify_all()
            return True

    def complete() -> bool:
        """Whether the next group can grow no more (or `hold` lets it go as it is)."""
        if full[0] or hold is None or waiting[0] >= limit:
            return True
        last = ready[-1][0]
        return last is _END or isinstance(last, _Raised) or not hold.holding()

    def produce() -> None:
        try:
            for item in items:
                if not offer(item, size(item)):
                    return
            offer(_END, 0)
        except BaseException as error:  # raised again in the consumer's thread
            offer(_Raised(error), 0)
        finally:
            close = getattr(items, "close", None)
            if close is not None:
                close()

    def take() -> tuple[list[T], object]:
        """The next group, and the end marker or error that follows it (None if neither)."""
        with changed:
            while not ready or not complete():
                changed.wait()
            group: list[T] = []
            taken, after = 0, None
            while ready:
                entry, weight = ready[0]
                if entry is _END or isinstance(entry, _Raised):
                    if not group:
                        after = entry
                    break
                if group and taken + weight > limit:
                    break
                ready.popleft()
                group.append(entry)  # type: ignore[arg-type]
                taken += weight
            waiting[0] -= taken
            changed.notify_all()
            return group, after

    producer = threading.Thread(target=produce, name=name, daemon=True)
    producer.start()
    try:
        while True:
            group, after = take()
            if after is _END:
                return
            if isinstance(after, _Raised):
                raise after.error
            yield group
    finally:
        stopped.set()
        with changed:
            changed.notify_all()
        while producer.is_alive():
            producer.join(timeout=JOIN_POLL_SECONDS)


class Dropped(Exception):
    """Raised by a turn that will never come: the windows are not wanted any more."""


class Turns:
    """Turns of the windows asked at once, numbered in the order asked and taken in that order:
    window n may go on (be parsed) once the consumer took it. Thread-safe."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._numbered = 0  # windows asked (given a turn)
        self._taken = 0  # windows the consumer took (waits for, writes, or dropped)
        self._closed = False

    def next(self) -> Callable[[], None]:
        """The turn of the next window asked: blocks until it may go on; raises Dropped after
        `close`. (Called by the asking thread only.)"""
        number, self._numbered = self._numbered, self._numbered + 1
        return partial(self._wait, number)

    def take(self) -> None:
        """The consumer took the oldest window: it may go on."""
        with self._changed:
            self._taken += 1
            self._changed.notify_all()

    def close(self) -> None:
        """No window waiting for its turn is wanted any more."""
        with self._changed:
            self._closed = True
            self._changed.notify_all()

    def _wait(self, number: int) -> None:
        with self._changed:
            self._changed.wait_for(lambda: self._closed or number < self._taken)
            if self._closed:
                raise Dropped(f"window {number} is not wanted any more")
