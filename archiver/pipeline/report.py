"""What a pass tells: its report (exit code), one log line per job, its own `nr_archiver` points."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from archiver.errors import ArchiverError, ExitCode
from archiver.logs import redact
from archiver.pipeline import metrics
from archiver.pipeline.job import JobResult, log_fields
from archiver.queries import QueryFileProblem
from archiver.sinks.base import Sink
from archiver.windows import Window, iso
from archiver.wording import plural

log = logging.getLogger(__name__)


@dataclass
class RunReport:
    jobs: list[JobResult] = field(default_factory=list)
    problems: list[QueryFileProblem] = field(default_factory=list)

    @property
    def exit_code(self) -> ExitCode:
        if self.problems or any(job.failed for job in self.jobs):
            return ExitCode.QUERY_FAILED
        if any(job.status == "interrupted" for job in self.jobs):
            return ExitCode.INTERRUPTED
        return ExitCode.OK


def problems_summary(problems: list[QueryFileProblem]) -> str | None:
    """The run log's one line about broken query files, if any."""
    if not problems:
        return None
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    return redact(f"query file problem: {problems[0]}{more}")


def _head(result: JobResult) -> tuple[str, str]:
    return result.query, result.target


def log_busy(result: JobResult, who: str) -> None:
    log.info(
        "%s → %s: skipped, another run is exporting it (%s)",
        *_head(result),
        who,
        extra=log_fields(*_head(result)),
    )


def log_result(result: JobResult) -> None:
    """One line per job: how it failed, or what it exported and up to where."""
    head = f"{result.query} → {result.target}"
    fields = log_fields(
        *_head(result),
        result.window if result.failed else None,
        points=result.points,
        nr_requests=result.nr_requests,
        seconds=round(result.seconds, 3),
    )
    if result.failed:
        where = f" (window {result.window})" if result.window else ""
        log.error(
            "%s: FAILED%s: %s",
            head,
            where,
            result.error,
            extra=fields | {"error": result.error},
        )
        return
    if result.status != "ok":
        return
    if result.backfilled:
        position = "backfilled " + ", ".join(str(Window(*s)) for s in result.backfilled)
    else:
        until = iso(result.exported_until) if result.exported_until else "-"
        position = f"exported until {until}"
    if not result.windows:
        log.info("%s: up to date (%s)", head, position, extra=fields)
        return
    log.info(
        "%s: %s, %s, %s (%s), %s, %.1fs",
        head,
        plural(result.windows, "window"),
        plural(result.points, "point"),
        plural(result.nr_requests, "New Relic request"),
        plural(result.retries, "retry", "retries"),
        position,
        result.seconds,
        extra=fields | {"windows": result.windows, "retries": result.retries},
    )


class SelfMetrics:
    """The pass's own `nr_archiver` points, collected per job (from the jobs' threads), written
    at the end of the pass (`run` and `verify`)."""

    def __init__(self, now: Callable[[], datetime]) -> None:
        self.now = now
        self._lines: dict[str, list[str]] = {}
        self._lock = threading.Lock()

    def add(self, database: str, line: str) -> None:
        with self._lock:
            self._lines.setdefault(database, []).append(line)

    def collect(self, result: JobResult, database: str, kind: str) -> None:
        if result.status == "busy":
            return
        line = metrics.job_line(
            query=result.query,
            target=result.target,
            kind=kind,
            status=result.status,
            points=result.points,
            windows=result.windows,
            nr_requests=result.nr_requests,
            retries=result.retries,
            inspected=result.inspected,
            seconds=result.seconds,
            exported_until=result.exported_until,
            now=self.now(),
            dropped_keys=len(result.dropped_keys),
            nr_messages=len(result.messages),
            facet_limit_hit=result.facet_limit_hit,
        )
        self.add(database, line)

    def write(self, sink: Sink) -> None:
        """One write per database; never fails the pass."""
        for database, lines in self._lines.items():
            try:
                sink.write(database, None, lines)
            except ArchiverError as exc:
                log.warning(
                    "self-metrics not written to %s: %s", database, exc, extra={"error": str(exc)}
                )
        self._lines.clear()
