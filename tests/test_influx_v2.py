"""The influxdb-client sink (1.8, 2.x, 3.x modes) against recorded HTTP exchanges.

influxdb-client speaks urllib3, which `responses` cannot intercept, so `FakeInflux2` is a small
real HTTP server on 127.0.0.1 that records every request and answers as InfluxDB 2.x (or 1.8)
does. `test_real_influxdb_2` runs the same sink against a real server when INFLUX_V2_URL,
INFLUX_TOKEN and INFLUX_ORG are set.
"""

from __future__ import annotations

import gzip
import itertools
import json
import logging
import os
import secrets
import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit

import pytest
import requests
from influxdb_client import InfluxDBClient

from archiver import logs
from archiver.errors import AuthError, ConfigError, InfluxError, TransientError
from archiver.sinks.base import RetentionPolicy
from archiver.sinks.buckets import bucket_name
from archiver.sinks.influx_client import InfluxClientSink
from tests.clocks import FakeSleep
from tests.influxd import InfluxServer, free_port

TOKEN = "tok-" + secrets.token_hex(8)
ORG = "my-org"
ORG_ID = "0a1b2c3d4e5f6a7b"
LINES = [
    "nr_transaction,appName=Call\\ Center,host=web-1 average.duration=0.25,count=120.0 1700000000",
    'nr_transaction,appName=caf\u00e9 s="a \\"quoted\\" \\\\ value",ok=true 1700000060',
    "nr_transaction percentile.duration.95=1.5 1700000120",
]
TYPE_CONFLICT = (
    'partial write: field type conflict: input field "count" on measurement "nr_transaction" '
    "is type integer, already exists as type float dropped=1"
)


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes  # un-gzipped


@dataclass
class FakeInflux2:
    """Answers like InfluxDB 2.x (`version="v2.7.1"`) or 1.8; records every request."""

    version: str | None = "v2.7.1"
    token: str | None = None  # when set, /api/v2 wants `Authorization: Token <token>`
    ping_needs_token: bool = False  # as InfluxDB 3 does by default
    requests: list[Recorded] = field(default_factory=list)
    write_answers: deque[tuple[int, dict | None, dict[str, str]]] = field(default_factory=deque)
    buckets: list[dict] = field(default_factory=list)
    dbrps: list[dict] = field(default_factory=list)
    hang: threading.Event | None = None  # when set, /api/v2/write waits for it
    _ids: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    def answer_writes(self, *answers: tuple[int, dict | None, dict[str, str]]) -> None:
        self.write_answers.extend(answers)

    def sent(self, method: str, path: str) -> list[Recorded]:
        return [r for r in self.requests if r.method == method and r.path == path]

    def handle(self, request: Recorded) -> tuple[int, dict | None, dict[str, str]]:
        self.requests.append(request)
        if request.path == "/ping":
            return self._ping(request)
        if self.token and request.headers.get("Authorization") != f"Token {self.token}":
            return 401, {"code": "unauthorized", "message": "unauthorized access"}, {}
        route = (request.method, request.path)
        if route == ("POST", "/api/v2/write"):
            if self.hang is not None:
                self.hang.wait(10)
            return self.write_answers.popleft() if self.write_answers else (204, None, {})
        if route == ("GET", "/api/v2/orgs"):
            return self._orgs(request.query.get("org"))
        if route == ("GET", "/api/v2/buckets"):
            name = request.query.get("name")
            found = [b for b in self.buckets if name is None or b["name"] == name]
            return 200, {"buckets": found}, {}
        if route == ("POST", "/api/v2/buckets"):
            return 201, self.add_bucket(**json.loads(request.body)), {}
        if route == ("GET", "/api/v2/dbrps"):
            db = request.query.get("db")
            return 200, {"content": [m for m in self.dbrps if db in (None, m["database"])]}, {}
        if route == ("POST", "/api/v2/dbrps"):
            return 201, self.add_dbrp(**json.loads(request.body)), {}
        return 404, {"code": "not found", "message": "path not found"}, {}

    def add_bucket(self, name: str, orgID: str = ORG_ID, retentionRules=(), **_: object) -> dict:
        bucket = {
            "id": f"{next(self._ids):016x}",
            "name": name,
            "orgID": orgID,
            "type": "user",
            "retentionRules": list(retentionRules),
        }
        self.buckets.append(bucket)
        return bucket

    def add_dbrp(self, **mapping: object) -> dict:
        stored = {"id": f"{next(self._ids):016x}", "virtual": False, **mapping}
        self.dbrps.append(stored)
        return stored

    def _ping(self, request: Recorded) -> tuple[int, dict | None, dict[str, str]]:
        if self.ping_needs_token and request.headers.get("Authorization") != f"Token {self.token}":
            return 401, {"code": "unauthorized", "message": "unauthorized access"}, {}
        headers = {"X-Influxdb-Version": self.version} if self.version else {}
        return 204, None, headers

    def _orgs(self, name: str | None) -> tuple[int, dict | None, dict[str, str]]:
        if name != ORG:
            return (
                404,
                {"code": "not found", "message": f'organization name "{name}" not found'},
                {},
            )
        return 200, {"orgs": [{"id": ORG_ID, "name": ORG}]}, {}


def _handler_for(fake: FakeInflux2) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length)
            if self.headers.get("Content-Encoding") == "gzip":
                body = gzip.decompress(body)
            url = urlsplit(self.path)
            status, answer, headers = fake.handle(
                Recorded(
                    self.command, url.path, dict(parse_qsl(url.query)), dict(self.headers), body
                )
            )
            data = json.dumps(answer).encode() if answer is not None else b""
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            if data:
                self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PATCH = do_DELETE = _serve

        def log_message(self, format: str, *args: object) -> None:
            pass

    return Handler


@dataclass
class RunningFake:
    fake: FakeInflux2
    url: str


@contextmanager
def serving(fake: FakeInflux2) -> Iterator[RunningFake]:
    """Run `fake` on a free port of 127.0.0.1 for the `with` block."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(fake))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield RunningFake(fake, f"http://127.0.0.1:{server.server_address[1]}")
    finally:
        if fake.hang is not None:
            fake.hang.set()
        server.shutdown()
        server.server_close()


@pytest.fixture
def influx2() -> Iterator[RunningFake]:
    with serving(FakeInflux2(token=TOKEN)) as running:
        yield running


@pytest.fixture
def influx18() -> Iterator[RunningFake]:
    with serving(FakeInflux2(version="1.8.10")) as running:
        yield running


@pytest.fixture
def sleep() -> FakeSleep:
    return FakeSleep()


@pytest.fixture
def sink(influx2: RunningFake, sleep: FakeSleep) -> Iterator[InfluxClientSink]:
    with InfluxClientSink(
        influx2.url, flavour="2.x", token=TOKEN, org=ORG, sleep=sleep, max_attempts=4
    ) as sink:
        yield sink


# --- writes ------------------------------------------------------------------------------------


def test_v2_write_sends_the_lines_joined_by_newlines_gzipped_at_second_precision(
    sink: InfluxClientSink, influx2: RunningFake
) -> None:
    result = sink.write("newrelic", "raw_30d", LINES)

    (write,) = influx2.fake.sent("POST", "/api/v2/write")
    assert write.body == "\n".join(LINES).encode()
    assert write.headers["Content-Encoding"] == "gzip"
    assert write.query == {"bucket": "newrelic/raw_30d", "org": ORG, "precision": "s"}
    assert write.headers["Authorization"] == f"Token {TOKEN}"
    assert result.lines == 3 and result.requests == 1 and result.retries == 0


def test_default_retention_policy_writes_to_the_bucket_named_like_the_database(
    sink: InfluxClientSink, influx2: RunningFake
) -> None:
    sink.write("newrelic", None, LINES[:1])

    assert influx2.fake.sent("POST", "/api/v2/write")[0].query["bucket"] == "newrelic"


def test_18_mode_sends_user_and_password_as_the_token_and_db_rp_as_the_bucket(
    influx18: RunningFake,
) -> None:
    with InfluxClientSink(
        influx18.url, flavour="1.8", username="archiver", password="s3cret-pw"
    ) as sink:
        sink.write("newrelic", "raw_30d", LINES)

    (write,) = influx18.fake.sent("POST", "/api/v2/write")
    assert write.headers["Authorization"] == "Token archiver:s3cret-pw"
    assert write.query == {"bucket": "newrelic/raw_30d", "org": "-", "precision": "s"}
    assert write.body == "\n".join(LINES).encode()


def test_lines_go_in_batches_of_at_most_5000(sink: InfluxClientSink, influx2: RunningFake) -> None:
    lines = [f"m f={i}.0 {1700000000 + i}" for i in range(12001)]

    result = sink.write("newrelic", None, lines)

    bodies = [r.body.split(b"\n") for r in influx2.fake.sent("POST", "/api/v2/write")]
    assert [len(body) for body in bodies] == [5000, 5000, 2001]
    assert b"\n".join(itertools.chain.from_iterable(bodies)) == "\n".join(lines).encode()
    assert result.requests == 3


# --- buckets and DBRP mappings -----------------------------------------------------------------


def test_missing_bucket_is_created_with_the_retention_and_mapped_for_influxql(
    sink: InfluxClientSink, influx2: RunningFake
) -> None:
    policy = sink.ensure_target("newrelic", "raw_30d", "30d")

    (created,) = influx2.fake.sent("POST", "/api/v2/buckets")
    assert {
        "name": "newrelic/raw_30d",
        "orgID": ORG_ID,
        "retentionRules": [{"type": "expire", "everySeconds": 30 * 86400}],
    }.items() <= json.loads(created.body).items()
    (mapping,) = influx2.fake.sent("POST", "/api/v2/dbrps")
    assert json.loads(mapping.body) == {
        "orgID": ORG_ID,
        "bucketID": influx2.fake.buckets[0]["id"],
        "database": "newrelic",
        "retention_policy": "raw_30d",
        "default": False,
    }
    assert policy == RetentionPolicy("raw_30d", 30 * 86400, is_default=False)


def test_default_retention_policy_gets_an_infinite_bucket_and_the_default_mapping(
    sink: InfluxClientSink, influx2: RunningFake
) -> None:
    policy = sink.ensure_target("newrelic", None, None)

    (created,) = influx2.fake.sent("POST", "/api/v2/buckets")
    assert json.loads(created.body)["name"] == "newrelic"
    assert json.loads(created.body)["retentionRules"] == []
    (mapping,) = influx2.fake.sent("POST", "/api/v2/dbrps")
    assert json.loads(mapping.body)["retention_policy"] == "autogen"
    assert json.loads(mapping.body)["default"] is True
    assert policy == RetentionPolicy("autogen", None, is_default=True)


def test_existing_bucket_and_mapping_are_read_not_changed(
    sink: InfluxClientSink, influx2: RunningFake, caplog: pytest.LogCaptureFixture
) -> None:
    bucket = influx2.fake.add_bucket(
        "newrelic/two_years", retentionRules=[{"type": "expire", "everySeconds": 3600}]
    )
    influx2.fake.add_dbrp(
        orgID=ORG_ID, bucketID=bucket["id"], database="newrelic",
        retention_policy="two_years", default=False,
    )  # fmt: skip

    with caplog.at_level(logging.WARNING):
        policy = sink.ensure_target("newrelic", "two_years", "104w")

    assert policy == RetentionPolicy("two_years", 3600, is_default=False)
    assert influx2.fake.sent("POST", "/api/v2/buckets") == []
    assert influx2.fake.sent("POST", "/api/v2/dbrps") == []
    assert "exists with another retention" in caplog.text


def test_missing_bucket_without_retention_duration_is_an_error_naming_the_fix(
    sink: InfluxClientSink, influx2: RunningFake
) -> None:
    with pytest.raises(InfluxError, match=r'bucket "newrelic/raw_30d" .* retention_duration'):
        sink.ensure_target("newrelic", "raw_30d", None)
    assert influx2.fake.sent("POST", "/api/v2/buckets") == []


def test_unknown_organization_is_a_config_error_naming_influx_org(influx2: RunningFake) -> None:
    with (
        InfluxClientSink(influx2.url, flavour="2.x", token=TOKEN, org="nobody") as sink,
        pytest.raises((ConfigError, InfluxError), match="INFLUX_ORG"),
    ):
        sink.ensure_target("newrelic", None, None)


@pytest.mark.parametrize(
    ("token", "org", "variable"),
    [(None, ORG, "INFLUX_TOKEN"), (TOKEN, None, "INFLUX_ORG")],
    ids=["no-token", "no-org"],
)
def test_v2_mode_needs_token_and_org(token: str | None, org: str | None, variable: str) -> None:
    with pytest.raises(ConfigError, match=variable):
        InfluxClientSink("http://127.0.0.1:1", flavour="2.x", token=token, org=org)


# --- errors and retries ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (
            422,
            {"code": "unprocessable entity", "message": f"failure writing points: {TYPE_CONFLICT}"},
        ),
        (400, {"error": TYPE_CONFLICT}),
    ],
    ids=["2.x-422", "1.8-400"],
)
def test_field_type_conflict_names_measurement_and_field(
    sink: InfluxClientSink, influx2: RunningFake, status: int, body: dict
) -> None:
    influx2.fake.answer_writes((status, body, {}))

    with pytest.raises(InfluxError, match='field "count" on measurement "nr_transaction"'):
        sink.write("newrelic", None, LINES)
    assert len(influx2.fake.sent("POST", "/api/v2/write")) == 1


def test_a_batch_too_large_is_refused_once_naming_the_batch_limit(
    sink: InfluxClientSink, influx2: RunningFake
) -> None:
    too_large = {"code": "request too large", "message": "unable to read data: too large"}
    influx2.fake.answer_writes((413, too_large, {}))

    with pytest.raises(InfluxError) as refused:
        sink.write("newrelic", None, LINES)

    assert "HTTP 413; batches are at most 5,000 lines" in str(refused.value)
    assert "raise the server's request size limit" in str(refused.value)
    assert len(influx2.fake.sent("POST", "/api/v2/write")) == 1  # not retried


def test_points_beyond_retention_are_counted_not_raised(
    sink: InfluxClientSink, influx2: RunningFake
) -> None:
    message = "failure writing points to database: partial write: points beyond retention policy"
    influx2.fake.answer_writes(
        (422, {"code": "unprocessable entity", "message": f"{message} dropped=2"}, {})
    )

    result = sink.write("newrelic", "raw_30d", LINES)

    assert result.dropped_beyond_retention == 2


def test_unparsable_line_is_rejected_at_once(sink: InfluxClientSink, influx2: RunningFake) -> None:
    influx2.fake.answer_writes(
        (400, {"code": "invalid", "message": "unable to parse 'bad line': missing fields"}, {})
    )

    with pytest.raises(InfluxError, match="unable to parse 'bad line'"):
        sink.write("newrelic", None, ["bad line"])
    assert len(influx2.fake.sent("POST", "/api/v2/write")) == 1


def test_wrong_token_is_an_auth_error_without_the_token(influx2: RunningFake) -> None:
    wrong = "wrong-" + secrets.token_hex(8)
    with (
        InfluxClientSink(influx2.url, flavour="2.x", token=wrong, org=ORG) as sink,
        pytest.raises(AuthError, match=r"HTTP 401.*INFLUX_TOKEN") as raised,
    ):
        sink.write("newrelic", None, LINES)
    assert wrong not in str(raised.value)
    assert logs.redact(f"token {wrong}") == "token ***"
    assert len(influx2.fake.sent("POST", "/api/v2/write")) == 1


def test_503_then_204_succeeds_with_one_retry(
    sink: InfluxClientSink, influx2: RunningFake, sleep: FakeSleep
) -> None:
    influx2.fake.answer_writes((503, {"code": "unavailable", "message": "write throttled"}, {}))

    result = sink.write("newrelic", None, LINES)

    assert (result.requests, result.retries) == (2, 1)
    assert len(sleep.waits) == 1
    writes = influx2.fake.sent("POST", "/api/v2/write")
    assert [w.body for w in writes] == ["\n".join(LINES).encode()] * 2  # no urllib3 retries


def test_429_retry_after_is_honoured(
    sink: InfluxClientSink, influx2: RunningFake, sleep: FakeSleep
) -> None:
    influx2.fake.answer_writes(
        (429, {"code": "too many requests", "message": "slow down"}, {"Retry-After": "42"})
    )

    sink.write("newrelic", None, LINES)

    assert sleep.waits == [42.0]


def test_transient_errors_give_up_after_the_attempts(
    sink: InfluxClientSink, influx2: RunningFake, sleep: FakeSleep
) -> None:
    influx2.fake.answer_writes(*[(500, {"code": "internal error", "message": "boom"}, {})] * 4)

    with pytest.raises(TransientError, match=r"HTTP 500.*boom.*gave up after 4 attempts"):
        sink.write("newrelic", None, LINES)
    assert len(influx2.fake.sent("POST", "/api/v2/write")) == 4


def test_refused_connection_is_transient(sleep: FakeSleep) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with (
        InfluxClientSink(url, flavour="3.x", sleep=sleep, max_attempts=2) as sink,
        pytest.raises(TransientError, match=r"cannot reach InfluxDB .*connection refused"),
    ):
        sink.write("newrelic", None, LINES)
    assert len(sleep.waits) == 1


def test_timeout_is_transient(sleep: FakeSleep) -> None:
    fake = FakeInflux2(hang=threading.Event())
    with (
        serving(fake) as running,
        InfluxClientSink(
            running.url, flavour="3.x", timeout=0.2, sleep=sleep, max_attempts=1
        ) as sink,
        pytest.raises(TransientError, match=r"did not answer within 0\.2 s"),
    ):
        sink.write("newrelic", None, LINES)


# --- ping and the other flavours ---------------------------------------------------------------


def test_ping_reads_the_version_header(sink: InfluxClientSink) -> None:
    assert sink.ping() == "v2.7.1"


def test_ping_without_the_version_header_is_not_influxdb() -> None:
    with (
        serving(FakeInflux2(version=None)) as running,
        InfluxClientSink(running.url, flavour="3.x") as sink,
        pytest.raises(InfluxError, match=r"INFLUX_URL .* is not InfluxDB"),
    ):
        sink.ping()


def test_3x_mode_writes_one_database_per_target_and_creates_nothing(
    influx2: RunningFake,
) -> None:
    with InfluxClientSink(influx2.url, flavour="3.x", token=TOKEN) as sink:
        policy = sink.ensure_target("newrelic", "raw_30d", "30d")
        sink.write("newrelic", "raw_30d", LINES)

    assert policy == RetentionPolicy("raw_30d", 30 * 86400, is_default=False)
    assert [r.path for r in influx2.fake.requests] == ["/api/v2/write"]
    assert influx2.fake.requests[0].query["bucket"] == "newrelic/raw_30d"


def test_18_mode_creates_database_and_retention_policy_with_influxql(
    influxd: InfluxServer, influx_db: str
) -> None:
    with InfluxClientSink(influxd.url, flavour="1.8") as sink:
        policy = sink.ensure_target(influx_db, "raw_30d", "30d")

    assert policy == RetentionPolicy("raw_30d", 30 * 86400, is_default=False)
    rows = influxd.query(f'SHOW RETENTION POLICIES ON "{influx_db}"')
    assert {"name": "raw_30d", "duration": "720h0m0s"}.items() <= rows[-1].items()


def test_bucket_names() -> None:
    assert bucket_name("newrelic", None) == "newrelic"
    assert bucket_name("newrelic", "raw_30d") == "newrelic/raw_30d"


# --- a real InfluxDB 2.x, when one is given ----------------------------------------------------

REAL_V2 = {name: os.environ.get(name) for name in ("INFLUX_V2_URL", "INFLUX_TOKEN", "INFLUX_ORG")}


@pytest.mark.skipif(
    not all(REAL_V2.values()),
    reason="set INFLUX_V2_URL, INFLUX_TOKEN and INFLUX_ORG to test against a real InfluxDB 2.x",
)
def test_real_influxdb_2() -> None:
    url, token, org = REAL_V2["INFLUX_V2_URL"], REAL_V2["INFLUX_TOKEN"], REAL_V2["INFLUX_ORG"]
    database = f"test_{secrets.token_hex(6)}"
    with InfluxClientSink(url, flavour="2.x", token=token, org=org) as sink:
        try:
            policy = sink.ensure_target(database, "raw_1d", "1d")
            now = int(time.time())
            result = sink.write(database, "raw_1d", [f"nr_test,host=a value=1.5 {now}"])
            answer = requests.get(
                f"{url}/query",
                params={"db": database, "rp": "raw_1d", "q": "SELECT value FROM nr_test"},
                headers={"Authorization": f"Token {token}"},
                timeout=30,
            ).json()
        finally:
            _delete_bucket(url, token, org, bucket_name(database, "raw_1d"))

    assert policy == RetentionPolicy("raw_1d", 86400, is_default=False)
    assert result.lines == 1
    assert answer["results"][0]["series"][0]["values"][0][1] == 1.5  # read through the DBRP


def _delete_bucket(url: str, token: str, org: str, name: str) -> None:
    with InfluxDBClient(url, token=token, org=org) as client:
        bucket = client.buckets_api().find_bucket_by_name(name)
        if bucket is not None:
            client.buckets_api().delete_bucket(bucket)  # its DBRP mappings go with it
