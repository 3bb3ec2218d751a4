"""The NerdGraph client: one NRQL query in, its rows out, every failure classified once.

Each answer is classified right here, next to the call: `TransientError` (retried with
exponential backoff and jitter by tenacity, honouring Retry-After), `AuthError` or
`NewRelicError` (never retried; the message is New Relic's own). The API key never appears in
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
from archiver.errors import AuthError, NewRelicError, TransientError
from archiver.limiter import Limiter
from archiver.retry import retry_after_seconds

log = logging.getLogger(__name__)
T = TypeVar("T")

# The NRQL text and every other value travel as GraphQL variables, never inside this text.
GRAPHQL = """\
query($accountId: Int!, $nrql: Nrql!, $timeout: Seconds) {
  actor {
    account(id: $accountId) {
      nrql(query: $nrql, timeout: $timeout) {
        results
        metadata { facets eventTypes messages timeWindow { begin end } }
      }
    }
  }
}
"""

TRANSIENT_ERROR_CLASSES = frozenset(
    {"TIMEOUT", "TOO_MANY_REQUESTS", "INTERNAL_SERVER_ERROR", "SERVER_ERROR"}
)
BAD_KEY_HINT = "check NEW_RELIC_API_KEY (a user key, NRAK-...)"
EXCERPT_CHARS = 80
BACKOFF_MAX_SECONDS = 60.0
CONNECT_TIMEOUT_SECONDS = 10.0
# The HTTP read timeout outlasts the NRQL timeout, so that New Relic's own TIMEOUT answer
# (with its message) arrives before we give up on the connection.
NRQL_TIMEOUT_MARGIN_SECONDS = 5.0
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
    """HTTP requests it took, retries included."""
    retries: int


class NerdGraphClient:
    """Runs NRQL queries through NerdGraph; share one between threads so its limiter is shared.

    `timeout` bounds each HTTP request (connecting takes at most 10 s of it; reading never gives
    up before `nrql_timeout` + 5 s). `max_attempts` and `max_total_seconds` bound one query()
    call, measured on `clock`; `sleep` and `clock` are there for tests.
    """

    def __init__(
        self,
        url: str,
        api_key: str,
        *,
        timeout: float = 60.0,
        nrql_timeout: int = 60,
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

    def query(self, account_id: int, nrql: str) -> NrqlResult:
        """Run one NRQL query, retrying transient failures; raise the last one if they persist."""
        body = orjson.dumps(
            {
                "query": GRAPHQL,
                "variables": {
                    "accountId": account_id,
                    "nrql": nrql,
                    "timeout": self._nrql_timeout,
                },
            }
        )
        answer, attempts = self._with_retries(
            account_id,
            lambda: _classify(self._request("POST", self._post_url, data=body), self.url),
        )
        return NrqlResult(
            results=answer["results"],
            facets=_facets(answer.get("metadata")),
            requests=attempts,
            retries=attempts - 1,
        )

    def _with_retries(self, account_id: int, send: Callable[[], T]) -> tuple[T, int]:
        """`send()` under the retry policy; returns its value and the attempts it took."""
        attempts = 0

        def attempt() -> T:
            nonlocal attempts
            attempts += 1
            return send()

        started = self._clock()
        try:
            return self._retrying(account_id, started)(attempt), attempts
        except TransientError as exc:
            elapsed = self._clock() - started
            raise TransientError(
                f"{exc} (gave up after {attempts} attempt{'s' if attempts > 1 else ''} "
                f"in {elapsed:.0f} s)",
                retry_after=exc.retry_after,
            ) from exc

    def _retrying(self, account_id: int, started: float) -> Retrying:
        backoff = wait_exponential_jitter(
            initial=self._backoff_base, max=BACKOFF_MAX_SECONDS, jitter=self._backoff_base
        )

        def wait(state: RetryCallState) -> float:
            delay = backoff(state)
            error = state.outcome.exception() if state.outcome else None
            if isinstance(error, TransientError) and error.retry_after is not None:
                return max(error.retry_after, delay)
            return delay

        def out_of_time(state: RetryCallState) -> bool:
            # Never start a wait that would end past the total-time cap.
            return self._clock() - started + state.upcoming_sleep > self._max_total_seconds

        def log_retry(state: RetryCallState) -> None:
            log.warning(
                "New Relic query for account %s failed (attempt %d of %d), retrying in %.1f s: %s",
                account_id,
                state.attempt_number,
                self._max_attempts,
                state.upcoming_sleep,
                state.outcome.exception() if state.outcome else "",
            )

        return Retrying(
            retry=retry_if_exception_type(TransientError),
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


def _classify(response: requests.Response, url: str) -> dict[str, Any]:
    status = response.status_code
    if status == 401:
        raise AuthError(f"New Relic rejected the API key (HTTP 401): {BAD_KEY_HINT}")
    if status == 403:
        raise AuthError(
            f"New Relic refused the request (HTTP 403): {_describe(response)}: "
            "check that NEW_RELIC_API_KEY is a user key (NRAK-...) allowed to query this account"
        )
    raise_for_status(response, _describe, "NEW_RELIC_NERDGRAPH_URL", url)
    return _nrql_object(json_body(response))


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


def _nrql_object(body: Any) -> dict[str, Any]:
    errors = body.get("errors") if isinstance(body, dict) else None
    if errors:
        raise _graphql_error(errors if isinstance(errors, list) else [errors])
    nrql = _dig(body, "data", "actor", "account", "nrql")
    if not isinstance(nrql, dict) or not isinstance(nrql.get("results"), list):
        raise TransientError(
            "New Relic's answer has no data for the query and no error: "
            f"{excerpt(orjson.dumps(body).decode())!r}"
        )
    return nrql


def _graphql_error(errors: list[Any]) -> Exception:
    entries = [error if isinstance(error, dict) else {"message": str(error)} for error in errors]
    messages = list(dict.fromkeys(str(entry.get("message") or entry) for entry in entries))
    extensions = [entry.get("extensions") or {} for entry in entries]
    if any(
        ext.get("error_code") == "BAD_API_KEY" for ext in extensions if isinstance(ext, dict)
    ) or any("invalid api key" in message.lower() for message in messages):
        return AuthError(f"New Relic rejected the API key (BAD_API_KEY): {BAD_KEY_HINT}")
    message = logs.redact("; ".join(messages))
    if any(
        ext.get("errorClass") in TRANSIENT_ERROR_CLASSES
        for ext in extensions
        if isinstance(ext, dict)
    ):
        return TransientError(message)
    return NewRelicError(message)


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
