"""A fake of New Relic's legacy Insights query API: real HTTP, the legacy JSON shapes, and the
same data as the fake NerdGraph (`fakes.data`), so both APIs can be compared answer for answer.

    with FakeInsights(accounts={1234567}) as fake:
        env["NEW_RELIC_INSIGHTS_URL"] = fake.url  # http://127.0.0.1:PORT
        fake.set_faults(["http429"], every=3, retry_after=0.01)
        ...
        assert [r.outcome for r in fake.requests] == ["ok", "ok", "http429", ...]

    python -m fakes.insights --port 8766 [--host H] [--query-key K] [--account N ...]
        [--faults http429,http503 --fault-every 3 [--retry-after S]] [--latency 0.2]

The command prints the base URL on one line and serves until SIGTERM/SIGINT (exit 0).

Protocol
    `GET /v1/accounts/{id}/query?nrql=<urlencoded>` with `X-Query-Key`. The NRQL subset and the
    data are the fake NerdGraph's (see `fakes.nerdgraph`): `fakes.data.answer()` gives the
    NerdGraph rows, rendered here into the legacy shapes: `results` (one unnamed entry per
    aggregate, `{"average": x}`, `{"count": n}`, `{"percentiles": {...}}`), `timeSeries` +
    `total` for TIMESERIES, `facets` + `totalResult` for FACET, and the aggregates' names only in
    `metadata.contents` (functions in lower case, `uniquecount`, as real answers spell them;
    funnels as `{"function": "funnel", "attribute": a, "steps": [names]}` with results
    `{"steps": [n1, ...]}`), nested the way real answers nest them (`metadata.timeSeries.contents`,
    `metadata.contents.contents`, `metadata.contents.timeSeries.contents`), with `AS` aliases as
    `{"function": "alias", "alias": ..., "contents": {...}}`. `total`/`totalResult` hold nulls:
    they are not data. Raw-event queries answer `{"results": [{"events": [...]}]}`. Errors are
    `{"error": "..."}`: HTTP 401 for a bad key, 403 for an account the key does not belong to,
    400 for NRQL errors and for NRQL of 4,000 bytes or more.
    Control endpoints as in the fake NerdGraph: `GET /_requests`, `POST /_faults`,
    `POST /_reject`, `POST /_reset`.

Faults (set_faults): http429, http500, http502, http503 (Retry-After when retry_after is given,
for 429 and 503), slow, html (502 proxy page), html200, not_json, reset.
Log outcomes: "ok", a fault kind, "bad_query_key", "bad_request", "forbidden", "nrql_error".
"""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import timedelta
from http.server import BaseHTTPRequestHandler
from itertools import groupby
from typing import Any
from urllib.parse import parse_qs, urlsplit

from fakes.data import answer
from fakes.nerdgraph import (
    DEFAULT_ACCOUNT,
    HTTP_FAULTS,
    FakeNerdGraph,
    GraphqlRequest,
    Handler,
    Reply,
    command_line,
    json_reply,
    serve,
)
from fakes.nrql import Aggregate, NrqlError, Query, parse

__all__ = ["FAULT_KINDS", "FakeInsights"]

DEFAULT_QUERY_KEY = "NRIQ-FAKEQUERYKEY00000000000000"
MAX_NRQL_BYTES = 4000
FAULT_KINDS = frozenset(
    {"http429", "http500", "http502", "http503", "slow", "html", "html200", "not_json", "reset"}
)
QUERY_PATH = re.compile(r"/v1/accounts/(?P<account>\d+)/query")
BUCKET_KEYS = ("beginTimeSeconds", "endTimeSeconds")

Row = dict[str, Any]


class FakeInsights(FakeNerdGraph):
    """The fake server; start() runs it on a background thread.

    It reuses the fake NerdGraph's lifecycle, request log, faults and NRQL rejections; only the
    request and the shapes of the answers differ.
    """

    thread_name = "fake-insights"

    @staticmethod
    def handler_class() -> type[BaseHTTPRequestHandler]:
        return _InsightsHandler

    def __init__(
        self,
        *,
        query_key: str = DEFAULT_QUERY_KEY,
        accounts: set[int] | frozenset[int] = frozenset({DEFAULT_ACCOUNT}),
        retention: timedelta = timedelta(days=8),
        now: Callable[[], float] = time.time,
        latency: float = 0.0,
    ) -> None:
        super().__init__(
            api_key=query_key, accounts=accounts, retention=retention, now=now, latency=latency
        )

    def __enter__(self) -> FakeInsights:
        return self if self._server is not None else self.start()

    @property
    def url(self) -> str:
        """The base URL: what InsightsClient and NEW_RELIC_INSIGHTS_URL take."""
        if self._server is None:
            raise RuntimeError("FakeInsights is not started")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def set_faults(
        self,
        kinds: Sequence[str],
        every: int = 1,
        retry_after: float | None = None,
        *,
        per_query: bool = False,
    ) -> None:
        """From now on, every `every`-th query gets the next of `kinds` (cycling); see
        FakeNerdGraph.set_faults for `per_query`."""
        unknown = sorted(set(kinds) - FAULT_KINDS)
        if unknown:
            raise ValueError(f"unknown fault kinds {unknown}; known: {sorted(FAULT_KINDS)}")
        super().set_faults(kinds, every, retry_after, per_query=per_query)

    # -- serving -----------------------------------------------------------------------------

    def handle_query(self, query_key: str | None, account_id: int, query_string: str) -> Reply:
        request = _read_request(account_id, query_string)
        fault = self._next_fault(request.nrql)
        self._wait(self.latency)
        reply = self._reply(fault, query_key, request)
        self._record(request, reply)
        return reply

    def _reply(self, fault: str | None, api_key: str | None, request: GraphqlRequest) -> Reply:
        reply = super()._reply(fault, api_key, request)
        if fault in HTTP_FAULTS:
            # The fake NerdGraph's HTTP faults carry GraphQL errors; this API sends {"error"}.
            reply.body = json_reply(reply.status, {"error": f"HTTP {reply.status}"}, fault).body
        return reply

    def _answer(self, api_key: str | None, request: GraphqlRequest) -> Reply:
        if api_key != self.api_key:
            return _error(401, "Invalid query key", "bad_query_key")
        if request.problem is not None:
            return _error(400, request.problem, "bad_request")
        assert request.account_id is not None and request.nrql is not None
        if request.account_id not in self.accounts:
            return _error(403, f"Query key not valid for account {request.account_id}", "forbidden")
        with self._lock:
            rejections = dict(self._rejections)
        for substring, message in rejections.items():
            if substring in request.nrql:
                return _error(400, message, "nrql_error")
        try:
            query = parse(request.nrql)
            result = answer(
                request.nrql, now=self.now(), retention_seconds=self.retention.total_seconds()
            )
        except NrqlError as error:
            return _error(400, str(error), "nrql_error")
        body = legacy_answer(query, result.results)
        body["metadata"]["messages"] = self.messages_for(request.nrql)
        return json_reply(200, body, "ok")


def _error(status: int, message: str, outcome: str) -> Reply:
    return json_reply(status, {"error": message}, outcome)


def _read_request(account_id: int, query_string: str) -> GraphqlRequest:
    nrql = (parse_qs(query_string).get("nrql") or [None])[0]
    if nrql is None:
        return GraphqlRequest(account_id, None, problem="The nrql query parameter is required")
    if len(nrql.encode()) >= MAX_NRQL_BYTES:
        problem = f"NRQL query string must be less than {MAX_NRQL_BYTES} bytes"
        return GraphqlRequest(account_id, nrql, problem=problem)
    try:
        parsed = parse(nrql)
    except NrqlError:
        return GraphqlRequest(account_id, nrql)
    return GraphqlRequest(account_id, nrql, parsed.since_ms, parsed.until_ms)


class _InsightsHandler(Handler):
    server_version = "FakeInsights/1.0"

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        match = QUERY_PATH.fullmatch(parts.path)
        if match is None:
            self._send(self.fake.handle_control("GET", self.path, b""))
            return
        fake: FakeInsights = self.fake  # type: ignore[assignment]
        account = int(match.group("account"))
        self._send(fake.handle_query(self.headers.get("X-Query-Key"), account, parts.query))

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self._send(self.fake.handle_control("POST", self.path, body))


# -- NerdGraph rows → the legacy shapes -------------------------------------------------------


def legacy_answer(query: Query, rows: list[Row]) -> dict[str, Any]:
    """The legacy answer holding the same data as these NerdGraph rows of `query`."""
    if query.is_raw:
        events = {"function": "events", "limit": query.limit or 100}
        metadata = {"eventTypes": [query.event_type], "messages": [], "contents": [events]}
        return {
            "results": [{"events": rows}],
            "performanceStats": _stats(rows),
            "metadata": metadata,
        }
    contents = [_content(aggregate) for aggregate in query.aggregates]
    timeseries = query.step_seconds is not None
    metadata: dict[str, Any] = {"eventTypes": [query.event_type], "messages": []}
    if timeseries:
        metadata["bucketSizeMillis"] = query.step_seconds * 1000  # type: ignore[operator]
    if not query.facets:
        body = _series(query, rows, timeseries)
        aggregates = {"messages": [], "contents": contents}
        metadata.update({"timeSeries": aggregates} if timeseries else {"contents": contents})
        return {**body, "performanceStats": _stats(rows), "metadata": metadata}
    groups = [
        {"name": rows_of_facet[0]["facet"], **_series(query, rows_of_facet, timeseries)}
        for rows_of_facet in _by_facet(rows)
    ]
    inner: dict[str, Any] = {"messages": [], "contents": contents}
    metadata["facet"] = query.facets[0] if len(query.facets) == 1 else list(query.facets)
    metadata["contents"] = {"messages": [], "timeSeries": inner} if timeseries else inner
    total = _series(query, [], timeseries)
    return {
        "facets": groups,
        "totalResult": total,
        "unknownGroup": total,
        "performanceStats": _stats(rows),
        "metadata": metadata,
    }


def _series(query: Query, rows: list[Row], timeseries: bool) -> dict[str, Any]:
    """`results`, or `timeSeries` + `total`, of the whole answer or of one facet."""
    if not timeseries:
        return {"results": _results(query, rows[0] if rows else {})}
    buckets = [
        {
            "results": _results(query, row),
            **{key: row[key] for key in BUCKET_KEYS},
            "inspectedCount": 1000 + index,
        }
        for index, row in enumerate(rows)
    ]
    total: dict[str, Any] = {"results": _results(query, {}), "inspectedCount": len(rows)}
    if rows:
        total.update(
            beginTimeSeconds=rows[0][BUCKET_KEYS[0]], endTimeSeconds=rows[-1][BUCKET_KEYS[1]]
        )
    return {"total": total, "timeSeries": buckets}


def _results(query: Query, row: Row) -> list[dict[str, Any]]:
    """The unnamed result entries of a row; a missing row (the totals) gives nulls."""
    return [_entry(aggregate, row.get(aggregate.key)) for aggregate in query.aggregates]


def _entry(aggregate: Aggregate, value: Any) -> dict[str, Any]:
    if aggregate.steps:  # funnel(): {"steps": [n1, n2, ...]}, as in the rows
        return value if isinstance(value, dict) else {"steps": value}
    if aggregate.function == "uniques":
        return {"members": value}
    if aggregate.percentiles:
        return {"percentiles": value}
    if aggregate.function in ("percentage", "rate"):
        return {"result": value}
    return {_innermost(aggregate).function: value}


def _innermost(aggregate: Aggregate) -> Aggregate:
    return _innermost(aggregate.inner) if aggregate.inner is not None else aggregate


def _content(aggregate: Aggregate) -> dict[str, Any]:
    plain = _plain_content(aggregate)
    if aggregate.key == _default_key(aggregate):
        return plain
    return {"function": "alias", "alias": aggregate.key, "contents": plain}


def _plain_content(aggregate: Aggregate) -> dict[str, Any]:
    """The metadata content; real answers spell the function in lower case (`uniquecount`)."""
    if aggregate.inner is not None:
        # Real answers put the WHERE text here; the fake's parser does not keep it.
        return {
            "function": aggregate.function.lower(),
            "alias": "condition",
            "contents": _content(aggregate.inner),
        }
    if aggregate.function == "median":
        return {"function": "median", "attribute": aggregate.attribute}
    if aggregate.percentiles:
        thresholds = [_number(p) for p in aggregate.percentiles]
        return {
            "function": "percentile",
            "attribute": aggregate.attribute,
            "thresholds": thresholds,
        }
    if aggregate.steps:
        steps = [name or f"step {i}" for i, name in enumerate(aggregate.steps, start=1)]
        return {"function": "funnel", "attribute": aggregate.attribute, "steps": steps}
    if aggregate.attribute is None:
        return {"function": aggregate.function.lower(), "simple": True}
    function = aggregate.function.lower()
    return {"function": function, "attribute": aggregate.attribute, "simple": True}


def _default_key(aggregate: Aggregate) -> str:
    if aggregate.inner is not None:
        return f"{aggregate.function}.{aggregate.inner.key}"
    if aggregate.attribute is None:
        return aggregate.function
    return f"{aggregate.function}.{aggregate.attribute}"


def _number(text: str) -> int | float:
    number = float(text)
    return int(number) if number.is_integer() else number


def _by_facet(rows: list[Row]) -> Iterator[list[Row]]:
    """The rows of each facet, in order (data.answer() gives them facet after facet)."""
    for _, group in groupby(rows, key=lambda row: repr(row["facet"])):
        yield list(group)


def _stats(rows: list[Row]) -> dict[str, int]:
    return {"inspectedCount": 1000 * len(rows), "omittedCount": 0, "matchCount": len(rows)}


def main(argv: Sequence[str] | None = None) -> int:
    parser = command_line(
        "python -m fakes.insights", __doc__, 8766, "--query-key", DEFAULT_QUERY_KEY
    )
    args = parser.parse_args(argv)
    accounts = set(args.account or [DEFAULT_ACCOUNT])
    return serve(
        FakeInsights(query_key=args.key, accounts=accounts, latency=args.latency), args, parser
    )


if __name__ == "__main__":
    sys.exit(main())
