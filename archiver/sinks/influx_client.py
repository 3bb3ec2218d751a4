"""InfluxDB 1.8+, 2.x and 3.x through influxdb-client's `/api/v2/write`.

Where each flavour keeps a target (database, retention_policy) of a query file:

- 1.8 (up to 1.12): bucket `db/rp` (`db` alone for the default RP), token `user:password`, org
  `-`. Databases and RPs are made with InfluxQL, exactly as for 1.x
  (`InfluxQLClient.ensure_target`).
- 2.x: one bucket per target, named `db` for the default retention policy and `db/rp` otherwise
  (the names `influxd upgrade` gives the buckets it makes from 1.x databases). A missing bucket is
  created with `retention_duration` as its retention (infinite when none is given for the
  default RP), and a DBRP mapping (db, rp or `autogen`) → bucket is added, so InfluxQL and
  Grafana's InfluxQL mode keep reading the data as `"db"."rp"` (`archiver.sinks.buckets`).
- 3.x: one database per target, named like the 2.x buckets (3.x maps a v1 `rp` to `db/rp` too).
  3.x creates it on the first write; its retention is the server's business.

Writes are SYNCHRONOUS: one request per batch that raises on failure, so `write()` returning
means InfluxDB acknowledged every line and a checkpoint may move (batching mode would lose data
on close and report failures only through callbacks). influxdb-client's own retries stay off
(`retries=False` on its urllib3 pool, and the synchronous path adds none): the one retry policy
is tenacity's, here. Errors are classified as in `archiver.sinks.influx_v1`, with the rules
both share from `archiver.sinks.base`.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Literal, TypeVar

import urllib3
from influxdb_client import InfluxDBClient, WritePrecision
from influxdb_client.client.exceptions import InfluxDBError
from influxdb_client.client.write_api import SYNCHRONOUS
from influxdb_client.rest import ApiException

from archiver import logs
from archiver.errors import AuthError, ConfigError, InfluxError, TransientError
from archiver.retry import RetryPolicy, connection_cause, retry_after_seconds
from archiver.sinks import readback
from archiver.sinks.base import (
    DEFAULT_RP,
    Deleted,
    Precision,
    RetentionPolicy,
    Series,
    WriteResult,
    check_retention_duration,
    classify_bad_request,
    without_userinfo,
)
from archiver.sinks.buckets import Targets, bucket_name, bucket_seconds
from archiver.sinks.influxql import InfluxQLClient

if TYPE_CHECKING:
    from archiver.verify.compare import Point

# Lines per request through influxdb-client (InfluxDB 1.8+, 2.x, 3.x): InfluxDB 2's documented
# optimal batch ("Optimize writes"); a job's group of up to BATCH_SIZE lines is cut into these.
CLIENT_BATCH_SIZE = 5000

log = logging.getLogger(__name__)
T = TypeVar("T")

Flavour = Literal["1.8", "2.x", "3.x"]
WRITE_PRECISION = {
    "s": WritePrecision.S,
    "ms": WritePrecision.MS,
    "us": WritePrecision.US,
    "ns": WritePrecision.NS,
}


class InfluxClientSink:
    """Writes line protocol through influxdb-client; a `ReadableSink` (`archiver.sinks.base`)."""

    def __init__(
        self,
        url: str,
        *,
        flavour: Flavour,
        token: str | None = None,
        org: str | None = None,
        username: str | None = None,
        password: str | None = None,
        timeout: float = 30.0,
        batch_size: int = CLIENT_BATCH_SIZE,
        max_attempts: int = 6,
        max_total_seconds: float = 120.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.url = url.rstrip("/")
        self.display_url = without_userinfo(self.url)
        self.flavour = flavour
        self.timeout = timeout
        self.batch_size = batch_size
        self._influxql: InfluxQLClient | None = None
        if flavour == "1.8":
            token = f"{username}:{password or ''}" if username else None
            org = "-"
            self._influxql = InfluxQLClient(
                url, username, password, timeout=timeout, sleep=sleep,
                max_attempts=max_attempts, max_total_seconds=max_total_seconds,
            )  # fmt: skip
        elif flavour == "2.x":
            _require(token, "INFLUX_TOKEN", "an API token with write access", self.display_url)
            _require(org, "INFLUX_ORG", "the organization's name or ID", self.display_url)
        for secret in (token, password):
            logs.register_secret(secret or "")
        self.org = org or "-"
        self._token, self._sleep = token, sleep
        self._query_sink: InfluxQLClient | None = None  # InfluxQL reads for verify (2.x, 3.x)
        self.credentials = (
            "INFLUX_USERNAME / INFLUX_PASSWORD" if flavour == "1.8" else "INFLUX_TOKEN"
        )
        self._client = InfluxDBClient(
            self.url, token=token or "", org=self.org, timeout=round(timeout * 1000),
            enable_gzip=True, retries=False, connection_pool_maxsize=16,
        )  # fmt: skip
        self._write_api = self._client.write_api(write_options=SYNCHRONOUS)
        self._writing = threading.Lock()
        self._lock = threading.Lock()
        self._targets = Targets(
            self._client, org=self.org, display_url=self.display_url,
            with_retries=self._with_retries,
        )  # fmt: skip
        self._retry = RetryPolicy(
            max_attempts=max_attempts, max_total_seconds=max_total_seconds, sleep=sleep
        )

    def close(self) -> None:
        self._write_api.close()  # before the client: closing the client leaves write APIs open
        self._client.close()
        for influxql in (self._influxql, self._query_sink):
            if influxql is not None:
                influxql.close()

    def __enter__(self) -> InfluxClientSink:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # --- the sink interface ------------------------------------------------------------------

    def ping(self) -> str:
        """InfluxDB's version, from the `X-Influxdb-Version` header of `GET /ping`."""
        version, _ = self._with_retries(self._client.version, "GET /ping")
        if version == "unknown":
            raise InfluxError(
                f"INFLUX_URL {self.display_url} answered but is not InfluxDB "
                "(no X-Influxdb-Version header on /ping)"
            )
        return version

    def ensure_target(
        self, database: str, retention_policy: str | None, retention_duration: str | None
    ) -> RetentionPolicy:
        if self._influxql is not None:
            return self._influxql.ensure_target(database, retention_policy, retention_duration)
        check_retention_duration(retention_duration)
        if self.flavour == "3.x":
            return self._targets.database_target(database, retention_policy, retention_duration)
        return self._targets.bucket_target(database, retention_policy, retention_duration)

    def write(
        self,
        database: str,
        retention_policy: str | None,
        lines: Sequence[str],
        precision: Precision = "s",
    ) -> WriteResult:
        """Send `lines` in batches; returns once InfluxDB acknowledged every batch.

        One call at a time: influxdb-client does not say its write API may be shared between
        threads (the runner writes from two), so its calls are not overlapped.
        """
        bucket = bucket_name(database, retention_policy)
        dropped = requests_sent = retries = 0
        with self._writing:
            for start in range(0, len(lines), self.batch_size):
                batch = list(lines[start : start + self.batch_size])
                batch_dropped, attempts = self._with_retries(
                    lambda batch=batch: self._write_batch(bucket, batch, precision),
                    f'the write to "{bucket}"',
                )
                dropped += batch_dropped
                requests_sent += attempts
                retries += attempts - 1
        return WriteResult(len(lines), dropped, requests_sent, retries)

    # --- reading back and deleting (verify) ---------------------------------------------------
    # InfluxQL on /query reads back from every flavour: 1.8 natively, 2.x through the DBRP
    # mapping `ensure_target` made, 3.x with the database named like the bucket.

    def read_points(
        self,
        database: str,
        retention_policy: str | None,
        series: Series,
        since_ns: int,
        until_ns: int,
    ) -> list[Point]:
        """The points of one query's series in [since_ns, until_ns), read with InfluxQL."""
        database, retention_policy = self._influxql_names(database, retention_policy)
        return readback.read_points(
            self._reader(), database, retention_policy, series, since_ns, until_ns
        )

    def existing_policy(self, database: str, name: str | None) -> RetentionPolicy | None:
        if self.flavour == "1.8":
            return self._reader().existing_policy(database, name)
        if self.flavour == "3.x":  # made by the first write; its retention is the server's
            return RetentionPolicy(name or DEFAULT_RP, None, name is None)
        bucket = self._targets.find_bucket(bucket_name(database, name))
        if bucket is None:
            return None
        return RetentionPolicy(name or DEFAULT_RP, bucket_seconds(bucket), name is None)

    def delete_points(
        self, database: str, retention_policy: str | None, series: Series, points: list[Point]
    ) -> Deleted:
        """1.8: InfluxQL DELETE (`archiver.sinks.readback`); 2.x: the delete API, point by point."""
        if self.flavour == "1.8":
            return readback.delete_points(
                self._reader(), database, retention_policy, series, points
            )
        if self.flavour == "3.x":
            raise InfluxError(
                "InfluxDB 3 has no delete of single points: --prune cannot remove extra "
                "points there (drop them with a new database, or leave out --prune)"
            )
        bucket = bucket_name(database, retention_policy)
        deleted, kept = [], []
        for point in points:
            # The delete API matches every series that has these tags: refuse when another
            # series (a superset of the tags) has a point at that time too.
            others = readback.series_at(
                self._reader(), database, retention_policy, series.measurement, point
            )
            if others:
                kept.append((point, f"series {others[0]} has a point at the same time"))
                continue
            stamp = readback.rfc3339_ns(point.time_ns)
            predicate = readback.delete_predicate(series.measurement, point)
            self._with_retries(
                lambda stamp=stamp, predicate=predicate: self._client.delete_api().delete(
                    stamp, stamp, predicate, bucket=bucket, org=self.org
                ),
                f'deleting a point from "{bucket}"',
            )
            deleted.append(point)
        return Deleted(deleted, kept)

    def _influxql_names(
        self, database: str, retention_policy: str | None
    ) -> tuple[str, str | None]:
        if self.flavour == "3.x":
            return bucket_name(database, retention_policy), None
        return database, retention_policy

    def _reader(self) -> InfluxQLClient:
        """1.8: the InfluxQL sink it already has; 2.x, 3.x: one on /query with the token."""
        if self._influxql is not None:
            return self._influxql
        with self._lock:
            if self._query_sink is None:
                self._query_sink = InfluxQLClient(
                    self.url, timeout=self.timeout, token=self._token, sleep=self._sleep
                )
            return self._query_sink

    # --- writing and errors ------------------------------------------------------------------

    def _write_batch(self, bucket: str, batch: list[str], precision: Precision = "s") -> int:
        """POST one batch; returns the points InfluxDB dropped as beyond retention."""
        try:
            self._write_api.write(bucket, self.org, batch, WRITE_PRECISION[precision])
        except InfluxDBError as exc:
            if _status(exc) not in (400, 422):
                raise
            dropped = classify_bad_request(_partial_write(_message(exc)), f'"{bucket}"')
            if dropped:
                log.info(
                    'InfluxDB dropped %d of %d points older than the retention of "%s" '
                    "(the others were written)",
                    dropped,
                    len(batch),
                    bucket,
                )
            return dropped
        return 0

    def _with_retries(self, action: Callable[[], T], what: str) -> tuple[T, int]:
        """`action()` under the retry policy; returns its result and the attempts it took."""
        return self._retry.call(
            lambda: self._classified(action, what), what=f"InfluxDB {what} at {self.display_url}"
        )

    def _classified(self, action: Callable[[], T], what: str) -> T:
        """`action()` with influxdb-client's and urllib3's errors turned into the archiver's."""
        try:
            return action()
        except urllib3.exceptions.HTTPError as exc:
            raise self._transport_error(exc) from None
        except InfluxDBError as exc:
            raise self._api_error(exc, what) from None

    def _transport_error(self, exc: urllib3.exceptions.HTTPError) -> Exception:
        if isinstance(exc, urllib3.exceptions.MaxRetryError) and exc.reason is not None:
            exc = exc.reason
        if isinstance(exc, urllib3.exceptions.TimeoutError) and not isinstance(
            exc, urllib3.exceptions.NewConnectionError
        ):
            return TransientError(
                f"InfluxDB at {self.display_url} did not answer within {self.timeout:g} s"
            )
        if isinstance(exc, urllib3.exceptions.SSLError | urllib3.exceptions.LocationValueError):
            return InfluxError(f"INFLUX_URL {self.display_url} is unusable: {exc}")
        return TransientError(
            f"cannot reach InfluxDB at {self.display_url}: {connection_cause(exc)}"
        )

    def _api_error(self, exc: InfluxDBError, what: str) -> Exception:
        status, message = _status(exc), _message(exc)
        if status is None:
            return InfluxError(f"InfluxDB at {self.display_url}: {what}: {message}")
        if status == 401:
            return AuthError(
                f"InfluxDB rejected the credentials (HTTP 401): check {self.credentials}"
            )
        if status == 403:
            return AuthError(
                f"InfluxDB refused {what} (HTTP 403: {message}): give {self.credentials} "
                "the permissions it needs"
            )
        if (status == 429 or status >= 500) and "retention policy not found" not in message:
            return TransientError(
                f"InfluxDB at {self.display_url} answered HTTP {status} to {what}: {message}",
                retry_after=retry_after_seconds(getattr(exc, "retry_after", None)),
            )
        if status == 413:
            return InfluxError(
                f"InfluxDB refused {what} as too large (HTTP 413; batches are at most "
                f"{self.batch_size:,} lines): raise the server's request size limit"
            )
        if status == 404:
            return InfluxError(
                f"InfluxDB at {self.display_url} found nothing for {what} (HTTP 404: {message}): "
                "check the query file's database and retention_policy, and INFLUX_ORG"
            )
        return InfluxError(f"InfluxDB refused {what} (HTTP {status}): {message}")


def _require(value: str | None, variable: str, what: str, url: str) -> None:
    if not value:
        raise ConfigError(f"{variable} is not set: InfluxDB 2.x at {url} needs {what}")


def _status(exc: InfluxDBError) -> int | None:
    if isinstance(exc, ApiException) and exc.status:
        return exc.status
    response = getattr(exc, "response", None)
    return getattr(response, "status", None)


def _message(exc: InfluxDBError) -> str:
    """InfluxDB's `{"message": ...}` (2.x, 3.x) or `{"error": ...}` (1.8) text."""
    body = getattr(exc, "body", None) or getattr(getattr(exc, "response", None), "data", None)
    if isinstance(body, bytes):
        body = body.decode("utf-8", errors="replace")
    try:
        parsed = json.loads(body) if body else None
    except ValueError:
        parsed = None
    if isinstance(parsed, dict):
        text = parsed.get("message") or parsed.get("error")
        if isinstance(text, str):
            return text
    return str(body or getattr(exc, "reason", None) or exc.message or "no reason given")


def _partial_write(message: str) -> str:
    """2.x wraps 1.x's `partial write: ...` in `failure writing points to database: ...`."""
    start = message.find("partial write")
    return message[start:] if start > 0 else message
