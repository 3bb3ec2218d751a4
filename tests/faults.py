"""Helpers for the fault-injection tests (tests/test_faults.py).

Synchronisation is always "poll a condition until a deadline", never a fixed sleep: the
fake's request log, the archiver's own output lines, or a process ending.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TypeVar

from archiver.windows import iso
from fakes.nerdgraph import FakeNerdGraph
from tests.e2e import Cli, Item, Spec, actual_points, expected_points, parse_iso

T = TypeVar("T")
POLL_SECONDS = 0.01
LAG_SECONDS = 5 * 60
# An ERROR log line, or the CLI's own one-line error.
ERROR_LINE = re.compile(r"^\S+ ERROR |^nr-archiver: error: ")


def wait_until(condition: Callable[[], T], timeout: float, what: str) -> T:
    """Poll `condition` until it is truthy and return that; fail naming `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(POLL_SECONDS)  # a poll interval, not a synchronisation sleep
    return value


class Output:
    """Collects a Popen's merged stdout/stderr line by line on a background thread."""

    def __init__(self, process: subprocess.Popen) -> None:
        self.process = process
        self._lines: list[str] = []
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            with self._lock:
                self._lines.append(line.rstrip("\n"))

    @property
    def lines(self) -> list[str]:
        with self._lock:
            return list(self._lines)

    @property
    def text(self) -> str:
        return "\n".join(self.lines)

    def finish(self, timeout: float = 300) -> int:
        """Wait for the process to end and for its last line to be read; its exit code.

        `timeout` only bounds a hung run: generous, for a loaded 2-core CI machine. The reader
        must have reached the end of the output, or assertions on `lines` would miss its tail.
        """
        code = self.process.wait(timeout=timeout)
        self._reader.join(timeout=timeout)
        assert not self._reader.is_alive(), "the run's output was not read to its end"
        return code


def kill_after_requests(cli: Cli, fake: FakeNerdGraph, answered: int) -> None:
    """Start `run`, SIGKILL it once the fake has answered `answered` requests (or it ended)."""
    process = cli.popen("run")
    try:
        wait_until(
            lambda: len(fake.requests) >= answered or process.poll() is not None,
            timeout=120,
            what=f"{answered} New Relic requests",
        )
    finally:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
        process.communicate(timeout=120)
    assert process.returncode == -signal.SIGKILL, "the run ended before it could be killed"


def error_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if ERROR_LINE.search(line)]


def ok_nrqls(fake: FakeNerdGraph) -> list[str]:
    return [r.nrql for r in fake.requests if r.outcome == "ok" and r.nrql is not None]


def exported_until(cli: Cli) -> dict[str, datetime | None]:
    """Per query (every spec here has one target): the checkpoint `status --json` shows."""
    return {
        query: parse_iso(row["exported_until"]) if row["exported_until"] else None
        for (query, _), row in cli.status().items()
    }


def assert_exact(influxd, spec: Spec, since: datetime, until: datetime | None) -> None:
    """InfluxDB holds exactly the contract's points of [since, until), nothing else."""
    assert until is not None, f"{spec.name}: no checkpoint"
    expected = expected_points(spec, since, until)
    assert expected, f"{spec.name}: the range [{since}, {until}) has no points"
    actual = actual_points(influxd, spec)
    missing = sorted(set(expected) - set(actual), key=lambda key: key[1])
    extra = sorted(set(actual) - set(expected), key=lambda key: key[1])
    wrong = [key for key in set(expected) & set(actual) if expected[key] != actual[key]]
    assert not (missing or extra or wrong), (
        f"{spec.name}: {len(missing)} missing (first {missing[:1]}), {len(extra)} extra "
        f"(first {extra[:1]}), {len(wrong)} wrong (first {wrong[:1]})"
    )


def assert_checkpoint_not_ahead(
    influxd, spec: Spec, since: datetime, checkpoint: datetime | None, now: datetime
) -> None:
    """Every point before the checkpoint is in InfluxDB, and every point there is right."""
    actual = actual_points(influxd, spec)
    contract = expected_points(spec, since, now)
    wrong = {key: value for key, value in actual.items() if contract.get(key) != value}
    assert not wrong, f"{spec.name}: {len(wrong)} points not in the contract: {next(iter(wrong))}"
    if checkpoint is None:
        return
    before = expected_points(spec, since, checkpoint)
    missing = sorted(set(before) - set(actual), key=lambda key: key[1])
    assert not missing, (
        f"{spec.name}: checkpoint {checkpoint} is ahead of the data: {len(missing)} points "
        f"before it are missing, first at {missing[0][1]}"
    )


# -- query specs ------------------------------------------------------------------------------


def facet_spec(name: str, database: str, start: datetime) -> Spec:
    """1-minute buckets, FACET appName, host: 9 series, up to 366 buckets per request."""
    return Spec(
        name=name,
        nrql="SELECT average(duration), percentile(duration, 95), count(*) "
        "FROM Transaction FACET appName, host",
        event_type="Transaction",
        facets=("appName", "host"),
        items=(
            Item("average", "duration", "average.duration"),
            Item("percentile", "duration", "percentile.duration", ("95",)),
            Item("count", None, "count"),
        ),
        measurement=f"nr_{name}",
        interval="1 minute",
        interval_seconds=60,
        database=database,
        tags={"source": "newrelic"},
        extra={"start": iso(start)},
    )


def plain_spec(name: str, database: str, start: datetime, event_type: str = "PageView") -> Spec:
    """1-minute buckets without FACET: one series, 366 buckets per request."""
    return Spec(
        name=name,
        nrql=f"SELECT count(*) AS hits, max(duration) AS slowest FROM {event_type}",
        event_type=event_type,
        facets=(),
        items=(Item("count", None, "hits"), Item("max", "duration", "slowest")),
        measurement=f"nr_{name}",
        interval="1m",
        interval_seconds=60,
        database=database,
        extra={"start": iso(start)},
    )


def small_spec(
    name: str, database: str, start: datetime, nrql_extra: str = "", minutes: int = 5
) -> Spec:
    """FACET provider: 3 series, one field; at 1 minute, 2 days are 9 requests of <= 366 buckets."""
    return Spec(
        name=name,
        nrql=f"SELECT count(*) AS 'logins' FROM Login{nrql_extra} FACET provider",
        event_type="Login",
        facets=("provider",),
        items=(Item("count", None, "logins"),),
        measurement=f"nr_{name}",
        interval=f"{minutes} minutes",
        interval_seconds=minutes * 60,
        database=database,
        extra={"start": iso(start)},
    )


# -- something at INFLUX_URL that is not InfluxDB ---------------------------------------------


class _HtmlHandler(BaseHTTPRequestHandler):
    PAGE = b"<!DOCTYPE html><html><body><h1>Welcome to nginx!</h1></body></html>"

    def _page(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(self.PAGE)))
        self.end_headers()
        self.wfile.write(self.PAGE)

    do_GET = do_POST = do_HEAD = _page

    def log_message(self, format: str, *args: object) -> None:
        """Quiet."""


@contextmanager
def html_server() -> Iterator[str]:
    """An HTTP server on 127.0.0.1 answering 200 and an HTML page to everything; its URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _HtmlHandler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.daemon = True
    thread.start()
    try:
        host, port = server.server_address[:2]
        yield f"http://{host}:{port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
