"""The exceptions every step raises, classified once, next to the call that failed.

The runner only needs to know two things about a failure: may it go away if we try again
(`TransientError`), and does it concern one query or the whole run (`ConfigError`).
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """The exit codes are a contract with whoever runs the cron job (see README)."""

    OK = 0
    QUERY_FAILED = 1
    USAGE = 2
    INTERRUPTED = 130


class ArchiverError(Exception):
    """Base of every error the archiver reports as one line."""


class ConfigError(ArchiverError):
    """Bad usage, environment or configuration: nothing can run (exit code 2)."""


class TransientError(ArchiverError):
    """A failure that may go away on its own: retried with backoff, then fails the query."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class PermanentError(ArchiverError):
    """A failure that retrying cannot fix: the query fails at once with this message."""


class NewRelicError(PermanentError):
    """New Relic refused the query (NRQL error, forbidden account, bad answer)."""


class QueryTooBig(NewRelicError):
    """New Relic gave up on the window's size: a query TIMEOUT, "that query is a little too
    big… try fewer buckets", or the Insights API's HTTP 503 for the inspected-data limit.

    Never retried as it is: the runner asks again with half the buckets. Where nothing handles
    it (a window of one bucket), it fails the query with New Relic's message like any
    NewRelicError. `requests` is the HTTP requests it took (transient retries included).
    """

    def __init__(self, message: str, requests: int = 1, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.requests = requests
        self.retry_after = retry_after  # honoured when it is retried (a window of one bucket)


class AuthError(PermanentError):
    """A credential was refused; the message says which variable to check."""


class InfluxError(PermanentError):
    """InfluxDB refused the write or the schema change."""


class StateError(ArchiverError):
    """The state database cannot be read or written (locked, read-only, wrong schema)."""


def exit_code_of(exc: ArchiverError) -> ExitCode:
    """The exit code a command ends with when `exc` ends it (see `cli.main`)."""
    if isinstance(exc, ConfigError | StateError | AuthError):
        return ExitCode.USAGE
    return ExitCode.QUERY_FAILED
