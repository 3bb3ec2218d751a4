"""The fake NerdGraph server with its answers computed before the clock starts.

The fake builds every row in Python (about 4 s of CPU per million rows). On a small machine
that CPU would be taken from the archiver and influxd, so the benchmark would measure the fake.
Real New Relic does that work on its own machines: for a throughput figure the expected
requests are answered ahead (`prepare`, then `load` before each try), and anything else is
answered live as usual.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping

import orjson

from fakes.nerdgraph import FakeNerdGraph, GraphqlRequest, Reply


class PrecomputedNerdGraph(FakeNerdGraph):
    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self._ready: dict[str, Reply] = {}
        self._ready_lock = threading.Lock()
        self.precomputed_hits = 0
        self.first_request_at: float | None = None  # time.monotonic() of the first request

    def prepare(self, account_id: int, nrql: str) -> tuple[Reply, dict[str, object]]:
        """The reply the fake gives to `nrql` now, and its `nrql` object (results, metadata)."""
        reply = super()._answer(self.api_key, GraphqlRequest(account_id, nrql))
        if reply.outcome != "ok":
            raise ValueError(f"the fake refuses {nrql!r}: {reply.body[:300]!r}")
        return reply, orjson.loads(reply.body)["data"]["actor"]["account"]["nrql"]

    def load(self, replies: Mapping[str, Reply]) -> None:
        """Answer each NRQL of `replies` with its reply, once (the first request for it)."""
        with self._ready_lock:
            self._ready = dict(replies)
            self.precomputed_hits = 0

    def forget_precomputed(self) -> int:
        """Drop the answers nobody asked for; returns how many there were."""
        with self._ready_lock:
            unused, self._ready = len(self._ready), {}
            self.precomputed_hits = 0
        return unused

    def reset_log(self) -> None:
        """Forget the requests so far, and when the first of them came."""
        super().reset_log()
        with self._ready_lock:
            self.first_request_at = None

    def handle_graphql(self, api_key: str | None, body: bytes) -> Reply:
        arrived = time.monotonic()  # before the fake's latency, if any
        with self._ready_lock:
            if self.first_request_at is None:
                self.first_request_at = arrived
        return super().handle_graphql(api_key, body)

    def _answer(self, api_key: str | None, request: GraphqlRequest) -> Reply:
        if api_key == self.api_key and request.account_id in self.accounts and request.nrql:
            with self._ready_lock:
                reply = self._ready.pop(request.nrql, None)
                self.precomputed_hits += reply is not None
            if reply is not None:
                return reply
        return super()._answer(api_key, request)
