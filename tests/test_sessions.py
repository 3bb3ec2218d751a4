"""The environment's proxy settings reach New Relic's and InfluxDB's requests, read once when
the client is made (`archiver.sessions`): through a real proxy, over real sockets."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from archiver.newrelic.nerdgraph import NerdGraphClient
from archiver.sinks.influx_v1 import InfluxV1Sink
from tests.clocks import FakeClock
from tests.e2e import ACCOUNT

ROWS = [{"beginTimeSeconds": 1_700_000_000, "endTimeSeconds": 1_700_000_060, "count": 3}]
NRQL = "SELECT count(*) FROM Transaction SINCE 1700000000 UNTIL 1700000060 TIMESERIES 1 minute"
# Hosts that resolve nowhere: a request reaches them only through the proxy.
NERDGRAPH = "http://nerdgraph.invalid/graphql"
INFLUX = "http://influxdb.invalid:8086"


class Proxy(BaseHTTPRequestHandler):
    """An HTTP proxy that answers every request itself, and remembers the request lines."""

    seen: list[str] = []

    def do_GET(self) -> None:
        type(self).seen.append(self.requestline)
        if "/ping" in self.path:
            self.send_response(204)
            self.send_header("X-Influxdb-Version", "1.6.7")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self._json({"results": [{"statement_id": 0}]})

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        type(self).seen.append(self.requestline)
        answer = {"results": ROWS, "metadata": {"facets": None, "messages": []}}
        self._json({"data": {"actor": {"account": {"nrql": answer}}}})

    def _json(self, document: dict[str, Any]) -> None:
        body = json.dumps(document).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def proxy(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    Proxy.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), Proxy)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    for name in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy", "http_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", url)
    yield url
    server.shutdown()
    server.server_close()
    thread.join()


def test_new_relic_is_asked_through_the_environments_proxy(
    proxy: str, fake_time: FakeClock
) -> None:
    with NerdGraphClient(NERDGRAPH, "NRAK-PROXIED", sleep=fake_time.sleep) as client:
        first = client.query(ACCOUNT, NRQL)
        second = client.query(ACCOUNT, NRQL)

    assert first.results == ROWS and second.results == ROWS
    assert Proxy.seen == [f"POST {NERDGRAPH} HTTP/1.1"] * 2


def test_influxdb_is_reached_through_the_environments_proxy(proxy: str) -> None:
    with InfluxV1Sink(INFLUX) as sink:
        version = sink.ping()
        sink.query("SHOW DATABASES")

    assert version.startswith("1.6.7")
    assert [line.split("?")[0] for line in Proxy.seen] == [
        f"GET {INFLUX}/ping HTTP/1.1",
        f"GET {INFLUX}/query",
    ]


def test_no_proxy_sends_new_relics_requests_straight_to_it(
    proxy: str, fake_time: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")  # nothing listens on port 9
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    with NerdGraphClient(f"{proxy}/graphql", "NRAK-DIRECT", sleep=fake_time.sleep) as client:
        result = client.query(ACCOUNT, NRQL)

    assert result.results == ROWS
    assert Proxy.seen == ["POST /graphql HTTP/1.1"]  # origin form: not as a proxy is asked
