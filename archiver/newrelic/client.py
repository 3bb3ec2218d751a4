"""The interface of a New Relic client, owned by neither implementation.

`NerdGraphClient` (newrelic/nerdgraph.py, a user key) and `InsightsClient` (newrelic/insights.py,
a query key) both implement `NewRelicClient`: run one NRQL query for a window, get its rows,
facets and cost. The runner, `verify` and the benchmark only know this interface. Requests
go through a `transport.Transport`, which `limiter.LimitedTransport` wraps with the caps.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

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
        self, account_id: int, nrql: str, *, other: bool = False, shrinkable: bool = False
    ) -> NrqlResult:
        """Run one NRQL query, retrying transient failures; raise the last one if they persist.

        `other` asks for otherResult too (the facets beyond LIMIT). `shrinkable`: the caller
        can ask again with fewer buckets, so a QueryTooBig is raised at once; otherwise (a
        window of one bucket, raw events) it is retried like a transient failure, and raised
        with New Relic's message when the attempts run out.
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
