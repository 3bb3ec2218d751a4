"""How an exception ends one (query, target) job, the same in `run` and `verify`.

A job's failure fails that job only: its status becomes "failed" with a one-line, redacted
error. A refused key (`AuthError`) is handed to `on_refused` too (it refuses every job alike, so
the caller stops the others); an unexpected exception (a bug) keeps its type in the message and
its traceback at debug level.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, Protocol

from archiver.errors import ArchiverError, AuthError
from archiver.logs import redact


class Outcome(Protocol):
    status: str
    error: str | None


@contextmanager
def job_failures(
    outcome: Outcome,
    *,
    on_refused: Callable[[AuthError], None],
    log: logging.Logger,
    unexpected: str,
    name: str,
    target: str,
    extra: Mapping[str, Any] | None = None,
) -> Iterator[None]:
    """Turn what the body raises into `outcome`; `unexpected` is the debug message (%s → %s)."""
    try:
        yield
    except AuthError as exc:
        outcome.status, outcome.error = "failed", redact(str(exc))
        on_refused(exc)
    except ArchiverError as exc:
        outcome.status, outcome.error = "failed", redact(str(exc))
    except Exception as exc:  # a bug must fail this job only, with its type in the message
        log.debug(unexpected, name, target, exc_info=True, extra=extra)
        outcome.status, outcome.error = "failed", redact(f"{type(exc).__name__}: {exc}")
