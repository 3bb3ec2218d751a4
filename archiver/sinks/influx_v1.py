r"""The InfluxDB 1.x sink: `/write` for points, InfluxQL on `/query` for databases and RPs.

Every HTTP answer is classified here, next to the call (see `_raise_for_transport`,
`_write_outcome`): connection errors, timeouts, 429 and 5xx are `TransientError` and retried
with exponential backoff and jitter; everything else is permanent and carries InfluxDB's own
message. A batch counts as written only when InfluxDB acknowledged it, so `write()` returning
means every line landed (except points older than the RP's duration, which InfluxDB drops by
design and we count in `WriteResult.dropped_beyond_retention`).

Lines come escaped from `archiver.lineprotocol`, which documents how InfluxDB 1.x parses them.
"""

from __future__ import annotations

import concurrent.futures
import gzip as gzip_module
import logging
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, TypeVar
from urllib.parse import urlsplit, urlunsplit

import requests

from archiver import logs
from archiver.errors import AuthError, InfluxError, TransientError
from archiver.retry import RetryPolicy, retry_after_seconds

if TYPE_CHECKING:
    from archiver.sinks.readback import Deleted, Series
    from archiver.verify.compare import Point

log = logging.getLogger(__name__)
T = TypeVar("T")

DEFAULT_RP = "autogen"
READ_STATEMENTS = ("SELECT", "SHOW")
# Level 1 compresses line protocol to ~17% (level 6: ~14%) at a third of the CPU: a backfill
# spends its CPU here, not on the network.
GZIP_LEVEL = 1
DROPPED = re.compile(r"dropped=(\d+)")
FIELD_TYPE_CONFLICT = re.compile(
    r'input field "(?P<field>.*?)" on measurement "(?P<measurement>.*?)" '
    r"is type (?P<new>\w+), already exists as type (?P<old>\w+)"
)
INFLUXQL_DURATION = re.compile(r"(?:\d+(?:ns|u|µ|ms|s|m|h|d|w))+|INF", re.IGNORECASE)
DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|u|µ|ms|s|m|h|d|w)")
UNIT_SECONDS = {
    "ns": 1e-9, "u": 1e-6, "µ": 1e-6, "us": 1e-6, "µs": 1e-6, "ms": 1e-3,
    "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800,
}  # fmt: skip


Precision = Literal["s", "ms", "us", "ns"]  # of the timestamps in the lines


@dataclass(frozen=True)
class RetentionPolicy:
    name: str
    duration_seconds: int | None  # None = INF
    is_default: bool


@dataclass(frozen=True)
class WriteResult:
    lines: int
    dropped_beyond_retention: int
    requests: int
    retries: int


def quote_identifier(name: str) -> str:
    """An InfluxQL identifier in double quotes, with `\\` and `"` escaped."""
    escaped = name.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def duration_seconds(text: str) -> int | None:
    """Seconds in an InfluxQL (`104w`, `1h30m`) or Go (`720h0m0s`) duration; None for INF/0s."""
    if text.upper() == "INF":
        return None
    seconds = sum(float(n) * UNIT_SECONDS[unit] for n, unit in DURATION_PART.findall(text))
    return round(seconds) or None


class InfluxV1Sink:
    """Writes line protocol to an InfluxDB 1.x server (or anything speaking its `/write`)."""

    def __init__(
        self,
        url: str,
        username: str | None = None,
        password: str | None = None,
        *,
        timeout: float = 30.0,
        batch_size: int = 5000,
        in_flight: int = 3,
        gzip: bool = True,
        max_attempts: int = 6,
        max_total_seconds: float = 120.0,
        sleep: Callable[[float], None] = time.sleep,
        token: str | None = None,
    ) -> None:
        if password:
            logs.register_secret(password)
        self.url = url.rstrip("/")
        self.display_url = without_userinfo(self.url)
        self.timeout = timeout
        self.batch_size = batch_size
        self.gzip = gzip
        self._session = requests.Session()
        self._senders = concurrent.futures.ThreadPoolExecutor(in_flight, "influx-write")
        if username is not None:
            self._session.auth = (username, password or "")
        if token:  # InfluxDB 2.x and 3.x answer InfluxQL on /query for a token
            logs.register_secret(token)
            self._session.headers["Authorization"] = f"Token {token}"
        self._retry = RetryPolicy(
            max_attempts=max_attempts, max_total_seconds=max_total_seconds, sleep=sleep
        )

    def close(self) -> None:
        self._senders.shutdown()
        self._session.close()

    def __enter__(self) -> InfluxV1Sink:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # --- public operations -------------------------------------------------------------------

    def ping(self) -> str:
        """InfluxDB's version, from the `X-Influxdb-Version` header of `GET /ping`."""
        response, _ = self._with_retries(lambda: self._send("GET", "/ping"))
        version = response.headers.get("X-Influxdb-Version")
        if not version:
            raise InfluxError(
                f"INFLUX_URL {self.display_url} answered but is not InfluxDB "
                "(no X-Influxdb-Version header on /ping)"
            )
        return version

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

        batches = [lines[i : i + self.batch_size] for i in range(0, len(lines), self.batch_size)]
        if len(batches) <= 1:
            outcomes = [send(batch) for batch in batches]
        else:
            futures = [self._senders.submit(send, batch) for batch in batches]
            concurrent.futures.wait(futures)
            outcomes = [future.result() for future in futures]  # raises the first failure
        dropped = sum(batch_dropped for batch_dropped, _ in outcomes)
        requests_sent = sum(attempts for _, attempts in outcomes)
        return WriteResult(len(lines), dropped, requests_sent, requests_sent - len(outcomes))

    def query(self, influxql: str, database: str | None = None, epoch: str = "s") -> list[dict]:
        """Rows of every series as dicts (series tags merged in), times in epoch `epoch`."""
        rows, _ = self._with_retries(lambda: self._query_once(influxql, database, epoch))
        return rows

    def series_rows(self, influxql: str, database: str) -> list[dict]:
        """The series of a `GROUP BY *` SELECT as InfluxDB answers them, times in epoch ns."""
        rows, _ = self._with_retries(lambda: self._query_once(influxql, database, "ns", raw=True))
        return rows

    def read_points(
        self,
        database: str,
        retention_policy: str | None,
        series: Series,
        since_ns: int,
        until_ns: int,
    ) -> list[Point]:
        """The points of one query's series in [since_ns, until_ns) (`archiver.sinks.readback`)."""
        from archiver.sinks import readback

        return readback.read_points(self, database, retention_policy, series, since_ns, until_ns)

    def delete_points(
        self, database: str, retention_policy: str | None, series: Series, points: list[Point]
    ) -> Deleted:
        """Delete exactly these points, never another policy's (`archiver.sinks.readback`)."""
        from archiver.sinks import readback

        return readback.delete_points(self, database, retention_policy, series, points)

    def existing_policy(self, database: str, name: str | None) -> RetentionPolicy | None:
        """The retention policy if it exists (None also when the database does not)."""
        if not any(row["name"] == database for row in self.query("SHOW DATABASES")):
            return None
        return self._find_policy(database, name)

    def retention_policies(self, database: str) -> list[RetentionPolicy]:
        rows = self.query(f"SHOW RETENTION POLICIES ON {quote_identifier(database)}")
        return [
            RetentionPolicy(row["name"], duration_seconds(row["duration"]), bool(row["default"]))
            for row in rows
        ]

    def ensure_target(
        self, database: str, retention_policy: str | None, retention_duration: str | None
    ) -> RetentionPolicy:
        """Create the database if missing, and the RP if missing and a duration is given."""
        check_retention_duration(retention_duration)
        self._ensure_database(database)
        existing = self._find_policy(database, retention_policy)
        if existing is not None:
            _warn_if_duration_differs(database, existing, retention_duration)
            return existing
        if retention_policy is None:
            raise InfluxError(f'database "{database}" has no default retention policy')
        if retention_duration is None:
            raise InfluxError(
                f'retention policy "{retention_policy}" does not exist on database '
                f'"{database}": create it, or give retention_duration in the query file'
            )
        self.query(
            f"CREATE RETENTION POLICY {quote_identifier(retention_policy)} ON "
            f"{quote_identifier(database)} DURATION {retention_duration} REPLICATION 1"
        )
        log.info(
            'created retention policy "%s" on "%s" (duration %s)',
            retention_policy,
            database,
            retention_duration,
        )
        created = self._find_policy(database, retention_policy)
        if created is None:
            raise InfluxError(f'retention policy "{retention_policy}" vanished after creation')
        return created

    # --- helpers -----------------------------------------------------------------------------

    def _ensure_database(self, database: str) -> None:
        if any(row["name"] == database for row in self.query("SHOW DATABASES")):
            return
        self.query(f"CREATE DATABASE {quote_identifier(database)}")
        log.info('created database "%s" on %s', database, self.display_url)

    def _find_policy(self, database: str, name: str | None) -> RetentionPolicy | None:
        for policy in self.retention_policies(database):
            if policy.name == name or (name is None and policy.is_default):
                return policy
        return None

    def _with_retries(self, action: Callable[[], T]) -> tuple[T, int]:
        """`action()` under the retry policy; returns its result and the attempts it took."""
        return self._retry.call(action)

    def _send(self, method: str, path: str, **kwargs: object) -> requests.Response:
        """One HTTP request; transport failures, 429 and 5xx raise TransientError."""
        try:
            response = self._session.request(
                method, f"{self.url}{path}", timeout=self.timeout, **kwargs
            )
        except requests.Timeout:
            raise TransientError(
                f"InfluxDB at {self.display_url} did not answer within {self.timeout:g} s"
            ) from None
        except requests.ConnectionError as exc:
            raise TransientError(
                f"cannot reach InfluxDB at {self.display_url}: {connection_reason(exc)}"
            ) from None
        except requests.RequestException as exc:
            raise InfluxError(f"INFLUX_URL {self.display_url} is unusable: {exc}") from None
        _raise_for_transport(response, self.display_url)
        return response

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
            body = gzip_module.compress(body, compresslevel=GZIP_LEVEL, mtime=0)
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
                "(HTTP 413): lower the batch size or raise [http] max-body-size"
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

    def _query_once(
        self, influxql: str, database: str | None, epoch: str = "s", *, raw: bool = False
    ) -> list[dict]:
        params = {"epoch": epoch}
        if database is not None:
            params["db"] = database
        if influxql.lstrip().upper().startswith(READ_STATEMENTS):
            response = self._send("GET", "/query", params={**params, "q": influxql})
        else:
            response = self._send("POST", "/query", params=params, data={"q": influxql})
        if not response.ok:
            raise InfluxError(
                f"InfluxDB rejected {influxql!r} (HTTP {response.status_code}): "
                f"{self._error_message(response)}"
            )
        results = self._json(response).get("results")
        if not isinstance(results, list):
            raise self._not_influxdb(response)
        if raw:
            return [series for result in results for series in _result_series(influxql, result)]
        return [row for result in results for row in _result_rows(influxql, result)]

    def _json(self, response: requests.Response) -> dict:
        try:
            body = response.json()
        except ValueError:
            raise self._not_influxdb(response) from None
        if not isinstance(body, dict):
            raise self._not_influxdb(response)
        return body

    def _error_message(self, response: requests.Response) -> str:
        error = self._json(response).get("error")
        if not isinstance(error, str):
            raise self._not_influxdb(response)
        return error

    def _not_influxdb(self, response: requests.Response) -> InfluxError:
        kind = response.headers.get("Content-Type") or "no content type"
        return InfluxError(
            f"INFLUX_URL {self.display_url} answered HTTP {response.status_code} ({kind}) "
            f"to {response.request.method} {urlsplit(response.url).path}, which is not "
            "InfluxDB's JSON: is it the base URL of an InfluxDB server?"
        )


def _raise_for_transport(response: requests.Response, url: str) -> None:
    """Auth failures raise AuthError; 429 and 5xx (bar a missing RP) raise TransientError."""
    status = response.status_code
    if status == 401:
        raise AuthError(
            "InfluxDB rejected the credentials (HTTP 401): check INFLUX_USERNAME / INFLUX_PASSWORD"
        )
    if status == 403:
        raise AuthError(
            f"InfluxDB refused the request (HTTP 403: {_error_text(response)}): "
            "grant the INFLUX_USERNAME user the privileges it needs"
        )
    if status == 429 or status >= 500:
        text = _error_text(response)
        if "retention policy not found" in text:
            return  # InfluxDB 1.x answers 500 for a missing RP: permanent, not transient
        raise TransientError(
            f"InfluxDB at {url} answered HTTP {status}: {text}",
            retry_after=retry_after_seconds(response.headers.get("Retry-After")),
        )


def classify_bad_request(message: str, target: str) -> int:
    """A 400 from /write: points dropped as too old (a success), or an InfluxError."""
    dropped = DROPPED.search(message)
    if message.startswith("partial write") and "retention policy" in message and dropped:
        return int(dropped.group(1))
    conflict = FIELD_TYPE_CONFLICT.search(message)
    if conflict:
        raise InfluxError(
            f'field type conflict: field "{conflict["field"]}" on measurement '
            f'"{conflict["measurement"]}" is {conflict["new"]} here but already '
            f"{conflict['old']} in InfluxDB; a field keeps its type within a shard: write it "
            f"under another name or measurement, or drop the old series (InfluxDB: {message})"
        )
    if "unable to parse" in message:
        first, *others = message.splitlines()
        more = f" (and {len(others)} more bad lines)" if others else ""
        raise InfluxError(f"InfluxDB rejected line protocol for {target}: {first}{more}")
    raise InfluxError(f"InfluxDB refused the write to {target} (HTTP 400): {message}")


def _result_series(influxql: str, result: dict) -> list[dict]:
    if "error" in result:
        raise InfluxError(f"InfluxDB rejected {influxql!r:.300}: {result['error']}")
    return result.get("series", [])


def _result_rows(influxql: str, result: dict) -> list[dict]:
    rows = []
    for series in _result_series(influxql, result):
        for values in series.get("values", []):
            row = dict(zip(series["columns"], values, strict=True))
            rows.append({**series.get("tags", {}), **row})
    return rows


def _warn_if_duration_differs(
    database: str, policy: RetentionPolicy, retention_duration: str | None
) -> None:
    if retention_duration is None:
        return
    if duration_seconds(retention_duration) != policy.duration_seconds:
        log.warning(
            'retention policy "%s" on "%s" exists with another duration and is kept as it is '
            "(retention_duration %s only applies when creating it; use ALTER RETENTION POLICY)",
            policy.name,
            database,
            retention_duration,
        )


def _error_text(response: requests.Response) -> str:
    """InfluxDB's `{"error": ...}` text, or the HTTP reason for a body that is not one."""
    try:
        body = response.json()
    except ValueError:
        return response.reason or "no reason given"
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        return body["error"]
    return response.reason or "no reason given"


def check_retention_duration(retention_duration: str | None) -> None:
    """Only an InfluxQL duration may go into CREATE RETENTION POLICY (nothing else is injected)."""
    if retention_duration is not None and not INFLUXQL_DURATION.fullmatch(retention_duration):
        raise InfluxError(
            f"retention_duration {retention_duration!r} is not an InfluxQL duration "
            "such as 30d, 104w or INF"
        )


def connection_reason(exc: BaseException) -> str:
    """`Connection refused` rather than urllib3's whole pool message."""
    found = re.search(r"\[Errno -?\d+\] ([^'\")\]]+)", str(exc))
    return found.group(1).strip() if found else type(exc).__name__


def without_userinfo(url: str) -> str:
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))
