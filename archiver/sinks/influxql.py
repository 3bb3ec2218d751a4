"""InfluxQL on InfluxDB's 1.x HTTP API (`/ping`, `/query`): databases, retention policies, rows.

Both InfluxDB sinks use it: `InfluxV1Sink` is this client plus `/write`; influxdb-client's sink
makes databases and retention policies with it in 1.8 mode, and reads back through it for
`verify` on every flavour (`readback`). Every HTTP answer is classified next to the call
(`_raise_for_transport`): connection errors, timeouts, 429 and 5xx are `TransientError` and
retried with exponential backoff and jitter; everything else is permanent and carries
InfluxDB's own message.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Self, TypeVar
from urllib.parse import urlsplit

import requests

from archiver import logs
from archiver.errors import AuthError, InfluxError, TransientError
from archiver.retry import RetryPolicy, connection_cause, retry_after_seconds
from archiver.sessions import session_for
from archiver.sinks.base import (
    RetentionPolicy,
    check_retention_duration,
    without_userinfo,
)
from archiver.timeparse import influxdb_duration_seconds

log = logging.getLogger(__name__)
T = TypeVar("T")

READ_STATEMENTS = ("SELECT", "SHOW")


def quote_identifier(name: str) -> str:
    """An InfluxQL identifier in double quotes, with `\\` and `"` escaped."""
    escaped = name.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


class InfluxQLClient:
    """InfluxQL on `/query` of an InfluxDB 1.x server (or 1.8+, 2.x, 3.x with a token)."""

    def __init__(
        self,
        url: str,
        username: str | None = None,
        password: str | None = None,
        *,
        timeout: float = 30.0,
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
        self._session = requests.Session()
        if username is not None:
            self._session.auth = (username, password or "")
        if token:  # InfluxDB 2.x and 3.x answer InfluxQL on /query for a token
            logs.register_secret(token)
            self._session.headers["Authorization"] = f"Token {token}"
        session_for(self.url, self._session)
        self._retry = RetryPolicy(
            max_attempts=max_attempts, max_total_seconds=max_total_seconds, sleep=sleep
        )

    def close(self) -> None:
        self._session.close()

    def __enter__(self) -> Self:
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

    def query(self, influxql: str, database: str | None = None, epoch: str = "s") -> list[dict]:
        """Rows of every series as dicts (series tags merged in), times in epoch `epoch`."""
        rows, _ = self._with_retries(lambda: self._query_once(influxql, database, epoch))
        return rows

    def series_rows(self, influxql: str, database: str) -> list[dict]:
        """The series of a `GROUP BY *` SELECT as InfluxDB answers them, times in epoch ns."""
        rows, _ = self._with_retries(lambda: self._query_once(influxql, database, "ns", raw=True))
        return rows

    def existing_policy(self, database: str, name: str | None) -> RetentionPolicy | None:
        """The retention policy if it exists (None also when the database does not)."""
        if not any(row["name"] == database for row in self.query("SHOW DATABASES")):
            return None
        return self._find_policy(database, name)

    def retention_policies(self, database: str) -> list[RetentionPolicy]:
        rows = self.query(f"SHOW RETENTION POLICIES ON {quote_identifier(database)}")
        return [
            RetentionPolicy(
                row["name"], influxdb_duration_seconds(row["duration"]), bool(row["default"])
            )
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
        return self._retry.call(action, what=f"InfluxDB request to {self.display_url}")

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
                f"cannot reach InfluxDB at {self.display_url}: {connection_cause(exc)}"
            ) from None
        except requests.RequestException as exc:
            raise InfluxError(f"INFLUX_URL {self.display_url} is unusable: {exc}") from None
        _raise_for_transport(response, self.display_url)
        return response

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
    if influxdb_duration_seconds(retention_duration) != policy.duration_seconds:
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
