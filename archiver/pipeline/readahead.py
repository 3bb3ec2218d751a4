"""Read ahead: an iterator's items produced on a helper thread, a bounded number ahead.

The runner uses it so that New Relic is asked for the next window (and its rows transformed)
while InfluxDB writes the current one. The bound keeps memory to a few windows, whatever the
length of the range.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass
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
