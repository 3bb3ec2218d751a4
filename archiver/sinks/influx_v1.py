r"""The InfluxDB 1.x sink: `/write` for points, InfluxQL on `/query` for databases and RPs.

`InfluxV1Sink` is the InfluxQL client of `archiver.sinks.influxql` (which classifies transport
failures, 429 and 5xx as transient) plus `/write`, whose refusals are classified here
(`_write_outcome`, with the 400 rules both InfluxDB sinks share in `archiver.sinks.base`) and
are permanent, carrying InfluxDB's own message. A batch counts as written only when InfluxDB
acknowledged it, so `write()` returning means every line landed (except points older than the
RP's duration, which InfluxDB drops by design and we count in
`WriteResult.dropped_beyond_retention`).

Lines come escaped from `archiver.lineprotocol`, which documents how InfluxDB 1.x parses them.
"""

from __future__ import annotations

import concurrent.futures
import logging
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import requests
from isal import igzip

from archiver.errors import InfluxError
from archiver.sinks.base import (
    BATCH_SIZE,
    Deleted,
    Precision,
    Series,
    WriteResult,
    classify_bad_request,
)
from archiver.sinks.influxql import InfluxQLClient

if TYPE_CHECKING:
    from archiver.verify.compare import Point

log = logging.getLogger(__name__)

# A batch is also cut so that it holds at most this many characters of line protocol (about
# as many bytes): 10,000 lines of wide raw events (a hundred attributes, a few KB a line) would
# otherwise make bodies of tens of MB, beyond InfluxDB 1.x's default [http] max-body-size of
# 25 MB (HTTP 413).
BATCH_CHARS = 5_000_000


def batches_of(lines: Sequence[str], max_lines: int, max_chars: int) -> list[Sequence[str]]:
    """`lines` cut into batches of at most `max_lines` lines, each cut again into equal parts
    when it holds more than `max_chars` characters (line protocol is rarely far from ASCII)."""
    batches: list[Sequence[str]] = []
    for start in range(0, len(lines), max_lines):
        batch = lines[start : start + max_lines]
        parts = -(-sum(map(len, batch)) // max_chars)  # rounded up
        if parts <= 1:
            batches.append(batch)
            continue
        step = -(-len(batch) // parts)
        batches.extend(batch[i : i + step] for i in range(0, len(batch), step))
    return batches


# Level 1 compresses line protocol to ~17% (level 6: ~14%) at a third of the CPU: a backfill
# spends its CPU here, not on the network.
GZIP_LEVEL = 1


def gzipped(body: bytes) -> bytes:
    """`body` as a gzip member (no timestamp), as every /write body is sent.

    Intel's ISA-L (`isal`), not zlib: the same gzip format, 4x less CPU at the same level on
    line protocol (bench answers, µs a line: 0.43 -> 0.10 for shape (a), 1.48 -> 0.41 for
    (c)) and a smaller body (level 1: 18% of the text against zlib's 20%). Compressing was
    a seventh of the archiver's CPU on a backfill (2026-11-29).
    """
    return igzip.compress(body, compresslevel=GZIP_LEVEL, mtime=0)


class InfluxV1Sink(InfluxQLClient):
    """Writes line protocol to an InfluxDB 1.x server (or anything speaking its `/write`)."""

    def __init__(
        self,
        url: str,
        username: str | None = None,
        password: str | None = None,
        *,
        timeout: float = 30.0,
        batch_size: int = BATCH_SIZE,
        batch_chars: int = BATCH_CHARS,
        in_flight: int = 3,
        gzip: bool = True,
        max_attempts: int = 6,
        max_total_seconds: float = 120.0,
        sleep: Callable[[float], None] = time.sleep,
        token: str | None = None,
    ) -> None:
        super().__init__(
            url, username, password, timeout=timeout, max_attempts=max_attempts,
            max_total_seconds=max_total_seconds, sleep=sleep, token=token,
        )  # fmt: skip
        self.batch_size = batch_size
        self.batch_chars = batch_chars
        self.gzip = gzip
        self._senders = concurrent.futures.ThreadPoolExecutor(in_flight, "influx-write")

    def close(self) -> None:
        self._senders.shutdown()
        super().close()

    # --- public operations -------------------------------------------------------------------

    def write(
        self,
        database: str,
        retention_policy: str | None,
        lines: Sequence[str],
        precision: Precision = "s",
    ) -> WriteResult:
        """Send `lines` in batches; returns once InfluxDB acknowledged every batch.

        Batches go `in_flight` at a time: one is compressed while another is on the wire, and
        InfluxDB parses two at once. Any batch failing fails the write (after all finished).
        """

        def send(batch: Sequence[str]) -> tuple[int, int]:
            return self._with_retries(
                lambda: self._write_batch(database, retention_policy, batch, precision)
            )

        batches = batches_of(lines, self.batch_size, self.batch_chars)
        if len(batches) <= 1:
            outcomes = [send(batch) for batch in batches]
        else:
            futures = [self._senders.submit(send, batch) for batch in batches]
            concurrent.futures.wait(futures)
            outcomes = [future.result() for future in futures]  # raises the first failure
        dropped = sum(batch_dropped for batch_dropped, _ in outcomes)
        requests_sent = sum(attempts for _, attempts in outcomes)
        return WriteResult(len(lines), dropped, requests_sent, requests_sent - len(outcomes))

    def read_points(
        self,
        database: str,
        retention_policy: str | None,
        series: Series,
        since_ns: int,
        until_ns: int,
    ) -> list[Point]:
        """The points of one query's series in [since_ns, until_ns) (`archiver.sinks.readback`)."""
        from archiver.sinks import readback  # `verify` only: `run` starts without it

        return readback.read_points(self, database, retention_policy, series, since_ns, until_ns)

    def delete_points(
        self, database: str, retention_policy: str | None, series: Series, points: list[Point]
    ) -> Deleted:
        """Delete exactly these points, never another policy's (`archiver.sinks.readback`)."""
        from archiver.sinks import readback

        return readback.delete_points(self, database, retention_policy, series, points)

    # --- writing -----------------------------------------------------------------------------

    def _write_batch(
        self,
        database: str,
        retention_policy: str | None,
        batch: Sequence[str],
        precision: Precision = "s",
    ) -> int:
        """POST one batch; returns the points InfluxDB dropped as beyond retention."""
        params = {"db": database, "precision": precision}
        if retention_policy:
            params["rp"] = retention_policy
        body = "\n".join(batch).encode()
        headers = {"Content-Type": "text/plain; charset=utf-8"}
        if self.gzip:
            body = gzipped(body)
            headers["Content-Encoding"] = "gzip"
        response = self._send("POST", "/write", params=params, data=body, headers=headers)
        target = f"{database}.{retention_policy}" if retention_policy else database
        dropped = self._write_outcome(response, target, len(batch))
        if dropped:
            log.info(
                "InfluxDB dropped %d of %d points older than the retention policy of %s "
                "(the others were written)",
                dropped,
                len(batch),
                target,
            )
        return dropped

    def _write_outcome(self, response: requests.Response, target: str, line_count: int) -> int:
        """Classify a /write answer: the number of points dropped as too old, or raise."""
        if response.ok:
            return 0
        status = response.status_code
        if status == 413:
            raise InfluxError(
                f"InfluxDB refused a batch of {line_count} lines for {target} as too large "
                f"(HTTP 413; batches are at most {self.batch_size:,} lines and "
                f"{self.batch_chars:,} characters): raise [http] max-body-size"
            )
        message = self._error_message(response)
        if status == 400:
            return classify_bad_request(message, target)
        if "retention policy not found" in message:
            raise InfluxError(
                f"InfluxDB has no retention policy for {target} ({message}): create it, "
                "or give retention_duration in the query file"
            )
        if status == 404:
            raise InfluxError(
                f"InfluxDB at {self.display_url} has no database for {target} (HTTP 404: "
                f"{message}): create it, or give the query file's database"
            )
        raise InfluxError(f"InfluxDB refused the write to {target} (HTTP {status}): {message}")
