"""The interface of a New Relic client, owned by neither implementation.

`NerdGraphClient` (newrelic/nerdgraph.py, a user key) and `InsightsClient` (newrelic/insights.py,
a query key) both implement `NewRelicClient`: run one NRQL query for a window, get its rows,
facets and cost. The runner, `verify` and the benchmark only know this interface. Requests
go through a `transport.Transport`, which `limiter.LimitedTransport` wraps with the caps.

Answers are parsed one at a time in the process, on one thread (`parsing`), each with what
the caller makes of its rows (`digest`): a parsed answer takes several times the memory of its
JSON, and parsing is CPU under the GIL anyway, so threads that ask New Relic at once wait their
turn holding only the JSON bytes, and a caller that keeps a digest (the runner keeps line
protocol) never holds more than one parsed answer.
"""

from __future__ import annotations

import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, TypeVar

import orjson

if TYPE_CHECKING:
    from archiver.newrelic.transport import Transport
    from archiver.retry import RetryPolicy


@dataclass(frozen=True)
class NrqlResult:
    results: list[dict[str, Any]]
    facets: tuple[str, ...]
    requests: int
    """HTTP requests it took, retries (and polls of an asynchronous query) included."""
    retries: int
    other: list[dict[str, Any]] | dict[str, Any] | None = None  # otherResult, when asked for
    messages: tuple[str, ...] = ()  # metadata.messages: New Relic's warnings about the query
    inspected: int | None = None
    """New Relic's performanceStats.inspectedCount: what the query cost; None if not told."""
    size: int = field(default=0, compare=False)
    """Bytes of New Relic's JSON answer (of the request that gave the rows): not part of what
    it answered."""
    digest: Any = None
    """What the caller's `digest` made of the answer (`query(digest=...)`); `results` and
    `other` are then empty."""


Digest = Callable[[NrqlResult], Any]
Turn = Callable[[], None]
T = TypeVar("T")
_turns = threading.local()
# glibc's mallopt parameter for the size from which a buffer is mmap()ed (its initial value)
M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES = -3, 128 * 1024


def fixed_mmap_threshold() -> None:
    """Let glibc take every buffer of 128 KiB or more (an answer's JSON, a list of a window's
    lines) from the kernel and give it back when freed (a no-op elsewhere than on glibc).

    By default glibc raises that threshold to the largest such buffer freed (up to 32 MiB);
    from then on they come from the malloc arena of the thread that allocates them, which
    keeps what is freed in it. Bench row (c), 9.5 MB answers: 162-166 MiB peak RSS with the
    threshold fixed here, 199-201 MiB without (2026-11-29).
    """
    import ctypes  # here: only a process that parses answers needs it

    try:
        libc = ctypes.CDLL(None)
        libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)
    except (AttributeError, OSError):  # not glibc: its own allocator, its own ways
        pass


_parser = ThreadPoolExecutor(1, thread_name_prefix="nr-parse", initializer=fixed_mmap_threshold)


def parsing(work: Callable[[], T]) -> T:
    """`work()` (parse an answer, and digest it) on the one thread that parses New Relic's
    answers, waited for: one answer at a time in the process (module docstring), its rows
    and lines in one thread's heap."""
    return _parser.submit(work).result()


def digested(result: NrqlResult, digest: Digest | None) -> NrqlResult:
    """`result` with its rows replaced by `digest(result)`; as it is without a digest.

    Called on the parsing thread (`parsing`), right after the answer was parsed and classified,
    and before its requests are counted (`requests` and `retries` are 0 there).
    """
    if digest is None:
        return result
    return replace(result, results=[], other=None, digest=digest(result))


def wait_turn(turn: Turn | None) -> None:
    """Call `turn` (`NewRelicClient.query`): the time it blocks is this thread's `turn_waits`."""
    if turn is None:
        return
    started = time.monotonic()
    try:
        turn()
    finally:
        _turns.seconds = turn_waits() + time.monotonic() - started


def turn_waits() -> float:
    """Seconds the calling thread has waited for its answers' turns so far (a running total):
    the retry policy leaves them out of its total-time cap, as it does the limiter's waits."""
    return getattr(_turns, "seconds", 0.0)


class NewRelicClient(ABC):
    """Runs NRQL queries; share one between threads so its transport's limiter is shared.

    An implementation sends its requests through `transport` (one HTTP request each, already
    wrapped with the limiter) under `retry`, and words New Relic's answers into NrqlResult.
    """

    def __init__(self, transport: Transport, retry: RetryPolicy) -> None:
        self._transport = transport
        self._retry = retry
        self.url = transport.url  # without credentials, for messages

    @abstractmethod
    def query(
        self,
        account_id: int,
        nrql: str,
        *,
        other: bool = False,
        shrinkable: bool = False,
        digest: Digest | None = None,
        turn: Turn | None = None,
    ) -> NrqlResult:
        """Run one NRQL query, retrying transient failures; raise the last one if they persist.

        `other` asks for otherResult too (the facets beyond LIMIT). `shrinkable`: the caller
        can ask again with fewer buckets, so a QueryTooBig is raised at once; otherwise (a
        window of one bucket, raw events) it is retried like a transient failure, and raised
        with New Relic's message when the attempts run out. `digest`: what to keep of the
        answer instead of its rows (`digested`), made while no other answer is parsed.
        `turn`: called once the answer arrived (HTTP failures are raised first) and before it
        is parsed, holding only its JSON bytes: it may block until the caller wants it parsed
        (its time is not counted against the retry policy's total), or raise to drop it.
        """

    def close(self) -> None:
        self._transport.close()

    def __enter__(self) -> NewRelicClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(url={self.url!r})"


def inspected_count(raw_response: Any) -> int | None:
    """`performanceStats.inspectedCount` of NRDB's raw answer (NerdGraph's `rawResponse`, a
    JSON object, or the Insights API's whole answer); None when it is not there."""
    if isinstance(raw_response, str):
        try:
            raw_response = orjson.loads(raw_response)
        except orjson.JSONDecodeError:
            return None
    stats = raw_response.get("performanceStats") if isinstance(raw_response, dict) else None
    count = stats.get("inspectedCount") if isinstance(stats, dict) else None
    return int(count) if isinstance(count, int | float) and not isinstance(count, bool) else None
