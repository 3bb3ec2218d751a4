"""The NerdGraph client against New Relic faked at the HTTP boundary (`responses`, or a real
local HTTP server where urllib3 itself must run)."""

from __future__ import annotations

import gzip
import json
import logging
import socket
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import requests
import responses
import urllib3.exceptions

from archiver import logs
from archiver.errors import AuthError, NewRelicError, QueryTooBig, TransientError
from archiver.newrelic.client import NrqlResult
from archiver.newrelic.limiter import Limiter
from archiver.newrelic.nerdgraph import GRAPHQL, POLL_GRAPHQL, NerdGraphClient
from tests.clocks import FakeClock
from tests.e2e import ACCOUNT

URL = "https://api.newrelic.com/graphql"
KEY = "NRAK-TEST0123456789ABCDEFGHIJKLM"
NRQL = "SELECT count(*) FROM Transaction FACET appName SINCE 1700000000 UNTIL 1700003600"
ROWS = [
    {"appName": "App1", "facet": "App1", "count": 100, "beginTimeSeconds": 1700000000},
    {"appName": "App2", "facet": "App2", "count": 2.5, "beginTimeSeconds": 1700000000},
]


def nrql_answer(rows: list[dict[str, Any]], facets: Any = None) -> dict[str, Any]:
    metadata = {"facets": facets, "eventTypes": ["Transaction"], "messages": []}
    nrql = {"results": rows, "metadata": metadata}
    return {"data": {"actor": {"account": {"nrql": nrql}}}}


def graphql_errors(*errors: dict[str, Any]) -> dict[str, Any]:
    return {"data": {"actor": {"account": {"nrql": None}}}, "errors": list(errors)}


def error(message: str, error_class: str | None = None, **extensions: str) -> dict[str, Any]:
    if error_class:
        extensions["errorClass"] = error_class
    return {"message": message, "path": ["actor", "account", "nrql"], "extensions": extensions}


def connection_error(reason: Exception) -> requests.ConnectionError:
    """What requests raises when urllib3 could not connect for `reason`."""
    return requests.ConnectionError(urllib3.exceptions.MaxRetryError(None, URL, reason))  # type: ignore[arg-type]


def refused() -> requests.ConnectionError:
    new_connection = urllib3.exceptions.NewConnectionError(
        None,  # type: ignore[arg-type]
        "Failed to establish a new connection: [Errno 111] Connection refused",
    )
    new_connection.__cause__ = ConnectionRefusedError(111, "Connection refused")
    return connection_error(new_connection)


@pytest.fixture
def client(fake_time: FakeClock) -> Iterator[NerdGraphClient]:
    with NerdGraphClient(
        URL, KEY, max_attempts=3, sleep=fake_time.sleep, clock=fake_time
    ) as nerdgraph:
        yield nerdgraph


@pytest.fixture
def nr() -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock() as mock:
        yield mock


def assert_no_key(exc: BaseException) -> None:
    chain: BaseException | None = exc
    while chain is not None:
        assert KEY not in str(chain) and KEY not in repr(chain)
        chain = chain.__cause__ or chain.__context__


# --- success -------------------------------------------------------------------------------


def test_rows_and_facets_come_back_with_the_request_count(
    client: NerdGraphClient, nr: responses.RequestsMock, fake_time: FakeClock
) -> None:
    nr.post(URL, json=nrql_answer(ROWS, facets=["appName"]))

    result = client.query(ACCOUNT, NRQL)

    assert result == NrqlResult(results=ROWS, facets=("appName",), requests=1, retries=0)
    assert fake_time.sleeps == []


@pytest.mark.parametrize("facets", [None, []], ids=["null", "empty"])
def test_no_facets_give_an_empty_tuple(
    client: NerdGraphClient, nr: responses.RequestsMock, facets: Any
) -> None:
    nr.post(URL, json=nrql_answer([{"count": 5}], facets=facets))
    assert client.query(ACCOUNT, NRQL).facets == ()


def test_an_answer_without_metadata_still_gives_its_rows(
    client: NerdGraphClient, nr: responses.RequestsMock
) -> None:
    nr.post(URL, json={"data": {"actor": {"account": {"nrql": {"results": [{"count": 5}]}}}}})
    assert client.query(ACCOUNT, NRQL) == NrqlResult([{"count": 5}], (), 1, 0)


def test_the_nrql_travels_as_a_variable_with_the_key_in_a_header(
    fake_time: FakeClock, nr: responses.RequestsMock
) -> None:
    nr.post(URL, json=nrql_answer(ROWS))
    NerdGraphClient(URL, KEY, nrql_timeout=90, sleep=fake_time.sleep).query(ACCOUNT, NRQL)

    request = nr.calls[0].request
    body = json.loads(request.body)
    assert body["variables"] == {"accountId": ACCOUNT, "nrql": NRQL, "timeout": 90}
    assert body["query"] == GRAPHQL
    assert "FROM Transaction" not in body["query"] and str(ACCOUNT) not in body["query"]
    assert "timeout: $timeout" in body["query"] and "$timeout: Seconds" in body["query"]
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["API-Key"] == KEY


# --- permanent failures: classified, never retried ----------------------------------------

BAD_KEY_MESSAGE = (
    "New Relic rejected the API key (HTTP 401): check NEW_RELIC_API_KEY (a user key, NRAK-...)"
)


@pytest.mark.parametrize(
    ("status", "answer", "expected", "message"),
    [
        pytest.param(
            401,
            {"errors": [{"message": "Unauthorized"}]},
            AuthError,
            BAD_KEY_MESSAGE,
            id="http-401",
        ),
        pytest.param(
            200,
            graphql_errors(error("Invalid credentials", error_code="BAD_API_KEY")),
            AuthError,
            "New Relic rejected the API key (BAD_API_KEY): check NEW_RELIC_API_KEY "
            "(a user key, NRAK-...)",
            id="bad-api-key-code",
        ),
        pytest.param(
            200,
            graphql_errors(error("Invalid API key")),
            AuthError,
            "New Relic rejected the API key (BAD_API_KEY): check NEW_RELIC_API_KEY "
            "(a user key, NRAK-...)",
            id="invalid-api-key-message",
        ),
        pytest.param(
            403,
            {"errors": [{"message": "Forbidden resource"}]},
            AuthError,
            "New Relic refused the request (HTTP 403): Forbidden resource: check that "
            "NEW_RELIC_API_KEY is a user key (NRAK-...) allowed to query this account",
            id="http-403",
        ),
        pytest.param(
            400,
            {"errors": [{"message": "Variable $nrql of type Nrql! was provided invalid value"}]},
            NewRelicError,
            "New Relic answered HTTP 400: Variable $nrql of type Nrql! was provided invalid value",
            id="http-400-graphql",
        ),
        pytest.param(
            404,
            "<html><body>  Not\n\n Found </body></html>",
            NewRelicError,
            "New Relic answered HTTP 404: '<html><body> Not Found </body></html>'",
            id="http-404-html",
        ),
        pytest.param(
            200,
            graphql_errors(
                error(
                    "NRQL Syntax Error: Error at line 1 position 15, unexpected 'FROM'",
                    "INVALID_INPUT",
                )
            ),
            NewRelicError,
            "NRQL Syntax Error: Error at line 1 position 15, unexpected 'FROM'",
            id="nrql-syntax",
        ),
        pytest.param(
            200,
            graphql_errors(error("You are not authorized to query account 2022412")),
            NewRelicError,
            "You are not authorized to query account 2022412",
            id="forbidden-account",
        ),
        pytest.param(
            200,
            graphql_errors(
                error("TIMESERIES supports a maximum of 366 buckets", "INVALID_INPUT"),
                error("TIMESERIES supports a maximum of 366 buckets", "INVALID_INPUT"),
                error("Your query's start time must be before its end time."),
            ),
            NewRelicError,
            "TIMESERIES supports a maximum of 366 buckets; "
            "Your query's start time must be before its end time.",
            id="several-errors-joined-once-each",
        ),
    ],
)
def test_permanent_failures_fail_at_once_with_a_clear_message(
    client: NerdGraphClient,
    nr: responses.RequestsMock,
    fake_time: FakeClock,
    status: int,
    answer: Any,
    expected: type[Exception],
    message: str,
) -> None:
    if isinstance(answer, str):
        nr.post(URL, status=status, body=answer, content_type="text/html")
    else:
        nr.post(URL, status=status, json=answer)

    with pytest.raises(expected) as raised:
        client.query(ACCOUNT, NRQL)

    assert str(raised.value) == message
    assert len(nr.calls) == 1 and fake_time.sleeps == []
    assert_no_key(raised.value)


def test_a_redirect_is_not_followed_so_the_key_stays_home(
    client: NerdGraphClient, nr: responses.RequestsMock
) -> None:
    nr.post(URL, status=301, headers={"Location": "https://elsewhere.example/graphql"})

    with pytest.raises(NewRelicError, match=r"redirect to https://elsewhere\.example/graphql"):
        client.query(ACCOUNT, NRQL)
    assert len(nr.calls) == 1


def test_a_key_echoed_back_by_a_server_is_redacted_from_the_message(
    client: NerdGraphClient, nr: responses.RequestsMock
) -> None:
    nr.post(URL, status=400, body=f"bad header API-Key: {KEY}", content_type="text/plain")

    with pytest.raises(NewRelicError) as raised:
        client.query(ACCOUNT, NRQL)
    assert str(raised.value) == "New Relic answered HTTP 400: 'bad header API-Key: ***'"


# --- transient failures: classified, retried, then reported -------------------------------

HTML_PAGE = """<html>
  <head><title>502 Bad Gateway</title></head>
  <body>
    <center><h1>502 Bad Gateway</h1></center>
    <hr><center>nginx</center>
  </body>
</html>"""


def answer_kwargs(status: int, answer: Any) -> dict[str, Any]:
    if isinstance(answer, Exception):
        return {"body": answer}
    if isinstance(answer, str):
        return {"status": status, "body": answer, "content_type": "text/html"}
    return {"status": status, "json": answer}


@pytest.mark.parametrize(
    ("status", "answer", "message"),
    [
        pytest.param(
            500,
            {"errors": [{"message": "oops"}]},
            "New Relic answered HTTP 500: oops",
            id="http-500",
        ),
        pytest.param(
            502,
            HTML_PAGE,
            "New Relic answered HTTP 502: '<html> <head><title>502 Bad "
            "Gateway</title></head> <body> <center><h1>502 Bad...'",
            id="http-502",
        ),
        pytest.param(503, "", "New Relic answered HTTP 503: (empty body)", id="http-503"),
        pytest.param(
            429,
            {"errors": [{"message": "Too many requests"}]},
            "New Relic answered HTTP 429: Too many requests",
            id="http-429",
        ),
        pytest.param(
            200,
            HTML_PAGE,
            "New Relic answered HTTP 200 with text/html, not JSON: '<html> <head><title>502 Bad "
            "Gateway</title></head> <body> <center><h1>502 Bad...' "
            "(a proxy in the way?)",
            id="html-instead-of-json",
        ),
        pytest.param(
            200,
            {"message": "hello"},
            'New Relic\'s answer has no data for the query and no error: \'{"message":"hello"}\'',
            id="json-without-data",
        ),
        pytest.param(
            200,
            {"data": {"actor": {"account": {"nrql": None}}}},
            "New Relic's answer has no data for the query and no error: "
            '\'{"data":{"actor":{"account":{"nrql":null}}}}\'',
            id="null-nrql-without-errors",
        ),
        *[
            pytest.param(
                200,
                graphql_errors(
                    error("Your query either timed out or we're under heavy load", error_class)
                ),
                "Your query either timed out or we're under heavy load",
                id=f"graphql-{error_class}",
            )
            for error_class in (
                "TOO_MANY_REQUESTS",
                "INTERNAL_SERVER_ERROR",
                "SERVER_ERROR",
            )
        ],
        pytest.param(
            0,
            refused(),
            "cannot reach New Relic at https://api.newrelic.com/graphql: connection refused",
            id="connection-refused",
        ),
        pytest.param(
            0,
            connection_error(
                urllib3.exceptions.NameResolutionError(
                    "api.newrelic.com",
                    None,  # type: ignore[arg-type]
                    socket.gaierror(-2, "Name or service not known"),
                )
            ),
            "cannot reach New Relic at https://api.newrelic.com/graphql: "
            "cannot resolve the host name",
            id="dns-failure",
        ),
        pytest.param(
            0,
            requests.ConnectTimeout(),
            "cannot reach New Relic at https://api.newrelic.com/graphql: connection timed out",
            id="connect-timeout",
        ),
        pytest.param(
            0,
            requests.ReadTimeout(),
            "New Relic at https://api.newrelic.com/graphql did not answer within 65 s",
            id="read-timeout",
        ),
        pytest.param(
            0,
            requests.exceptions.ChunkedEncodingError(),
            "New Relic's answer from https://api.newrelic.com/graphql was cut off mid-way",
            id="cut-off",
        ),
    ],
)
def test_transient_failures_are_retried_then_reported_with_the_attempts(
    client: NerdGraphClient,
    nr: responses.RequestsMock,
    fake_time: FakeClock,
    status: int,
    answer: Any,
    message: str,
) -> None:
    nr.post(URL, **answer_kwargs(status, answer))

    with pytest.raises(TransientError) as raised:
        client.query(ACCOUNT, NRQL)

    assert str(raised.value).startswith(message + " (gave up after 3 attempts in ")
    assert len(nr.calls) == 3 and len(fake_time.sleeps) == 2
    assert_no_key(raised.value)


def test_a_transient_failure_then_success_counts_requests_and_retries(
    client: NerdGraphClient, nr: responses.RequestsMock, fake_time: FakeClock
) -> None:
    nr.post(URL, status=503, body="")
    nr.post(URL, **answer_kwargs(200, graphql_errors(error("heavy load", "TOO_MANY_REQUESTS"))))
    nr.post(URL, json=nrql_answer(ROWS))

    result = client.query(ACCOUNT, NRQL)

    assert (result.results, result.requests, result.retries) == (ROWS, 3, 2)
    first, second = fake_time.sleeps
    assert 1.0 <= first <= 2.0 and 2.0 <= second <= 3.0  # exponential, with up to 1 s jitter


def test_each_retry_is_logged_as_a_warning(
    client: NerdGraphClient, nr: responses.RequestsMock, caplog: pytest.LogCaptureFixture
) -> None:
    nr.post(URL, status=502, body="")
    nr.post(URL, json=nrql_answer(ROWS))

    with caplog.at_level(logging.WARNING, logger="archiver.retry"):
        client.query(ACCOUNT, NRQL)

    [record] = caplog.records
    assert record.levelno == logging.WARNING
    assert record.getMessage().startswith(
        f"New Relic query for account {ACCOUNT} failed (attempt 1 of 3), retrying in "
    )
    assert record.getMessage().endswith("New Relic answered HTTP 502: (empty body)")


def test_retry_after_in_seconds_is_honoured(
    client: NerdGraphClient, nr: responses.RequestsMock, fake_time: FakeClock
) -> None:
    nr.post(URL, status=429, body="", headers={"Retry-After": "7"})
    nr.post(URL, json=nrql_answer(ROWS))

    assert client.query(ACCOUNT, NRQL).retries == 1
    assert fake_time.sleeps == [7.0]


def test_retry_after_as_an_http_date_is_honoured(
    client: NerdGraphClient, nr: responses.RequestsMock, fake_time: FakeClock
) -> None:
    in_30_seconds = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    nr.post(URL, status=503, body="", headers={"Retry-After": in_30_seconds})
    nr.post(URL, json=nrql_answer(ROWS))

    client.query(ACCOUNT, NRQL)
    [wait] = fake_time.sleeps
    assert 27.0 <= wait <= 30.0


def test_a_retry_after_shorter_than_the_backoff_does_not_shorten_it(
    client: NerdGraphClient, nr: responses.RequestsMock, fake_time: FakeClock
) -> None:
    nr.post(URL, status=429, body="", headers={"Retry-After": "0"})
    nr.post(URL, json=nrql_answer(ROWS))

    client.query(ACCOUNT, NRQL)
    [wait] = fake_time.sleeps
    assert 1.0 <= wait <= 2.0


def test_attempts_are_capped(fake_time: FakeClock, nr: responses.RequestsMock) -> None:
    nr.post(URL, status=503, body="")
    client = NerdGraphClient(URL, KEY, sleep=fake_time.sleep, clock=fake_time)

    with pytest.raises(TransientError, match=r"gave up after 6 attempts in \d+ s\)$"):
        client.query(ACCOUNT, NRQL)
    assert len(nr.calls) == 6 and len(fake_time.sleeps) == 5


def test_no_wait_goes_past_the_total_time_cap(
    fake_time: FakeClock, nr: responses.RequestsMock
) -> None:
    nr.post(URL, status=429, body="", headers={"Retry-After": "4"})
    client = NerdGraphClient(URL, KEY, max_total_seconds=10, sleep=fake_time.sleep, clock=fake_time)

    with pytest.raises(TransientError, match=r"gave up after 3 attempts in 8 s\)$"):
        client.query(ACCOUNT, NRQL)
    assert fake_time.sleeps == [4.0, 4.0]  # a third wait would end at 12 s > 10 s


def test_slow_requests_count_towards_the_total_time_cap(
    fake_time: FakeClock, nr: responses.RequestsMock
) -> None:
    def slow_gateway_timeout(request: Any) -> tuple[int, dict[str, str], str]:
        fake_time.now += 20.0
        return 504, {}, ""

    nr.add_callback(responses.POST, URL, callback=slow_gateway_timeout)
    client = NerdGraphClient(URL, KEY, max_total_seconds=30, sleep=fake_time.sleep, clock=fake_time)

    with pytest.raises(TransientError, match="HTTP 504"):
        client.query(ACCOUNT, NRQL)
    assert len(nr.calls) == 2  # 20 s + a wait + 20 s: a third attempt would start past 30 s


def test_waiting_for_the_limiter_does_not_count_towards_the_total_time_cap(
    fake_time: FakeClock, nr: responses.RequestsMock
) -> None:
    # One request a minute: every attempt waits about 60 s at the limiter's door, queued
    # behind the other queries' requests. That is not time spent on this query's retries.
    limiter = Limiter(per_minute=1, clock=fake_time, sleep=fake_time.sleep)
    nr.post(URL, status=503, body="")
    nr.post(URL, status=503, body="")
    nr.post(URL, json=nrql_answer(ROWS))
    client = NerdGraphClient(
        URL, KEY, limiter=limiter, max_total_seconds=30, sleep=fake_time.sleep, clock=fake_time
    )

    result = client.query(ACCOUNT, NRQL)

    assert result.requests == 3 and len(nr.calls) == 3
    assert fake_time() >= 120  # the limiter did make it wait, twice


def test_the_limiter_wraps_each_request_but_not_the_waits(
    fake_time: FakeClock, nr: responses.RequestsMock
) -> None:
    events: list[str] = []

    class RecordingLimiter(Limiter):
        def acquire(self, account: int | None = None, nrql: str | None = None) -> None:
            events.append("enter")
            super().acquire(account, nrql)

        def release(self) -> None:
            events.append("exit")
            super().release()

    def sleep(seconds: float) -> None:
        events.append("sleep")

    nr.post(URL, status=503, body="")
    nr.post(URL, json=nrql_answer(ROWS))
    client = NerdGraphClient(URL, KEY, limiter=RecordingLimiter(), sleep=sleep)

    client.query(ACCOUNT, NRQL)
    assert events == ["enter", "exit", "sleep", "enter", "exit"]


# --- a real connection: wrong URL, and what urllib3 logs -----------------------------------


def closed_local_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_a_wrong_url_fails_after_retries_naming_the_url_not_the_key(
    fake_time: FakeClock,
) -> None:
    url = f"http://127.0.0.1:{closed_local_port()}/graphql"
    client = NerdGraphClient(url, KEY, max_attempts=2, sleep=fake_time.sleep)

    with pytest.raises(TransientError) as raised:
        client.query(ACCOUNT, NRQL)

    assert str(raised.value).startswith(
        f"cannot reach New Relic at {url}: connection refused (gave up after 2 attempts in "
    )
    assert_no_key(raised.value)


class ScriptedNerdGraph(BaseHTTPRequestHandler):
    """Answers 503 first, then a result; remembers the API-Key header it received."""

    answers: list[tuple[int, bytes]] = []
    keys_seen: list[str | None] = []

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        type(self).keys_seen.append(self.headers.get("API-Key"))
        status, body = type(self).answers.pop(0)
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def local_nerdgraph() -> Iterator[str]:
    ScriptedNerdGraph.answers = [
        (503, b'{"errors": [{"message": "unavailable"}]}'),
        (200, json.dumps(nrql_answer(ROWS)).encode()),
    ]
    ScriptedNerdGraph.keys_seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), ScriptedNerdGraph)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/graphql"
    server.shutdown()
    server.server_close()
    thread.join()


def test_the_key_never_reaches_a_log_line_even_at_debug(
    local_nerdgraph: str, fake_time: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    client = NerdGraphClient(local_nerdgraph, KEY, sleep=fake_time.sleep)
    with caplog.at_level(logging.DEBUG), caplog.at_level(logging.DEBUG, logger="urllib3"):
        result = client.query(ACCOUNT, NRQL)
        client.close()

    assert result.results == ROWS and result.retries == 1
    assert ScriptedNerdGraph.keys_seen == [KEY, KEY]
    assert '"POST /graphql HTTP/1.1" 503' in caplog.text  # urllib3 did log at DEBUG
    assert "retrying in" in caplog.text
    assert KEY not in caplog.text


class KeptAliveNerdGraph(BaseHTTPRequestHandler):
    """HTTP/1.1 with keep-alive; each answer is (body, Content-Encoding, bytes it claims): a
    claim above the body's length cuts the answer off there and closes the connection."""

    protocol_version = "HTTP/1.1"
    answers: list[tuple[bytes, str | None, int | None]] = []
    connections: set[int] = set()

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        type(self).connections.add(self.client_address[1])
        body, encoding, claimed = type(self).answers.pop(0)
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        if encoding:
            self.send_header("Content-Encoding", encoding)
        self.send_header("Content-Length", str(claimed or len(body)))
        self.end_headers()
        self.wfile.write(body)
        if claimed:
            self.close_connection = True

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def kept_alive_nerdgraph() -> Iterator[str]:
    KeptAliveNerdGraph.connections = set()
    server = ThreadingHTTPServer(("127.0.0.1", 0), KeptAliveNerdGraph)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/graphql"
    server.shutdown()
    server.server_close()
    thread.join()


def test_answers_are_read_whole_gzipped_or_not_over_one_kept_alive_connection(
    kept_alive_nerdgraph: str, fake_time: FakeClock
) -> None:
    rows = [{**ROWS[0], "count": float(index)} for index in range(2000)]  # some 100 KB
    answer = json.dumps(nrql_answer(rows, ["appName"])).encode()
    KeptAliveNerdGraph.answers = [(answer, None, None), (gzip.compress(answer), "gzip", None)]
    with NerdGraphClient(kept_alive_nerdgraph, KEY, sleep=fake_time.sleep) as client:
        plain = client.query(ACCOUNT, NRQL)
        gzipped = client.query(ACCOUNT, NRQL)

    assert plain.results == rows and gzipped.results == rows
    assert plain.size == len(answer)
    assert len(KeptAliveNerdGraph.connections) == 1  # read to its end, each went back to the pool


def test_an_answer_cut_off_mid_way_is_transient_and_asked_again(
    kept_alive_nerdgraph: str, fake_time: FakeClock
) -> None:
    answer = json.dumps(nrql_answer(ROWS, ["appName"])).encode()
    KeptAliveNerdGraph.answers = [(answer[:40], None, len(answer)), (answer, None, None)]
    with NerdGraphClient(kept_alive_nerdgraph, KEY, sleep=fake_time.sleep) as client:
        result = client.query(ACCOUNT, NRQL)

    assert result.results == ROWS and result.retries == 1


def test_an_answer_cut_off_every_time_fails_with_what_happened(
    kept_alive_nerdgraph: str, fake_time: FakeClock
) -> None:
    answer = json.dumps(nrql_answer(ROWS, ["appName"])).encode()
    KeptAliveNerdGraph.answers = [(answer[:40], None, len(answer))] * 2
    with (
        NerdGraphClient(kept_alive_nerdgraph, KEY, max_attempts=2, sleep=fake_time.sleep) as client,
        pytest.raises(TransientError) as raised,
    ):
        client.query(ACCOUNT, NRQL)

    assert str(raised.value).startswith(
        f"New Relic's answer from {kept_alive_nerdgraph} was cut off mid-way (gave up after 2 "
    )


def test_the_key_is_kept_out_of_repr_and_registered_for_redaction() -> None:
    client = NerdGraphClient(f"https://user:secret@{URL.removeprefix('https://')}", KEY)

    assert repr(client) == f"NerdGraphClient(url={URL!r})"
    assert logs.redact(f"header {KEY}") == "header ***"


# --- windows too big for New Relic ----------------------------------------------------------


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        pytest.param(
            graphql_errors(error("NRDB query duration exceeded the set timeout", "TIMEOUT")),
            "NRDB query duration exceeded the set timeout",
            id="timeout",
        ),
        pytest.param(
            graphql_errors(
                error("that query is a little too big. If using TIMESERIES, try fewer buckets")
            ),
            "that query is a little too big. If using TIMESERIES, try fewer buckets",
            id="too-big-message",
        ),
    ],
)
def test_a_query_too_big_is_not_retried_as_it_is_when_it_can_shrink(
    client: NerdGraphClient,
    nr: responses.RequestsMock,
    fake_time: FakeClock,
    answer: dict[str, Any],
    message: str,
) -> None:
    nr.post(URL, json=answer)

    with pytest.raises(QueryTooBig) as raised:
        client.query(ACCOUNT, NRQL, shrinkable=True)

    assert str(raised.value) == message
    assert raised.value.requests == 1 and len(nr.calls) == 1 and fake_time.sleeps == []


def test_a_query_too_big_that_cannot_shrink_is_retried_then_fails_with_new_relics_message(
    client: NerdGraphClient, nr: responses.RequestsMock, fake_time: FakeClock
) -> None:
    message = "Your query either timed out or we're under heavy load"
    nr.post(URL, json=graphql_errors(error(message, "TIMEOUT")))

    with pytest.raises(QueryTooBig) as raised:
        client.query(ACCOUNT, NRQL)

    assert str(raised.value) == message
    assert raised.value.requests == 3 == len(nr.calls) and len(fake_time.sleeps) == 2


def test_transient_retries_before_a_query_too_big_are_counted(
    client: NerdGraphClient, nr: responses.RequestsMock, fake_time: FakeClock
) -> None:
    nr.post(URL, status=429, body="")
    nr.post(
        URL, json=graphql_errors(error("NRDB query duration exceeded the set timeout", "TIMEOUT"))
    )

    with pytest.raises(QueryTooBig) as raised:
        client.query(ACCOUNT, NRQL, shrinkable=True)

    assert raised.value.requests == 2 and len(fake_time.sleeps) == 1


# --- the NRQL timeout, asynchronous queries and the inspected count -------------------------


def raw_response(inspected: int) -> dict[str, Any]:
    return {"performanceStats": {"inspectedCount": inspected, "matchCount": 7, "wallClockTime": 12}}


def test_the_inspected_count_comes_from_the_raw_response(
    client: NerdGraphClient, nr: responses.RequestsMock
) -> None:
    answer = nrql_answer(ROWS)
    answer["data"]["actor"]["account"]["nrql"]["rawResponse"] = raw_response(123_456)
    nr.post(URL, json=answer)

    assert client.query(ACCOUNT, NRQL).inspected == 123_456
    assert "rawResponse" in GRAPHQL


def test_the_read_timeout_outlasts_the_nrql_timeout(
    fake_time: FakeClock, nr: responses.RequestsMock
) -> None:
    nr.post(URL, body=requests.ReadTimeout())
    nerdgraph = NerdGraphClient(
        URL, KEY, nrql_timeout=120, max_attempts=1, sleep=fake_time.sleep, clock=fake_time
    )
    with pytest.raises(TransientError, match="did not answer within 125 s"):
        nerdgraph.query(ACCOUNT, NRQL)
    assert json.loads(nr.calls[0].request.body)["variables"]["timeout"] == 120


def progress(completed: bool, retry_after: Any = 2, retry_deadline: Any = 30) -> dict[str, Any]:
    return {
        "queryId": "q-1f3a",
        "completed": completed,
        "retryAfter": retry_after,
        "retryDeadline": retry_deadline,
        "resultExpiration": 300,
    }


def running(field: str = "nrql", **kwargs: Any) -> dict[str, Any]:
    nrql = {"results": None, "metadata": None, "queryProgress": progress(False, **kwargs)}
    return {"data": {"actor": {"account": {field: nrql}}}}


def done(field: str = "nrqlQueryProgress") -> dict[str, Any]:
    nrql = {
        "results": ROWS,
        "metadata": {"facets": ["appName"]},
        "rawResponse": raw_response(900),
        "queryProgress": progress(True),
    }
    return {"data": {"actor": {"account": {field: nrql}}}}


@pytest.fixture
def async_client(fake_time: FakeClock) -> Iterator[NerdGraphClient]:
    with NerdGraphClient(
        URL, KEY, async_queries=True, max_attempts=3, sleep=fake_time.sleep, clock=fake_time
    ) as nerdgraph:
        yield nerdgraph


def test_an_async_query_is_polled_after_retry_after_until_it_completes(
    async_client: NerdGraphClient, nr: responses.RequestsMock, fake_time: FakeClock
) -> None:
    nr.post(URL, json=running())
    nr.post(URL, json=running("nrqlQueryProgress", retry_after=3))
    nr.post(URL, json=running("nrqlQueryProgress", retry_after="4"))
    nr.post(URL, json=done())

    result = async_client.query(ACCOUNT, NRQL)

    assert result == NrqlResult(
        results=ROWS, facets=("appName",), requests=4, retries=0, inspected=900
    )
    assert fake_time.sleeps == [2.0, 3.0, 4.0]
    first, *polls = [json.loads(call.request.body) for call in nr.calls]
    assert first["variables"] == {"accountId": ACCOUNT, "nrql": NRQL, "timeout": 60, "async": True}
    for poll in polls:
        assert poll == {
            "query": POLL_GRAPHQL,
            "variables": {"accountId": ACCOUNT, "queryId": "q-1f3a"},
        }


def test_a_poll_never_waits_past_the_retry_deadline(
    async_client: NerdGraphClient, nr: responses.RequestsMock, fake_time: FakeClock
) -> None:
    nr.post(URL, json=running(retry_after=30, retry_deadline=10))
    nr.post(URL, json=done())

    async_client.query(ACCOUNT, NRQL)

    assert fake_time.sleeps == [9.0]  # one second before New Relic may cancel it


def test_an_async_query_that_completes_at_once_is_not_polled(
    async_client: NerdGraphClient, nr: responses.RequestsMock, fake_time: FakeClock
) -> None:
    nr.post(URL, json=done("nrql"))

    assert async_client.query(ACCOUNT, NRQL).requests == 1
    assert fake_time.sleeps == [] and len(nr.calls) == 1


def test_a_failed_poll_is_retried_and_an_error_in_a_poll_fails_the_query(
    async_client: NerdGraphClient, nr: responses.RequestsMock, fake_time: FakeClock
) -> None:
    nr.post(URL, json=running())
    nr.post(URL, status=502, body="")
    nr.post(URL, json=graphql_errors(error("NRQL Syntax Error: unexpected 'FROM'")))

    with pytest.raises(NewRelicError, match="NRQL Syntax Error"):
        async_client.query(ACCOUNT, NRQL)
    assert len(nr.calls) == 3


def test_an_async_query_that_never_completes_gives_up(
    async_client: NerdGraphClient, nr: responses.RequestsMock, fake_time: FakeClock
) -> None:
    nr.post(URL, json=running(retry_after=60, retry_deadline=120))
    nr.post(URL, json=running("nrqlQueryProgress", retry_after=60, retry_deadline=120))

    with pytest.raises(TransientError, match="q-1f3a did not complete within 660 s"):
        async_client.query(ACCOUNT, NRQL)
    assert sum(fake_time.sleeps) <= 720


class CountingLimiter(Limiter):
    """Counts the requests that passed, and proves none was sent outside it."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = 0
        self.inside = False

    def acquire(self, account: int | None = None, nrql: str | None = None) -> None:
        super().acquire(account, nrql)
        self.entered += 1
        self.inside = True

    def release(self) -> None:
        self.inside = False
        super().release()


def test_every_request_of_an_async_query_passes_the_limiter_polls_and_retries_included(
    fake_time: FakeClock, nr: responses.RequestsMock
) -> None:
    limiter = CountingLimiter()
    inside_at_send: list[bool] = []

    def answer(status: int, body: dict[str, Any] | None) -> Any:
        def reply(request: Any) -> tuple[int, dict[str, str], str]:
            inside_at_send.append(limiter.inside)
            return status, {}, json.dumps(body) if body is not None else ""

        return reply

    for status, body in [
        (200, running()),
        (503, None),
        (200, running("nrqlQueryProgress")),
        (200, done()),
    ]:
        nr.add_callback(responses.POST, URL, callback=answer(status, body))
    client = NerdGraphClient(
        URL, KEY, async_queries=True, limiter=limiter, sleep=fake_time.sleep, clock=fake_time
    )

    result = client.query(ACCOUNT, NRQL)

    assert (result.requests, result.retries) == (4, 1)
    assert limiter.entered == 4 and inside_at_send == [True] * 4
