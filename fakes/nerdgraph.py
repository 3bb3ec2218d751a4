"""A small, fast fake of New Relic's NerdGraph NRQL API: real HTTP, real JSON shapes.

Used by end-to-end tests, fault-injection tests, the benchmark and `make demo`::

    with FakeNerdGraph(accounts={1234567}) as fake:
        env["NEW_RELIC_NERDGRAPH_URL"] = fake.url  # http://127.0.0.1:PORT/graphql
        fake.set_faults(["http429", "graphql_timeout"], every=3, retry_after=0.01)
        ...
        assert [r.outcome for r in fake.requests] == ["ok", "ok", "http429", ...]

    python -m fakes.nerdgraph --port 8765 [--host H] [--api-key K] [--account N ...]
        [--faults http429,graphql_timeout --fault-every 3 [--retry-after S]] [--latency 0.2]

The command prints the GraphQL URL on one line and serves until SIGTERM/SIGINT (exit 0).

Protocol
    `POST /graphql` with `API-Key` and {"query": ..., "variables": {"accountId": int,
    "nrql": str}}; the query text must use `$accountId` and `$nrql`. Answers follow
    /work/shared/reference/newrelic.md: results + metadata on success; GraphQL errors with
    HTTP 200 and `extensions.errorClass`; a bad key is HTTP 401 (or, with
    bad_key_style="graphql", HTTP 200 with extensions.error_code BAD_API_KEY).
    A query with `entity(guid: $guid)` and {"guid": ...} is answered with that dashboard from
    `dashboards` (default: fakes.dashboards), or `{"entity": null}` for an unknown GUID.
    Control: `GET /_requests` (the log as JSON), `POST /_faults` {"kinds", "every",
    "retry_after"}, `POST /_reject` {"substring", "message"}, `POST /_messages`
    {"substring", "messages"}, `POST /_reset`.

NRQL (keywords case-insensitive, clauses after FROM in any order)
    SELECT <item>[, ...] FROM <EventType> [WHERE <ignored>] [FACET a[, b...]] [LIMIT n|MAX]
    [SINCE <epoch ms>|<n unit> AGO] [UNTIL <epoch ms>|<n unit> AGO|NOW]
    [TIMESERIES <n> <second|minute|hour|day|week>[s]]
    Items: count(*), count(a), average(a), sum(a), min(a), max(a), latest(a), uniqueCount(a),
    uniques(a) (a list of values), percentile(a, p...), percentage(<item>, WHERE ...),
    filter(<item>, WHERE ...), rate(<item>, <n> <unit>),
    funnel(a, WHERE ... [AS 'step'], WHERE ... [AS 'step'], ...) (each bucket
    `{"steps": [n1, n2, ...]}`), each with optional AS alias (bare, 'quoted' or `backticked`).
    FACET labels: rows carry `facet` and the attributes, except TransactionError rows (the
    attribute alone, no `facet`) and ReplicationLag rows on several attributes (the `facet`
    list alone), as real answers do (`real_facet_labels`).
    TIMESERIES buckets end at UNTIL; the first one starts ceil(range/step) steps before it.

Data model (fakes.data; deterministic, nothing stored)
    facet_values(event_type, attributes) -> list[tuple]: every facet tuple, before ordering.
        Built in: Transaction (appName with "billing,eu", "a=b", 'say "hi"', "C:\\tmp\\",
        "Zürich ☃ 東京", "checkout" whose second host is null; host; name, one ""; and
        transactionType), TransactionError, PageView, Login (provider, success "true"/"false"),
        ReplicationLag (cluster, replica). An attribute an event type lacks gives null.
        Other event types: "value 1".."value 3". "Bench" has 100 facet values
        "facet-000".."facet-099" for any attribute, "Bench<N>" has N.
    value(event_type, facet_values, bucket_start, function, attribute, percentile=None, *,
          bucket_seconds, per_seconds=60) -> int | float | None: the stored value.
        Every attribute is numeric. About 1 bucket in 10 has count 0: then count/sum/
        uniqueCount are 0, percentage is null, the others null. About 1 bucket in 4 has
        integral numbers (average 2, not 2.0). min <= average <= max, percentiles grow with p.
    answer(nrql, now=..., retention_seconds=...) -> Answer(results, metadata): what the server
        sends. A bucket that starts before now - retention holds zeros (count 0, average 0);
        one that ends after now is empty (count 0, average null). Facets are ordered by total
        count, descending, then value; LIMIT defaults to 10, MAX is 5000. Without
        TIMESERIES the whole range is one bucket: bucket_start = SINCE // 1000 and
        bucket_seconds = (UNTIL - SINCE) // 1000.

    otherResult / totalResult (FACET, only when the GraphQL query names them): per bucket
        with TIMESERIES, else one object; the count of a bucket is the sum of the counts of
        the facets beyond LIMIT (other) or of every facet (total).
    Percentiles (and median) of a bucket without samples are answered 0, as New Relic does,
        while `value()` says None (no sample): `count(attribute)` of that bucket is 0.
    add_messages(substring, [texts]): metadata.messages (New Relic's warnings) of every NRQL
        containing substring.

Big accounts
    `time_out_above(buckets, substring="")`: a TIMESERIES query (containing `substring`) of more
    than `buckets` buckets gets New Relic's TIMEOUT, "NRDB query duration exceeded the set
    timeout" (outcome "too_big"); `buckets=0` times out every query containing `substring`.
    Every answer carries `rawResponse.performanceStats.inspectedCount` =
    INSPECTED_PER_ROW x its rows (the raw response holds only performanceStats and metadata
    here; New Relic's also repeats the results).
    `set_async(polls, retry_after, retry_deadline)`: a query sent with `async: true` answers
    `queryProgress { queryId completed: false retryAfter retryDeadline resultExpiration }`
    (outcome "async_started"); polling `nrqlQueryProgress(queryId:)` on the same account gives
    the results on the `polls`-th poll made at least `retry_after` seconds after the previous
    answer (earlier polls: "async_running", not counted); a poll later than `retry_deadline`
    seconds after the previous answer finds the query cancelled ("async_cancelled").

Faults (set_faults): http429 (Retry-After when retry_after is given), http500, http502, http503,
graphql_timeout, too_many_requests, internal_server_error, slow (waits `latency` or 2 s, then
answers), html (502 proxy page), html200 (200 login page), not_json, no_data, reset (the
connection is closed unanswered). Every request waits `latency` first. `per_query=True` counts
the requests of each query (its NRQL without SINCE/UNTIL) apart: every `every`-th request of
that query is a fault, so with `every` >= 2 no query meets two faults in a row, however the
requests of concurrent workers interleave (each fault still takes the next kind of the cycle).
`limit_same_text(per_minute)`: like New Relic, answer HTTP 429 (outcome "same_text_limit") to a
query whose NRQL text arrived more than `per_minute` times (120 at New Relic) in the last 60 s
of the fake's clock `now`, counting every arrival; polls do not count. Off unless asked for
(`--same-text-per-minute N` on the command line).
Log outcomes: "ok", a fault kind, "same_text_limit", "bad_api_key", "bad_request", "forbidden",
"nrql_error".
"""

from __future__ import annotations

import argparse
import re
import signal
import socket
import struct
import sys
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Literal, Self

import orjson

from fakes.dashboards import default_dashboards
from fakes.data import Answer, answer, facet_values, value
from fakes.nrql import NrqlError, parse

__all__ = [
    "FAULT_KINDS",
    "Answer",
    "FakeNerdGraph",
    "RequestRecord",
    "answer",
    "facet_values",
    "value",
]

DEFAULT_API_KEY = "NRAK-FAKEKEY0000000000000000000"
DEFAULT_ACCOUNT = 1234567
NRQL_PATH = ["actor", "account", "nrql"]
SLOW_SECONDS = 2.0
INSPECTED_PER_ROW = 1000
TOO_BIG_MESSAGE = "NRDB query duration exceeded the set timeout"
RESULT_EXPIRATION_SECONDS = 300
GRAPHQL_FAULTS = {
    "graphql_timeout": ("TIMEOUT", "Your query either timed out or we're under heavy load"),
    "too_many_requests": ("TOO_MANY_REQUESTS", "Too many requests, please try again later"),
    "internal_server_error": ("INTERNAL_SERVER_ERROR", "Internal server error"),
}
HTTP_FAULTS = {"http429": 429, "http500": 500, "http502": 502, "http503": 503}
FAULT_KINDS = frozenset(
    {*GRAPHQL_FAULTS, *HTTP_FAULTS, "slow", "html", "html200", "not_json", "no_data", "reset"}
)
PROXY_PAGE = (
    b"<html><head><title>502 Bad Gateway</title></head>"
    b"<body><center><h1>502 Bad Gateway</h1></center><hr><center>nginx</center></body></html>"
)
LOGIN_PAGE = b"<!DOCTYPE html><html><head><title>Sign in</title></head><body>Sign in</body></html>"


@dataclass(frozen=True)
class RequestRecord:
    account_id: int | None
    nrql: str | None
    since_ms: int | None
    until_ms: int | None
    outcome: str
    status: int
    guid: str | None = None  # a dashboard entity request


@dataclass
class Reply:
    status: int
    body: bytes
    outcome: str
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)
    reset: bool = False  # close the connection without answering


# Real NerdGraph answers label FACET rows in three ways: `facet` plus the attributes (most),
# the attribute alone (newrelic-client-go's FACET + TIMESERIES fixture), or the `facet` list
# alone (answers to FACET on two attributes recorded through the New Relic CLI). The fake sends
# the second for these event types, the third for these on several attributes:
ATTRIBUTES_ONLY_EVENT_TYPES = frozenset({"TransactionError"})
FACET_LIST_ONLY_EVENT_TYPES = frozenset({"ReplicationLag"})


def real_facet_labels(rows: list[dict], metadata: dict) -> list[dict]:
    """The rows with their FACET labels as New Relic sends them for this event type."""
    facets = metadata.get("facets") or []
    event_types = set(metadata.get("eventTypes") or [])
    if not facets:
        return rows
    if event_types & ATTRIBUTES_ONLY_EVENT_TYPES:
        return [{k: v for k, v in row.items() if k != "facet"} for row in rows]
    if len(facets) > 1 and event_types & FACET_LIST_ONLY_EVENT_TYPES:
        return [{k: v for k, v in row.items() if k not in facets} for row in rows]
    return rows


def json_reply(status: int, payload: object, outcome: str) -> Reply:
    return Reply(status, orjson.dumps(payload), outcome)


def _graphql_error(message: str, error_class: str, outcome: str, field: str = "nrql") -> Reply:
    """A GraphQL error on the nrql field, the way NerdGraph reports it: HTTP 200."""
    path = ["actor", "account", field]
    error = {"message": message, "path": path, "extensions": {"errorClass": error_class}}
    payload = {"data": {"actor": {"account": {field: None}}}, "errors": [error]}
    return json_reply(200, payload, outcome)


def _nrql_reply(field: str, nrql: dict, outcome: str) -> Reply:
    return json_reply(200, {"data": {"actor": {"account": {field: nrql}}}}, outcome)


@dataclass
class AsyncQuery:
    """A query sent with `async: true`, waiting for its polls."""

    account_id: int
    nrql: str
    polls_left: int
    answered_at: float  # when the last answer about it was sent (the fake's clock)
    wants: frozenset[str] = frozenset()  # otherResult / totalResult, when the query asked


def _request_error(message: str) -> Reply:
    """A GraphQL validation error: no data at all."""
    payload = {"errors": [{"message": message, "extensions": {"errorClass": "BAD_USER_INPUT"}}]}
    return json_reply(200, payload, "bad_request")


_SINCE_UNTIL = re.compile(r"\s+(?:SINCE|UNTIL)\s+\d+")


def _fault_reply(kind: str, retry_after: float | None) -> Reply:
    if kind in HTTP_FAULTS:
        status = HTTP_FAULTS[kind]
        reply = json_reply(status, {"errors": [{"message": f"HTTP {status}"}]}, kind)
        if retry_after is not None and status in (429, 503):
            reply.headers["Retry-After"] = f"{retry_after:g}"
        return reply
    if kind in GRAPHQL_FAULTS:
        error_class, message = GRAPHQL_FAULTS[kind]
        return _graphql_error(message, error_class, kind)
    if kind == "html":
        return Reply(502, PROXY_PAGE, kind, "text/html")
    if kind == "html200":
        return Reply(200, LOGIN_PAGE, kind, "text/html")
    if kind == "not_json":
        return Reply(200, b'{"data": {"actor": {"acc', kind)
    if kind == "no_data":
        return json_reply(200, {"status": "ok"}, kind)
    return Reply(0, b"", kind, reset=True)


@dataclass(frozen=True)
class GraphqlRequest:
    account_id: int | None
    nrql: str | None
    since_ms: int | None = None
    until_ms: int | None = None
    problem: str | None = None  # why the request is not a valid NRQL request
    wants: frozenset[str] = frozenset()  # otherResult / totalResult, when the query asks
    guid: str | None = None  # `actor { entity(guid: $guid) }`: a dashboard request
    is_async: bool = False  # nrql(async: true)
    query_id: str | None = None  # a poll: nrqlQueryProgress(queryId:)
    buckets: int | None = None  # TIMESERIES buckets between SINCE and UNTIL


def _read_request(body: bytes) -> GraphqlRequest:
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        return GraphqlRequest(None, None, problem="The request body is not JSON")
    if not isinstance(document, dict):
        return GraphqlRequest(None, None, problem="The request body must be a JSON object")
    query, variables = document.get("query"), document.get("variables") or {}
    if isinstance(query, str) and "entity(guid:" in query.replace(" ", ""):
        guid = variables.get("guid") if isinstance(variables, dict) else None
        if isinstance(guid, str) and "$guid" in query:
            return GraphqlRequest(None, None, guid=guid)
        return GraphqlRequest(None, None, problem="Variable $guid (EntityGuid!) is required")
    account_id = variables.get("accountId") if isinstance(variables, dict) else None
    nrql = variables.get("nrql") if isinstance(variables, dict) else None
    account_id = account_id if type(account_id) is int else None
    nrql = nrql if isinstance(nrql, str) else None
    query_id = variables.get("queryId") if isinstance(variables, dict) else None
    if isinstance(query, str) and "nrqlQueryProgress" in query and type(account_id) is int:
        if isinstance(query_id, str | int) and "$queryId" in query:
            return GraphqlRequest(account_id, None, query_id=str(query_id))
        return GraphqlRequest(None, None, problem="A poll must pass $accountId and $queryId")
    since_ms = until_ms = buckets = None
    if nrql is not None:
        try:
            parsed = parse(nrql)
            since_ms, until_ms = parsed.since_ms, parsed.until_ms
            if parsed.step_seconds and since_ms is not None and until_ms is not None:
                buckets = -(-(until_ms - since_ms) // (parsed.step_seconds * 1000))
        except NrqlError:
            pass
    is_async = isinstance(variables, dict) and variables.get("async") is True
    problem = None
    if not isinstance(query, str) or "$accountId" not in query or "$nrql" not in query:
        problem = "The query must pass the account and the NRQL as variables $accountId, $nrql"
    elif account_id is None or nrql is None:
        problem = "Variables must hold accountId (Int!) and nrql (Nrql!)"
    wants = frozenset(
        name
        for name in ("otherResult", "totalResult")
        if isinstance(query, str) and re.search(rf"\b{name}\b", query)
    )
    return GraphqlRequest(
        account_id, nrql, since_ms, until_ms, problem, wants,
        is_async=is_async, buckets=buckets,
    )  # fmt: skip


class FakeNerdGraph:
    """The fake server; start() runs it on a background thread."""

    thread_name = "fake-nerdgraph"

    @staticmethod
    def handler_class() -> type[BaseHTTPRequestHandler]:
        return Handler

    def __init__(
        self,
        *,
        api_key: str = DEFAULT_API_KEY,
        accounts: set[int] | frozenset[int] = frozenset({DEFAULT_ACCOUNT}),
        retention: timedelta = timedelta(days=8),
        now: Callable[[], float] = time.time,
        bad_key_style: Literal["http401", "graphql"] = "http401",
        latency: float = 0.0,
        dashboards: dict[str, dict] | None = None,
    ) -> None:
        self.api_key = api_key
        self.accounts = set(accounts)
        # GUID -> the DashboardEntity answered for `actor { entity(guid:) }`
        self.dashboards = default_dashboards() if dashboards is None else dict(dashboards)
        self.retention = retention
        self.now = now
        self.bad_key_style = bad_key_style
        self.latency = latency
        self._lock = threading.Lock()
        self._log: list[RequestRecord] = []
        self._counter = 0
        self._faults_given = 0
        self._per_query: dict[str, int] | None = None  # query → its requests, when per_query
        self._faults: list[str] = []
        self._every = 1
        self._retry_after: float | None = None
        self._rejections: dict[str, str] = {}
        self._messages: dict[str, list[str]] = {}
        self._late: tuple[int, float] | None = None
        self._too_big: dict[str, int] = {}  # NRQL substring → most buckets answered
        self._async_polls = 0  # polls an async query needs; 0: it completes at once
        self._async_retry_after = 1.0
        self._async_retry_deadline = 30.0
        self._async_queries: dict[str, AsyncQuery] = {}
        self._same_text_per_minute: int | None = None
        self._same_text: defaultdict[str, deque[float]] = defaultdict(deque)
        self._stopping = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self, host: str = "127.0.0.1", port: int = 0) -> Self:
        server = ThreadingHTTPServer((host, port), self.handler_class())
        server.daemon_threads = True
        server.fake = self  # type: ignore[attr-defined]
        self._server = server
        self._stopping.clear()
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name=self.thread_name
        )
        self._thread.daemon = True
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        self._stopping.set()  # wakes requests that wait for latency
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join()
        self._server = self._thread = None

    def __enter__(self) -> FakeNerdGraph:
        return self if self._server is not None else self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("FakeNerdGraph is not started")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/graphql"

    # -- control -----------------------------------------------------------------------------

    @property
    def requests(self) -> list[RequestRecord]:
        """A snapshot of the request log, oldest first."""
        with self._lock:
            return list(self._log)

    def set_faults(
        self,
        kinds: Sequence[str],
        every: int = 1,
        retry_after: float | None = None,
        *,
        per_query: bool = False,
    ) -> None:
        """From now on, every `every`-th POST /graphql gets the next of `kinds` (cycling).

        `per_query`: every `every`-th request *of each query* (its NRQL without SINCE/UNTIL),
        a schedule that does not depend on how concurrent requests interleave.
        """
        unknown = sorted(set(kinds) - FAULT_KINDS)
        if unknown:
            raise ValueError(f"unknown fault kinds {unknown}; known: {sorted(FAULT_KINDS)}")
        if every < 1:
            raise ValueError(f"every must be >= 1, got {every}")
        with self._lock:
            self._faults, self._every, self._retry_after = list(kinds), every, retry_after
            self._counter = self._faults_given = 0
            self._per_query = {} if per_query else None

    def reject_nrql(
        self,
        substring: str,
        message: str = "NRQL Syntax Error: Error at line 1 position 15, unexpected 'FROM'",
    ) -> None:
        """Answer every NRQL containing `substring` with this NRQL error."""
        with self._lock:
            self._rejections[substring] = message

    def add_messages(self, substring: str, messages: Sequence[str]) -> None:
        """Answer every NRQL containing `substring` with these metadata.messages (warnings)."""
        with self._lock:
            self._messages[substring] = list(messages)

    def messages_for(self, nrql: str) -> list[str]:
        with self._lock:
            configured = dict(self._messages)
        return [m for substring, found in configured.items() if substring in nrql for m in found]

    def arrive_late(self, since_seconds: int, increment: float = 1.0) -> None:
        """Late data: from now on, every number of a bucket beginning at or after
        `since_seconds` (epoch) is `increment` larger than before (times stay as they are)."""
        with self._lock:
            self._late = (since_seconds, increment)

    def allow_nrql(self, substring: str) -> None:
        """Stop rejecting NRQL containing `substring` (undoes `reject_nrql`)."""
        with self._lock:
            self._rejections.pop(substring, None)

    def time_out_above(self, buckets: int, substring: str = "") -> None:
        """Answer TIMEOUT to TIMESERIES queries (containing `substring`) over `buckets`."""
        with self._lock:
            self._too_big[substring] = buckets

    def set_async(self, polls: int, retry_after: float = 1.0, retry_deadline: float = 30.0) -> None:
        """Async queries complete on their `polls`-th poll (see the module's docstring)."""
        with self._lock:
            self._async_polls = polls
            self._async_retry_after = retry_after
            self._async_retry_deadline = retry_deadline

    def limit_same_text(self, per_minute: int | None = 120) -> None:
        """Refuse one NRQL text over `per_minute` times a minute with HTTP 429 (None: never)."""
        with self._lock:
            self._same_text_per_minute = per_minute
            self._same_text.clear()

    def reset_log(self) -> None:
        with self._lock:
            self._log.clear()

    # -- serving -----------------------------------------------------------------------------

    def handle_graphql(self, api_key: str | None, body: bytes) -> Reply:
        request = _read_request(body)
        fault = self._next_fault(request.nrql)
        self._wait(self.latency)
        if self._over_same_text(request):
            message = "Too many requests with the same query text, please try again later"
            reply = json_reply(429, {"errors": [{"message": message}]}, "same_text_limit")
        else:
            reply = self._reply(fault, api_key, request)
        self._record(request, reply)
        return reply

    def _reply(self, fault: str | None, api_key: str | None, request: GraphqlRequest) -> Reply:
        if fault == "slow":
            self._wait(self.latency or SLOW_SECONDS)
        elif fault is not None:
            return _fault_reply(fault, self._retry_after)
        reply = self._answer(api_key, request)
        if fault == "slow" and reply.outcome == "ok":
            reply.outcome = fault
        return reply

    def _answer(self, api_key: str | None, request: GraphqlRequest) -> Reply:
        if api_key != self.api_key:
            return self._bad_key()
        if request.problem is not None:
            return _request_error(request.problem)
        if request.guid is not None:
            entity = self.dashboards.get(request.guid)
            outcome = "ok" if entity is not None else "no_entity"
            return json_reply(200, {"data": {"actor": {"entity": entity}}}, outcome)
        assert request.account_id is not None
        if request.account_id not in self.accounts:
            message = f"You are not authorized to query account {request.account_id}"
            return _graphql_error(message, "FORBIDDEN", "forbidden")
        if request.query_id is not None:
            return self._poll(request.account_id, request.query_id)
        assert request.nrql is not None
        with self._lock:
            rejections = dict(self._rejections)
            too_big = dict(self._too_big)
            polls = self._async_polls
        for substring, message in rejections.items():
            if substring in request.nrql:
                return _graphql_error(message, "INVALID_INPUT", "nrql_error")
        for substring, most in too_big.items():
            if substring in request.nrql and (request.buckets or 1) > most:
                return _graphql_error(TOO_BIG_MESSAGE, "TIMEOUT", "too_big")
        if request.is_async and polls > 0:
            return self._start_async(request.account_id, request.nrql, polls, request.wants)
        return self._results("nrql", request.nrql, None, request.wants)

    def _results(
        self, field: str, nrql_text: str, progress: dict | None, wants: frozenset[str] = frozenset()
    ) -> Reply:
        try:
            result = answer(
                nrql_text, now=self.now(), retention_seconds=self.retention.total_seconds()
            )
        except NrqlError as error:
            return _graphql_error(str(error), "INVALID_INPUT", "nrql_error", field)
        stats = {
            "inspectedCount": INSPECTED_PER_ROW * len(result.results),
            "matchCount": INSPECTED_PER_ROW * len(result.results),
            "omittedCount": 0,
            "exceedsRetentionWindow": False,
            "wallClockTime": 3,
        }
        metadata = {**result.metadata, "messages": self.messages_for(nrql_text)}
        nrql = {
            "results": real_facet_labels(self._with_late_data(result.results), result.metadata),
            "metadata": metadata,
            "rawResponse": {"performanceStats": stats, "metadata": metadata},
        }
        if "otherResult" in wants:
            nrql["otherResult"] = result.other
        if "totalResult" in wants:
            nrql["totalResult"] = result.total
        if progress is not None:
            nrql["queryProgress"] = progress
        return _nrql_reply(field, nrql, "ok")

    def _progress(self, query_id: str, completed: bool) -> dict:
        with self._lock:
            retry_after, deadline = self._async_retry_after, self._async_retry_deadline
        return {
            "queryId": query_id,
            "completed": completed,
            "retryAfter": retry_after,
            "retryDeadline": deadline,
            "resultExpiration": RESULT_EXPIRATION_SECONDS,
        }

    def _start_async(
        self, account_id: int, nrql_text: str, polls: int, wants: frozenset[str]
    ) -> Reply:
        with self._lock:
            query_id = f"fake-{len(self._async_queries) + 1:06d}"
            self._async_queries[query_id] = AsyncQuery(
                account_id, nrql_text, polls, self.now(), wants
            )
        progress = self._progress(query_id, False)
        return _nrql_reply("nrql", {"results": None, "queryProgress": progress}, "async_started")

    def _poll(self, account_id: int, query_id: str) -> Reply:
        field = "nrqlQueryProgress"
        now = self.now()
        with self._lock:
            query = self._async_queries.get(query_id)
            if query is None or query.account_id != account_id:
                message = f"No query {query_id} for account {account_id}"
                return _graphql_error(message, "INVALID_INPUT", "bad_request", field)
            waited = now - query.answered_at
            if waited > self._async_retry_deadline:
                del self._async_queries[query_id]
                message = f"Query {query_id} was cancelled: not polled within its retryDeadline"
                return _graphql_error(message, "INVALID_INPUT", "async_cancelled", field)
            query.answered_at = now
            if waited >= self._async_retry_after:
                query.polls_left -= 1
            finished = query.polls_left <= 0
            if finished:
                del self._async_queries[query_id]
        if finished:
            return self._results(field, query.nrql, self._progress(query_id, True), query.wants)
        progress = self._progress(query_id, False)
        return _nrql_reply(field, {"results": None, "queryProgress": progress}, "async_running")

    def _with_late_data(self, results: list[dict]) -> list[dict]:
        with self._lock:
            late = self._late
        if late is None:
            return results
        since, increment = late
        times = ("beginTimeSeconds", "endTimeSeconds", "timestamp")
        return [
            {
                key: value + increment
                if key not in times
                and type(value) in (int, float)
                and row.get("beginTimeSeconds", 0) >= since
                else value
                for key, value in row.items()
            }
            for row in results
        ]

    def _over_same_text(self, request: GraphqlRequest) -> bool:
        """Count this arrival of its NRQL text; True if it is one too many in 60 s."""
        if request.nrql is None or request.query_id is not None:
            return False
        with self._lock:
            if self._same_text_per_minute is None:
                return False
            now = self.now()
            arrivals = self._same_text[request.nrql]
            while arrivals and arrivals[0] <= now - 60.0:
                arrivals.popleft()
            arrivals.append(now)
            return len(arrivals) > self._same_text_per_minute

    def _bad_key(self) -> Reply:
        error = {"message": "Invalid API key", "extensions": {"error_code": "BAD_API_KEY"}}
        if self.bad_key_style == "http401":
            return json_reply(401, {"errors": [error]}, "bad_api_key")
        return json_reply(200, {"data": {"actor": None}, "errors": [error]}, "bad_api_key")

    def _next_fault(self, nrql: str | None) -> str | None:
        with self._lock:
            self._counter += 1
            count = self._counter
            if self._per_query is not None:
                query = _SINCE_UNTIL.sub("", nrql or "")
                count = self._per_query[query] = self._per_query.get(query, 0) + 1
            if not self._faults or count % self._every:
                return None
            self._faults_given += 1
            return self._faults[(self._faults_given - 1) % len(self._faults)]

    def _record(self, request: GraphqlRequest, reply: Reply) -> None:
        record = RequestRecord(
            request.account_id,
            request.nrql,
            request.since_ms,
            request.until_ms,
            reply.outcome,
            reply.status,
            request.guid,
        )
        with self._lock:
            self._log.append(record)

    def _wait(self, seconds: float) -> None:
        if seconds > 0:
            self._stopping.wait(seconds)

    def handle_control(self, method: str, path: str, body: bytes) -> Reply | None:
        """The /_requests, /_faults, /_reject, /_messages and /_reset endpoints; None for others."""
        if (method, path) == ("GET", "/_requests"):
            return json_reply(200, self.requests, "control")
        if method != "POST" or path not in ("/_faults", "/_reject", "/_messages", "/_reset"):
            return None
        try:
            settings = orjson.loads(body or b"{}")
            if path == "/_faults":
                self.set_faults(
                    settings["kinds"],
                    settings.get("every", 1),
                    settings.get("retry_after"),
                    per_query=bool(settings.get("per_query", False)),
                )
            elif path == "/_messages":
                self.add_messages(settings["substring"], list(settings["messages"]))
            elif path == "/_reject":
                self.reject_nrql(settings["substring"], *filter(None, [settings.get("message")]))
            else:
                self.reset_log()
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as error:
            return json_reply(400, {"error": f"{path}: {error!r}"}, "control")
        return json_reply(200, {"ok": True}, "control")


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: the archiver and the benchmark reuse connections
    server_version = "FakeNerdGraph/1.0"

    @property
    def fake(self) -> FakeNerdGraph:
        return self.server.fake  # type: ignore[attr-defined]

    def do_GET(self) -> None:
        self._send(self.fake.handle_control("GET", self.path, b""))

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.path == "/graphql":
            self._send(self.fake.handle_graphql(self.headers.get("API-Key"), body))
        else:
            self._send(self.fake.handle_control("POST", self.path, body))

    def _send(self, reply: Reply | None) -> None:
        if reply is None:
            reply = json_reply(404, {"error": f"no such endpoint: {self.command} {self.path}"}, "")
        if reply.reset:
            self._reset_connection()
            return
        self.send_response(reply.status)
        self.send_header("Content-Type", reply.content_type)
        self.send_header("Content-Length", str(len(reply.body)))
        for name, header_value in reply.headers.items():
            self.send_header(name, header_value)
        self.end_headers()
        self.wfile.write(reply.body)

    def _reset_connection(self) -> None:
        """Abort with a TCP RST: the client sees the connection reset, not an answer."""
        self.close_connection = True
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: the request log is kept in FakeNerdGraph.requests."""


def command_line(
    prog: str, description: str | None, port: int, key_option: str, default_key: str
) -> argparse.ArgumentParser:
    """The options both fakes take; `key_option` names the key (--api-key, --query-key)."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=port)
    parser.add_argument(key_option, dest="key", default=default_key)
    parser.add_argument("--account", type=int, action="append", help="repeatable")
    parser.add_argument("--faults", default="", help="comma-separated fault kinds")
    parser.add_argument("--fault-every", type=int, default=1)
    parser.add_argument("--retry-after", type=float)
    parser.add_argument("--latency", type=float, default=0.0)
    parser.add_argument(
        "--same-text-per-minute",
        type=int,
        help="answer HTTP 429 to one NRQL text over N times a minute (New Relic: 120)",
    )
    return parser


def serve(fake: FakeNerdGraph, args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Print the URL, answer until SIGTERM or SIGINT, exit 0."""
    faults = [kind for kind in args.faults.split(",") if kind]
    try:
        fake.set_faults(faults, args.fault_every, args.retry_after)
        if args.same_text_per_minute is not None and hasattr(fake, "limit_same_text"):
            fake.limit_same_text(args.same_text_per_minute)
    except ValueError as error:
        parser.error(str(error))
    stop = threading.Event()
    for signal_number in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signal_number, lambda *_: stop.set())
    with fake.start(args.host, args.port):
        print(fake.url, flush=True)
        stop.wait()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = command_line("python -m fakes.nerdgraph", __doc__, 8765, "--api-key", DEFAULT_API_KEY)
    args = parser.parse_args(argv)
    accounts = set(args.account or [DEFAULT_ACCOUNT])
    return serve(
        FakeNerdGraph(api_key=args.key, accounts=accounts, latency=args.latency), args, parser
    )


if __name__ == "__main__":
    sys.exit(main())
