"""What both New Relic clients share: one HTTP request, its status classified, its JSON body,
and the retry policy around a query's requests.

`Transport` is the one-request interface; `HttpTransport` sends it with requests (no redirects,
so a key header never travels elsewhere; requests' adapter does not retry, tenacity is the only
retry layer), and `limiter.LimitedTransport` wraps any Transport with the request caps: every
request, each retry and each poll of an asynchronous query, passes the limiter, and the waits
between them happen outside it.
"""

from __future__ import annotations

import gc
import re
from collections.abc import Callable, Mapping
from typing import Any, Protocol, TypeVar
from urllib.parse import urlsplit

import orjson
import requests

from archiver import logs
from archiver.errors import NewRelicError, QueryTooBig, TransientError
from archiver.newrelic.client import turn_waits
from archiver.newrelic.limiter import LimitedTransport, Limiter
from archiver.retry import RetryPolicy, connection_cause, retry_after_seconds
from archiver.sessions import session_for

# Parsed answers are exempt from garbage collection (`parse_answer`); every this many answers,
# one full collection frees any cyclic garbage that was exempted with them. (A count, not
# gc.get_freeze_count(), which walks every frozen object: 2 ms a call.)
ANSWERS_PER_FULL_COLLECTION = 1000
_frozen = {"answers": 0}

T = TypeVar("T")
EXCERPT_CHARS = 80
BACKOFF_MAX_SECONDS = 60.0
CONNECT_TIMEOUT_SECONDS = 10.0  # of a request's `timeout`, connecting takes at most this


class Transport(Protocol):
    """One HTTP request to New Relic; transport failures raise TransientError.

    `account` and `nrql` (the query's account and NRQL text, when it has them) are what the
    limiter keys its per-account and same-text caps by; they are not sent.
    """

    url: str  # without credentials, for messages

    def request(
        self,
        method: str,
        url: str,
        *,
        account: int | None = None,
        nrql: str | None = None,
        **kwargs: Any,
    ) -> requests.Response: ...

    def close(self) -> None: ...


class HttpTransport:
    def __init__(
        self,
        url: str,
        headers: Mapping[str, str],
        timeout: tuple[float, float],
        session: requests.Session | None = None,
    ) -> None:
        self.url = displayable(url)
        self._headers = dict(headers)
        self._timeout = timeout
        self._owns_session = session is None
        self._session = session_for(url, session)

    def close(self) -> None:
        if self._owns_session:
            self._session.close()

    def request(
        self,
        method: str,
        url: str,
        *,
        account: int | None = None,
        nrql: str | None = None,
        **kwargs: Any,
    ) -> requests.Response:
        try:
            response = self._session.request(
                method,
                url,
                headers=self._headers,
                timeout=self._timeout,
                # A redirect would carry the key header to wherever it points.
                allow_redirects=False,
                stream=True,  # the body is read below, in one piece
                **kwargs,
            )
            # requests would read it 10 KB at a time (`Response.content`), ten Python calls and
            # GIL hand-overs per 100 KB: 7.4 ms of CPU for a 2.8 MB answer against 1.2 ms in
            # one piece, 21 ms against 4 ms with another thread busy (2026-11-29). Errors while
            # reading are requests' own, as they would be from `content`.
            with response:  # read to the end: the connection goes back to the pool
                response._content = b"".join(response.iter_content(chunk_size=None))
            return response
        except requests.ConnectionError as exc:
            raise TransientError(
                f"cannot reach New Relic at {self.url}: {connection_cause(exc)}"
            ) from None
        except requests.Timeout:
            raise TransientError(
                f"New Relic at {self.url} did not answer within {self._timeout[1]:.0f} s"
            ) from None
        except requests.exceptions.ChunkedEncodingError:
            raise TransientError(
                f"New Relic's answer from {self.url} was cut off mid-way"
            ) from None


def limited(
    url: str,
    headers: Mapping[str, str],
    timeout: float,
    read_at_least: float,
    session: requests.Session | None,
    limiter: Limiter | None,
) -> Transport:
    """An HttpTransport wrapped with `limiter` (a private default one when None). Connecting
    takes at most CONNECT_TIMEOUT_SECONDS of `timeout`; reading, `timeout` but at least
    `read_at_least`."""
    http_timeout = (min(timeout, CONNECT_TIMEOUT_SECONDS), max(timeout, read_at_least))
    return LimitedTransport(
        HttpTransport(url, headers, http_timeout, session),
        limiter if limiter is not None else Limiter(),
    )


def retry_policy(
    max_attempts: int,
    max_total_seconds: float,
    backoff_base: float,
    sleep: Callable[[float], None],
    clock: Callable[[], float],
) -> RetryPolicy:
    """The shared policy with New Relic's caps (waits from ARCHIVER_RETRY_BASE_SECONDS, ≤ 60 s)."""
    return RetryPolicy(
        max_attempts=max_attempts,
        max_total_seconds=max_total_seconds,
        base=backoff_base,
        max_wait=BACKOFF_MAX_SECONDS,
        sleep=sleep,
        clock=clock,
    )


def with_retries(
    policy: RetryPolicy,
    subject: int | str,
    send: Callable[[], T],
    *,
    shrinkable: bool = False,
    transport: object = None,
) -> tuple[T, int]:
    """`send()` under the retry policy; returns its value and the attempts it took.

    Time spent waiting at `transport`'s limiter (a LimitedTransport), and for an answer's turn
    to be parsed (`client.turn_waits`), is left out of the policy's total-time cap: it is
    other queries' (or windows') turn, not this query's retries.

    A QueryTooBig is retried too unless the caller can shrink the query (`shrinkable`); when it
    is raised, its `requests` says how many requests it took.
    """
    attempts = 0

    def attempt() -> T:
        nonlocal attempts
        attempts += 1
        return send()

    what = f"account {subject}" if isinstance(subject, int) else subject
    try:
        value, _ = policy.call(
            attempt,
            what=f"New Relic query for {what}",
            retry_on=(TransientError,) if shrinkable else (TransientError, QueryTooBig),
            not_counted=(
                (lambda: transport.limiter.waited() + turn_waits())
                if isinstance(transport, LimitedTransport)
                else turn_waits
            ),
        )
    except QueryTooBig as exc:
        exc.requests = attempts
        raise
    return value, attempts


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


def excerpt(text: str) -> str:
    collapsed = logs.redact(re.sub(r"\s+", " ", text).strip())
    if len(collapsed) <= EXCERPT_CHARS:
        return collapsed
    return collapsed[: EXCERPT_CHARS - 3] + "..."


def displayable(url: str) -> str:
    """The URL without any user:password part, fit for messages and logs."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"
