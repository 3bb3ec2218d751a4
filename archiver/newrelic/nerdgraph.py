"""The NerdGraph client: one NRQL query in, its rows out, every failure classified once.

Each answer is classified right here, next to the call: `TransientError` (retried with
exponential backoff and jitter by tenacity, honouring Retry-After), `QueryTooBig` (New Relic
gave up on the query's size: raised at once when the caller can ask for fewer buckets, else
retried like a transient failure), `AuthError` or `NewRelicError` (never retried; the message
is New Relic's own). The API key never appears in
an exception message, a log line or a repr.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import orjson
import requests

from archiver import logs
from archiver.errors import AuthError, NewRelicError, QueryTooBig, TransientError
from archiver.newrelic.client import (
    Digest,
    NewRelicClient,
    NrqlResult,
    Turn,
    digested,
    inspected_count,
    parsing,
    wait_turn,
)
from archiver.newrelic.limiter import Limiter
from archiver.newrelic.transport import (
    excerpt,
    json_body,
    limited,
    raise_for_status,
    retry_policy,
    with_retries,
)
from archiver.pipeline import completeness

# The NRQL text and every other value travel as GraphQL variables, never inside this text.
GRAPHQL = """\
query($accountId: Int!, $nrql: Nrql!, $timeout: Seconds, $async: Boolean) {
  actor {
    account(id: $accountId) {
      nrql(query: $nrql, timeout: $timeout, async: $async) {
        results
        metadata { facets eventTypes messages timeWindow { begin end } }
        rawResponse
        queryProgress { queryId completed retryAfter retryDeadline resultExpiration }
      }
    }
  }
}
"""
# An asynchronous query still running: ask for its progress (or results) by its queryId.
POLL_GRAPHQL = """\
query($accountId: Int!, $queryId: ID!) {
  actor {
    account(id: $accountId) {
      nrqlQueryProgress(queryId: $queryId) {
        results
        metadata { facets eventTypes messages timeWindow { begin end } }
        rawResponse
        queryProgress { queryId completed retryAfter retryDeadline resultExpiration }
      }
    }
  }
}
"""

# With `other: true`: otherResult holds the facets beyond LIMIT (per bucket with TIMESERIES).
GRAPHQL_WITH_OTHER = GRAPHQL.replace("        results\n", "        results\n        otherResult\n")
POLL_GRAPHQL_WITH_OTHER = POLL_GRAPHQL.replace(
    "        results\n", "        results\n        otherResult\n"
)

# A dashboard: its pages and every widget's raw configuration (nrqlQueries, markdown text...).
DASHBOARD_GRAPHQL = """\
query($guid: EntityGuid!) {
  actor {
    entity(guid: $guid) {
      guid
      name
      entityType
      ... on DashboardEntity {
        pages { name widgets { title visualization { id } rawConfiguration } }
      }
    }
  }
}
"""

TRANSIENT_ERROR_CLASSES = frozenset({"TOO_MANY_REQUESTS", "INTERNAL_SERVER_ERROR", "SERVER_ERROR"})
# New Relic gave up on the size of the query: ask again with fewer buckets (QueryTooBig).
TOO_BIG_ERROR_CLASSES = frozenset({"TIMEOUT"})
TOO_BIG_MESSAGE = re.compile(
    r"exceeded the set timeout|query is a little too big|fewer buckets", re.IGNORECASE
)
BAD_KEY_HINT = "check NEW_RELIC_API_KEY (a user key, NRAK-...)"
# The HTTP read timeout outlasts the NRQL timeout, so that New Relic's own TIMEOUT answer
# (with its message) arrives before we give up on the connection.
NRQL_TIMEOUT_MARGIN_SECONDS = 5.0
DEFAULT_NRQL_TIMEOUT_SECONDS = 60  # New Relic's own default is 5 s; 120 s is the most it takes
# Asynchronous queries (Data Plus) run for up to 10 minutes at New Relic; give up after that.
ASYNC_MAX_SECONDS = 660.0
ASYNC_DEADLINE_MARGIN_SECONDS = 1.0  # poll at least this long before New Relic's retryDeadline
ASYNC_DEFAULT_RETRY_AFTER_SECONDS = 1.0


class NerdGraphClient(NewRelicClient):
    """Runs NRQL queries through NerdGraph; share one between threads so its limiter is shared.

    `timeout` bounds each HTTP request (connecting takes at most 10 s of it; reading never gives
    up before `nrql_timeout` + 5 s). `max_attempts` and `max_total_seconds` bound the requests
    of one query() call (each poll of an asynchronous query has its own), measured on `clock`;
    `sleep` and `clock` are there for tests. `async_queries` sends `nrql(async: true)` and polls
    `nrqlQueryProgress` until the query completes (Data Plus accounts).
    """

    def __init__(
        self,
        url: str,
        api_key: str,
        *,
        timeout: float = 60.0,
        nrql_timeout: int = DEFAULT_NRQL_TIMEOUT_SECONDS,
        async_queries: bool = False,
        limiter: Limiter | None = None,
        max_attempts: int = 6,
        max_total_seconds: float = 300.0,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        session: requests.Session | None = None,
        backoff_base: float = 1.0,
    ) -> None:
        logs.register_secret(api_key)
        headers = {"Content-Type": "application/json", "API-Key": api_key}
        self._post_url = url
        self._nrql_timeout = nrql_timeout
        self._async = async_queries
        super().__init__(
            limited(
                url, headers, timeout, nrql_timeout + NRQL_TIMEOUT_MARGIN_SECONDS, session, limiter
            ),
            retry_policy(max_attempts, max_total_seconds, backoff_base, sleep, clock),
        )
        self._sleep = sleep
        self._clock = clock

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

        `other` asks for otherResult too (the facets beyond LIMIT).

        `shrinkable`: the caller can ask again with fewer buckets, so a QueryTooBig is raised at
        once; otherwise (a window of one bucket, raw events) it is retried like a transient
        failure, and raised with New Relic's message when the attempts run out.

        `digest` and `turn`: see `client.NewRelicClient.query`. The progress of an asynchronous
        query is read at once (New Relic's deadline runs): its final answer waits its turn
        parsed.
        """
        body = orjson.dumps(
            {
                "query": GRAPHQL_WITH_OTHER if other else GRAPHQL,
                "variables": {
                    "accountId": account_id,
                    "nrql": nrql,
                    "timeout": self._nrql_timeout,
                    **({"async": True} if self._async else {}),
                },
            }
        )
        answer, attempts = self._send(account_id, body, "nrql", shrinkable, digest, turn, nrql)
        requests, retries = attempts, attempts - 1
        if not isinstance(answer, NrqlResult):  # an asynchronous query still running
            answer, polls, poll_retries = self._poll(
                account_id, answer, shrinkable, other, digest, turn
            )
            requests, retries = requests + polls, retries + poll_retries
        return replace(answer, requests=requests, retries=retries)

    def dashboard(self, guid: str) -> dict[str, Any]:
        """The dashboard entity `guid`: name, pages, widgets; errors classified like query()."""
        body = orjson.dumps({"query": DASHBOARD_GRAPHQL, "variables": {"guid": guid}})
        answer, _ = with_retries(
            self._retry,
            f"dashboard {guid}",
            lambda: _dashboard_object(_checked_json(self._post(body), self.url), guid),
            transport=self._transport,
        )
        return answer

    def _send(
        self,
        account_id: int,
        body: bytes,
        field: str,
        shrinkable: bool,
        digest: Digest | None,
        turn: Turn | None,
        nrql: str | None = None,
    ) -> tuple[NrqlResult | dict[str, Any], int]:
        """The answer, digested, or a running asynchronous query's progress (a dict), and the
        attempts it took. `nrql`: the query's text, for the limiter's same-text cap (None for
        a poll)."""

        def attempt() -> NrqlResult | dict[str, Any]:
            response = self._post(body, account_id, nrql)
            _check_status(response, self.url)
            if not self._async:
                wait_turn(turn)  # unparsed: its JSON bytes are the least memory it takes
            size, held = len(response.content), [response]
            del response  # parsed, its JSON bytes need not wait for the digest

            def parse() -> NrqlResult | dict[str, Any]:
                answer = _nrql_object(json_body(held.pop()), field)
                if _running(answer) or (self._async and turn is not None):
                    return answer
                return digested(_result(answer, size), digest)

            answer = parsing(parse)
            if isinstance(answer, NrqlResult) or _running(answer):
                return answer
            wait_turn(turn)  # an asynchronous query's answer: its progress was read at once
            return parsing(lambda: digested(_result(answer, size), digest))

        return with_retries(
            self._retry, account_id, attempt, shrinkable=shrinkable, transport=self._transport
        )

    def _post(
        self, body: bytes, account: int | None = None, nrql: str | None = None
    ) -> requests.Response:
        return self._transport.request(
            "POST", self._post_url, account=account, nrql=nrql, data=body
        )

    def _poll(
        self,
        account_id: int,
        answer: dict[str, Any],
        shrinkable: bool,
        other: bool,
        digest: Digest | None,
        turn: Turn | None,
    ) -> tuple[NrqlResult, int, int]:
        """Poll an asynchronous query until it completes: its answer, the polls and retries.

        Each poll waits New Relic's `retryAfter`, but never so long that it would miss the
        `retryDeadline` (after which New Relic may cancel the query); both are in seconds from
        the answer that gave them.
        """
        started = self._clock()
        polls = retries = 0
        progressing: NrqlResult | dict[str, Any] = answer
        while not isinstance(progressing, NrqlResult):
            progress = progressing["queryProgress"]
            query_id = progress.get("queryId")
            if query_id is None:
                raise NewRelicError("New Relic's asynchronous answer has no queryId to poll")
            if self._clock() - started > ASYNC_MAX_SECONDS:
                raise TransientError(
                    f"New Relic's asynchronous query {query_id} did not complete within "
                    f"{ASYNC_MAX_SECONDS:.0f} s"
                )
            self._sleep(_poll_wait(progress))
            body = orjson.dumps(
                {
                    "query": POLL_GRAPHQL_WITH_OTHER if other else POLL_GRAPHQL,
                    "variables": {"accountId": account_id, "queryId": str(query_id)},
                }
            )
            progressing, attempts = self._send(
                account_id, body, "nrqlQueryProgress", shrinkable, digest, turn
            )
            polls, retries = polls + attempts, retries + attempts - 1
        return progressing, polls, retries


def _result(answer: dict[str, Any], size: int) -> NrqlResult:
    """A completed answer's NrqlResult (`size`: its JSON's bytes), its requests not counted yet."""
    return NrqlResult(
        size=size,
        results=answer["results"],
        facets=_facets(answer.get("metadata")),
        requests=0,
        retries=0,
        other=answer.get("otherResult"),
        messages=completeness.messages(answer.get("metadata")),
        inspected=inspected_count(answer.get("rawResponse")),
    )


def _checked_json(response: requests.Response, url: str) -> Any:
    """The JSON body of a successful answer; HTTP failures raised as their class."""
    _check_status(response, url)
    return json_body(response)


def _check_status(response: requests.Response, url: str) -> None:
    """HTTP failures, classified (before the answer waits its turn to be parsed)."""
    status = response.status_code
    if status == 401:
        raise AuthError(f"New Relic rejected the API key (HTTP 401): {BAD_KEY_HINT}")
    if status == 403:
        raise AuthError(
            f"New Relic refused the request (HTTP 403): {_describe(response)}: "
            "check that NEW_RELIC_API_KEY is a user key (NRAK-...) allowed to query this account"
        )
    raise_for_status(response, _describe, "NEW_RELIC_NERDGRAPH_URL", url)


def _nrql_object(body: Any, field: str = "nrql") -> dict[str, Any]:
    errors = body.get("errors") if isinstance(body, dict) else None
    if errors:
        raise _graphql_error(errors if isinstance(errors, list) else [errors])
    nrql = _dig(body, "data", "actor", "account", field)
    if isinstance(nrql, dict) and _running(nrql):
        return nrql
    if not isinstance(nrql, dict) or not isinstance(nrql.get("results"), list):
        raise TransientError(
            "New Relic's answer has no data for the query and no error: "
            f"{excerpt(orjson.dumps(body).decode())!r}"
        )
    return nrql


def _dashboard_object(body: Any, guid: str) -> dict[str, Any]:
    errors = body.get("errors") if isinstance(body, dict) else None
    if errors:
        raise _graphql_error(errors if isinstance(errors, list) else [errors])
    actor = _dig(body, "data", "actor")
    if not isinstance(actor, dict):
        raise TransientError(
            "New Relic's answer has no data for the dashboard and no error: "
            f"{excerpt(orjson.dumps(body).decode())!r}"
        )
    entity = actor.get("entity")
    if entity is None:
        raise NewRelicError(
            f"New Relic has no entity with GUID {guid!r} that this API key can see: "
            "copy the GUID from the dashboard's metadata (the 'See metadata' menu)"
        )
    if not isinstance(entity, dict) or not isinstance(entity.get("pages"), list):
        kind = entity.get("entityType") if isinstance(entity, dict) else None
        raise NewRelicError(f"entity {guid!r} is not a dashboard (it is {kind or 'unknown'})")
    return entity


def _graphql_error(errors: list[Any]) -> Exception:
    entries = [error if isinstance(error, dict) else {"message": str(error)} for error in errors]
    messages = list(dict.fromkeys(str(entry.get("message") or entry) for entry in entries))
    extensions = [entry.get("extensions") or {} for entry in entries]
    if any(
        ext.get("error_code") == "BAD_API_KEY" for ext in extensions if isinstance(ext, dict)
    ) or any("invalid api key" in message.lower() for message in messages):
        return AuthError(f"New Relic rejected the API key (BAD_API_KEY): {BAD_KEY_HINT}")
    message = logs.redact("; ".join(messages))
    classes = {ext.get("errorClass") for ext in extensions if isinstance(ext, dict)}
    if classes & TOO_BIG_ERROR_CLASSES or TOO_BIG_MESSAGE.search(message):
        return QueryTooBig(message)
    if classes & TRANSIENT_ERROR_CLASSES:
        return TransientError(message)
    return NewRelicError(message)


def _running(nrql: dict[str, Any]) -> bool:
    """An asynchronous query that has not completed yet (no results to read)."""
    progress = nrql.get("queryProgress")
    return isinstance(progress, dict) and progress.get("completed") is False


def _seconds(value: Any, default: float) -> float:
    """A `Seconds` scalar (a number, or a number as text) as float."""
    try:
        return max(0.0, float(value))
    except (TypeError, ValueError):
        return default


def _poll_wait(progress: dict[str, Any]) -> float:
    """`retryAfter`, but early enough for the `retryDeadline` (both seconds from now)."""
    wait = _seconds(progress.get("retryAfter"), ASYNC_DEFAULT_RETRY_AFTER_SECONDS)
    if progress.get("retryDeadline") is not None:
        deadline = _seconds(progress.get("retryDeadline"), wait)
        wait = min(wait, max(0.0, deadline - ASYNC_DEADLINE_MARGIN_SECONDS))
    return wait


def _dig(value: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


def _facets(metadata: Any) -> tuple[str, ...]:
    facets = metadata.get("facets") if isinstance(metadata, dict) else None
    if not facets:
        return ()
    if isinstance(facets, str):
        return (facets,)
    return tuple(str(facet) for facet in facets)


def _describe(response: requests.Response) -> str:
    """New Relic's error messages when the body has them, else a short excerpt of the body."""
    try:
        errors = orjson.loads(response.content).get("errors")
        messages = [str(error["message"]) for error in errors]
    except (orjson.JSONDecodeError, AttributeError, KeyError, TypeError):
        messages = []
    if messages:
        return logs.redact("; ".join(dict.fromkeys(messages)))
    return repr(excerpt(response.text)) if response.text.strip() else "(empty body)"
