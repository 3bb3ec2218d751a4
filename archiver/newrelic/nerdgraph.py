"""The NerdGraph client: one NRQL query in, its rows out, every failure classified once.

Each answer is classified right here, next to the call: `TransientError` (retried with
exponential backoff and jitter by tenacity, honouring Retry-After), `QueryTooBig` (New Relic
gave up on the query's size: raised at once when the caller can ask for fewer buckets, else
retried like a transient failure), `AuthError` or `NewRelicError` (never retried; the message
is New Relic's own). The API key never appears in
an exception message, a log line or a repr.
"""

from __future__ import annotations

import gc
import logging
import re
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit

import orjson
import requests
import urllib3.exceptions
from tenacity import RetryCallState, Retrying, retry_if_exception_type, stop_after_attempt
from tenacity.wait import wait_exponential_jitter

from archiver import logs
from archiver.errors import AuthError, NewRelicError, QueryTooBig, TransientError
from archiver.newrelic.limiter import Limiter
from archiver.pipeline import completeness
from archiver.retry import retry_after_seconds

log = logging.getLogger(__name__)
T = TypeVar("T")

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
EXCERPT_CHARS = 80
BACKOFF_MAX_SECONDS = 60.0
CONNECT_TIMEOUT_SECONDS = 10.0
# The HTTP read timeout outlasts the NRQL timeout, so that New Relic's own TIMEOUT answer
# (with its message) arrives before we give up on the connection.
NRQL_TIMEOUT_MARGIN_SECONDS = 5.0
DEFAULT_NRQL_TIMEOUT_SECONDS = 60  # New Relic's own default is 5 s; 120 s is the most it takes
# Asynchronous queries (Data Plus) run for up to 10 minutes at New Relic; give up after that.
ASYNC_MAX_SECONDS = 660.0
ASYNC_DEADLINE_MARGIN_SECONDS = 1.0  # poll at least this long before New Relic's retryDeadline
ASYNC_DEFAULT_RETRY_AFTER_SECONDS = 1.0
# Parsed answers are exempt from garbage collection (`parse_answer`); every this many answers,
# one full collection frees any cyclic garbage that was exempted with them. (A count, not
# gc.get_freeze_count(), which walks every frozen object: 2 ms a call.)
ANSWERS_PER_FULL_COLLECTION = 1000
_frozen = {"answers": 0}


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


class NerdGraphClient:
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
        self._backoff_base = backoff_base
        self.url = _displayable(url)
        self._post_url = url
        self._headers = {"Content-Type": "application/json", "API-Key": api_key}
        self._nrql_timeout = nrql_timeout
        self._async = async_queries
        self._http_timeout = (
            min(timeout, CONNECT_TIMEOUT_SECONDS),
            max(timeout, nrql_timeout + NRQL_TIMEOUT_MARGIN_SECONDS),
        )
        self._limiter = limiter if limiter is not None else Limiter()
        self._max_attempts = max_attempts
        self._max_total_seconds = max_total_seconds
        self._sleep = sleep
        self._clock = clock
        # requests' own adapter does not retry (max_retries=0): tenacity is the only retry layer.
        self._owns_session = session is None
        self._session = session or requests.Session()

    def __repr__(self) -> str:
        return f"NerdGraphClient(url={self.url!r})"

    def __enter__(self) -> NerdGraphClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        if self._owns_session:
            self._session.close()

    def query(
        self, account_id: int, nrql: str, *, other: bool = False, shrinkable: bool = False
    ) -> NrqlResult:
        """Run one NRQL query, retrying transient failures; raise the last one if they persist.

        `other` asks for otherResult too (the facets beyond LIMIT).

        `shrinkable`: the caller can ask again with fewer buckets, so a QueryTooBig is raised at
        once; otherwise (a window of one bucket, raw events) it is retried like a transient
        failure, and raised with New Relic's message when the attempts run out.
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
        answer, attempts = self._send(account_id, body, "nrql", shrinkable)
        requests, retries = attempts, attempts - 1
        if _running(answer):
            answer, polls, poll_retries = self._poll(account_id, answer, shrinkable, other)
            requests, retries = requests + polls, retries + poll_retries
        return NrqlResult(
            results=answer["results"],
            facets=_facets(answer.get("metadata")),
            requests=requests,
            retries=retries,
            other=answer.get("otherResult"),
            messages=completeness.messages(answer.get("metadata")),
            inspected=inspected_count(answer.get("rawResponse")),
        )

    def dashboard(self, guid: str) -> dict[str, Any]:
        """The dashboard entity `guid`: name, pages, widgets; errors classified like query()."""
        body = orjson.dumps({"query": DASHBOARD_GRAPHQL, "variables": {"guid": guid}})
        answer, _ = self._with_retries(
            f"dashboard {guid}",
            lambda: _dashboard_object(
                _checked_json(self._request("POST", self._post_url, data=body), self.url), guid
            ),
        )
        return answer

    def _send(
        self, account_id: int, body: bytes, field: str, shrinkable: bool
    ) -> tuple[dict[str, Any], int]:
        return self._with_retries(
            account_id,
            lambda: _classify(self._request("POST", self._post_url, data=body), self.url, field),
            shrinkable=shrinkable,
        )

    def _poll(
        self, account_id: int, answer: dict[str, Any], shrinkable: bool, other: bool = False
    ) -> tuple[dict[str, Any], int, int]:
        """Poll an asynchronous query until it completes: its answer, the polls and retries.

        Each poll waits New Relic's `retryAfter`, but never so long that it would miss the
        `retryDeadline` (after which New Relic may cancel the query); both are in seconds from
        the answer that gave them.
        """
        started = self._clock()
        polls = retries = 0
        while _running(answer):
            progress = answer["queryProgress"]
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
            answer, attempts = self._send(account_id, body, "nrqlQueryProgress", shrinkable)
            polls, retries = polls + attempts, retries + attempts - 1
        return answer, polls, retries

    def _with_retries(
        self, account_id: int | str, send: Callable[[], T], *, shrinkable: bool = False
    ) -> tuple[T, int]:
        """`send()` under the retry policy; returns its value and the attempts it took.

        A QueryTooBig is retried too unless the caller can shrink the query (`shrinkable`).
        """
        attempts = 0

        def attempt() -> T:
            nonlocal attempts
            attempts += 1
            return send()

        started = self._clock()
        try:
            return self._retrying(account_id, started, shrinkable)(attempt), attempts
        except QueryTooBig as exc:
            exc.requests = attempts
            raise
        except TransientError as exc:
            elapsed = self._clock() - started
            raise TransientError(
                f"{exc} (gave up after {attempts} attempt{'s' if attempts > 1 else ''} "
                f"in {elapsed:.0f} s)",
                retry_after=exc.retry_after,
            ) from exc

    def _retrying(
        self, account_id: int | str, started: float, shrinkable: bool = False
    ) -> Retrying:
        backoff = wait_exponential_jitter(
            initial=self._backoff_base, max=BACKOFF_MAX_SECONDS, jitter=self._backoff_base
        )

        def wait(state: RetryCallState) -> float:
            delay = backoff(state)
            error = state.outcome.exception() if state.outcome else None
            if isinstance(error, TransientError | QueryTooBig) and error.retry_after is not None:
                return max(error.retry_after, delay)
            return delay

        def out_of_time(state: RetryCallState) -> bool:
            # Never start a wait that would end past the total-time cap.
            return self._clock() - started + state.upcoming_sleep > self._max_total_seconds

        def log_retry(state: RetryCallState) -> None:
            log.warning(
                "New Relic query for %s failed (attempt %d of %d), retrying in %.1f s: %s",
                f"account {account_id}" if isinstance(account_id, int) else account_id,
                state.attempt_number,
                self._max_attempts,
                state.upcoming_sleep,
                state.outcome.exception() if state.outcome else "",
            )

        return Retrying(
            retry=retry_if_exception_type(
                TransientError if shrinkable else (TransientError, QueryTooBig)
            ),
            wait=wait,
            stop=stop_after_attempt(self._max_attempts) | out_of_time,
            sleep=self._sleep,
            before_sleep=log_retry,
            reraise=True,
        )

    def _request(self, method: str, url: str, **kwargs: Any) -> requests.Response:
        """One HTTP request under the limiter; transport failures become TransientErrors."""
        with self._limiter:
            try:
                return self._session.request(
                    method,
                    url,
                    headers=self._headers,
                    timeout=self._http_timeout,
                    # A redirect would carry the key header to wherever it points.
                    allow_redirects=False,
                    **kwargs,
                )
            except requests.ConnectionError as exc:
                raise TransientError(
                    f"cannot reach New Relic at {self.url}: {_connection_cause(exc)}"
                ) from None
            except requests.Timeout:
                raise TransientError(
                    f"New Relic at {self.url} did not answer within {self._http_timeout[1]:.0f} s"
                ) from None
            except requests.exceptions.ChunkedEncodingError:
                raise TransientError(
                    f"New Relic's answer from {self.url} was cut off mid-way"
                ) from None


def _classify(response: requests.Response, url: str, field: str = "nrql") -> dict[str, Any]:
    return _nrql_object(_checked_json(response, url), field)


def _checked_json(response: requests.Response, url: str) -> Any:
    """The JSON body of a successful answer; HTTP failures raised as their class."""
    status = response.status_code
    if status == 401:
        raise AuthError(f"New Relic rejected the API key (HTTP 401): {BAD_KEY_HINT}")
    if status == 403:
        raise AuthError(
            f"New Relic refused the request (HTTP 403): {_describe(response)}: "
            "check that NEW_RELIC_API_KEY is a user key (NRAK-...) allowed to query this account"
        )
    raise_for_status(response, _describe, "NEW_RELIC_NERDGRAPH_URL", url)
    return json_body(response)


def raise_for_status(
    response: requests.Response,
    describe: Callable[[requests.Response], str],
    variable: str,
    url: str,
) -> None:
    """429 and 5xx are transient; a redirect or any other 4xx fails the query.

    `describe` words a failed answer (only called then: a success can be megabytes);
    `variable` is the setting to check after a redirect.
    """
    status = response.status_code
    if status < 300:
        return
    if status == 429 or status >= 500:
        raise TransientError(
            f"New Relic answered HTTP {status}: {describe(response)}",
            retry_after=retry_after_seconds(response.headers.get("Retry-After")),
        )
    if 300 <= status < 400:
        raise NewRelicError(
            f"New Relic answered HTTP {status}, a redirect to "
            f"{excerpt(response.headers.get('Location', '(nowhere)'))}: "
            f"check {variable} ({url})"
        )
    if status >= 400:
        raise NewRelicError(f"New Relic answered HTTP {status}: {describe(response)}")


def json_body(response: requests.Response) -> Any:
    try:
        return parse_answer(response.content)
    except orjson.JSONDecodeError:
        content_type = response.headers.get("Content-Type", "no content type").split(";")[0]
        raise TransientError(
            f"New Relic answered HTTP {response.status_code} with {content_type}, not JSON: "
            f"{excerpt(response.text)!r} (a proxy in the way?)"
        ) from None


def parse_answer(content: bytes) -> Any:
    """The JSON of an answer, parsed with the garbage collector off, then frozen.

    A 20,000-row answer is up to 40,000 containers (a dict per row, a list per multi-facet
    key) that hold no cycle: collections triggered while they are alive scanned them over and
    over (a fifth of the archiver's CPU on two-facet queries). Frozen, they are never scanned;
    reference counting still frees them when the window is written.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        body = orjson.loads(content)
    finally:
        if enabled:
            gc.enable()
    _frozen["answers"] += 1
    if _frozen["answers"] >= ANSWERS_PER_FULL_COLLECTION:
        _frozen["answers"] = 0
        gc.unfreeze()
        gc.collect()
    gc.freeze()
    return body


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


def excerpt(text: str) -> str:
    collapsed = logs.redact(re.sub(r"\s+", " ", text).strip())
    if len(collapsed) <= EXCERPT_CHARS:
        return collapsed
    return collapsed[: EXCERPT_CHARS - 3] + "..."


# Most precise first: urllib3's NewConnectionError is also a ConnectTimeoutError, whatever the
# socket error underneath it.
CONNECTION_FAILURES: tuple[tuple[tuple[type[BaseException], ...], str], ...] = (
    ((ConnectionRefusedError,), "connection refused"),
    ((socket.gaierror, urllib3.exceptions.NameResolutionError), "cannot resolve the host name"),
    ((ssl.SSLError, urllib3.exceptions.SSLError), "TLS handshake failed"),
    ((ConnectionResetError,), "connection reset"),
    ((urllib3.exceptions.ProxyError,), "the proxy failed"),
    (
        (TimeoutError, requests.ConnectTimeout, urllib3.exceptions.ConnectTimeoutError),
        "connection timed out",
    ),
)


def _connection_cause(exc: BaseException) -> str:
    """A few words on why a connection failed, from the chain of causes inside requests."""
    causes = _causes(exc)
    for types, words in CONNECTION_FAILURES:
        if any(isinstance(cause, types) for cause in causes):
            return words
    return f"connection failed ({type(exc).__name__})"


def _causes(exc: BaseException) -> list[BaseException]:
    """`exc`, what it wraps (requests → urllib3 → socket), and their causes, outermost first."""
    found: list[BaseException] = []
    pending: list[BaseException] = [exc]
    while pending and len(found) < 20:
        current = pending.pop(0)
        if current in found:
            continue
        found.append(current)
        pending.extend(arg for arg in current.args if isinstance(arg, BaseException))
        reason = getattr(current, "reason", None)
        if isinstance(reason, BaseException):
            pending.append(reason)
        pending.extend(c for c in (current.__cause__, current.__context__) if c is not None)
    return found


def _displayable(url: str) -> str:
    """The URL without any user:password part, fit for messages and logs."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"
