"""The only module that knows the order: plan → fetch → transform → write → advance.

One job is one (query, target) pair. Jobs run in parallel threads; New Relic requests share
one limiter. A job's failure is recorded and reported, never raised past `run()`: one broken
query must not stop the others. The checkpoint (or backfill progress) moves in its own
transaction after InfluxDB acknowledged every line of the window, never before.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from archiver import events, metrics, transform, windows
from archiver.cardinality import SeriesGuard
from archiver.errors import ArchiverError, AuthError, ConfigError, ExitCode
from archiver.influx import Precision, RetentionPolicy
from archiver.logs import redact
from archiver.newrelic import NerdGraphClient
from archiver.progress import Progress
from archiver.queries import QueryDef, QueryFileProblem, Target
from archiver.readahead import read_ahead
from archiver.sinks import Sink
from archiver.state import State
from archiver.windows import Range, Window, iso

log = logging.getLogger(__name__)

READ_AHEAD_WINDOWS = 1  # windows fetched ahead of the one being written
LEASE_TTL = timedelta(minutes=10)


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Backfill:
    since: datetime
    until: datetime | None = None


@dataclass
class JobResult:
    query: str
    target: str
    status: str = "ok"  # ok | failed | busy (another process holds it) | interrupted
    windows: int = 0
    points: int = 0
    nr_requests: int = 0
    retries: int = 0
    seconds: float = 0.0
    exported_until: datetime | None = None  # the incremental checkpoint after the job
    error: str | None = None
    window: Window | None = None  # the window being exported when it failed
    backfilled: list[tuple[datetime, datetime]] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        return self.status == "failed"


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


@dataclass
class WindowSizer:
    """Learns rows per bucket from each answer, so the next request stays small."""

    interval: timedelta
    rows_per_bucket: float | None = None

    def buckets(self, has_facets: bool) -> int:
        return windows.buckets_per_request(
            has_facets=has_facets, rows_per_bucket=self.rows_per_bucket
        )

    def learn(self, window: Window, rows: int) -> None:
        self.rows_per_bucket = rows / max(1, window.buckets(self.interval))


@dataclass(frozen=True)
class PlannedJob:
    query: QueryDef
    target: Target
    account_id: int
    segments: list[tuple[datetime, datetime]]
    skipped: list[str]


def holder_is_dead(holder: str) -> bool:
    """A lease holder `host:pid:nonce` on this host whose process is gone.

    Our own pid under another nonce is an earlier incarnation (a container restarted as
    PID 1 again); a holder on another host is only freed by its lease's expiry.
    """
    host, _, rest = holder.partition(":")
    pid_text, _, _nonce = rest.partition(":")
    if host != socket.gethostname() or not pid_text.isdigit():
        return False
    pid = int(pid_text)
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def account_for(query: QueryDef, default: int | None) -> int:
    account = query.account_id or default
    if account is None:
        raise ConfigError(
            f"{query.path}: query {query.name!r} has no account_id and NEW_RELIC_ACCOUNT_ID "
            "is not set"
        )
    return account


def _head(result: JobResult) -> tuple[str, str]:
    return result.query, result.target


class Runner:
    """Runs one pass (incremental or backfill) over a list of queries."""

    def __init__(
        self,
        *,
        state: State,
        sink: Sink | None,
        client_factory: Callable[[], NerdGraphClient] | None,
        default_account: int | None,
        workers: int = 4,
        now: Callable[[], datetime] = utcnow,
        stop: threading.Event | None = None,
        progress: Progress | None = None,
        self_metrics: bool = True,
        lease_ttl: timedelta = LEASE_TTL,
    ) -> None:
        self.state = state
        self.sink = sink
        self.client_factory = client_factory
        self.default_account = default_account
        self.workers = max(1, workers)
        self.now = now
        self.stop = stop or threading.Event()
        # Set by a refused credential: ends this run only. `stop` belongs to the caller (the
        # scheduler's loop uses it too), and a rotated key may work at the next pass.
        self._abort = threading.Event()
        self.progress = progress
        self.self_metrics = self_metrics
        self.lease_ttl = lease_ttl
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._policies: dict[tuple[str, str | None], RetentionPolicy] = {}
        self._policies_lock = threading.Lock()
        self._local = threading.local()
        self._auth_failure: AuthError | None = None
        self._metric_lines: dict[str, list[str]] = {}

    # -- planning -------------------------------------------------------------------------

    def plan(
        self, query: QueryDef, target: Target, backfill: Backfill | None, rp: RetentionPolicy | None
    ) -> PlannedJob:
        now = self.now()
        rp_duration = timedelta(seconds=rp.duration_seconds) if rp and rp.duration_seconds else None
        rng = self._range(query, target, backfill, now, rp_duration)
        segments = [] if rng.empty else [(rng.since, rng.until)]
        if backfill is not None and segments:
            segments = windows.subtract(
                segments[0], self.state.backfill_done(query.name, target.key)
            )
        return PlannedJob(
            query, target, account_for(query, self.default_account), segments, rng.skipped
        )

    def _range(
        self,
        query: QueryDef,
        target: Target,
        backfill: Backfill | None,
        now: datetime,
        rp_duration: timedelta | None,
    ) -> Range:
        common = {
            "now": now,
            # events have no buckets: their ranges are aligned to the second only
            "interval": timedelta(seconds=1) if query.mode == "events" else target.interval,
            "lag": query.lag,
            "nr_retention": query.nr_retention,
            "rp_duration": rp_duration,
        }
        if backfill is not None:
            return windows.backfill_range(since=backfill.since, until=backfill.until, **common)
        return windows.incremental_range(
            checkpoint=self.state.checkpoint(query.name, target.key),
            start=query.start,
            lookback=query.lookback,
            **common,
        )

    def windows_of(self, job: PlannedJob, sizer: WindowSizer) -> Iterator[Window]:
        """The job's windows; each one's size follows the rows per bucket seen so far.

        An events query has no buckets: its windows are one `interval` long.
        """
        events_mode = job.query.mode == "events"
        for since, until in job.segments:
            while since < until:
                buckets = 1 if events_mode else sizer.buckets(bool(job.query.facets))
                window = windows.next_window(since, until, job.target.interval, buckets)
                yield window
                since = window.until

    # -- running ---------------------------------------------------------------------------

    def run(
        self,
        queries: list[QueryDef],
        backfill: Backfill | None = None,
        problems: list[QueryFileProblem] | None = None,
    ) -> RunReport:
        report = RunReport(problems=list(problems or []))
        for query in queries:
            account_for(query, self.default_account)  # every config error before any work
        kind = "backfill" if backfill else "incremental"
        pairs = [(query, target) for query in queries for target in query.targets]
        run_id = self.state.start_run(kind, self.now())
        try:
            with ThreadPoolExecutor(self.workers, thread_name_prefix="job") as pool:
                report.jobs = list(pool.map(lambda p: self._job(run_id, *p, backfill), pairs))
        finally:
            self.state.finish_run(run_id, int(report.exit_code), self.now())
            if self.progress is not None:
                self.progress.close()
        self._write_metrics()  # a refused key too: `failed` in the self-metrics is an alert
        if self._auth_failure is not None:
            raise self._auth_failure
        return report

    def dry_run(
        self, queries: list[QueryDef], backfill: Backfill | None = None
    ) -> Iterator[tuple[PlannedJob, list[Window]]]:
        """The plan without touching New Relic or InfluxDB (retention policies are not read)."""
        for query in queries:
            for target in query.targets:
                job = self.plan(query, target, backfill, rp=None)
                yield job, list(self.windows_of(job, self.sizer(job)))

    def _job(
        self, run_id: int, query: QueryDef, target: Target, backfill: Backfill | None
    ) -> JobResult:
        result = JobResult(query.name, target.key)
        if self._stopping():  # stopping: leave the jobs not yet begun to the next run
            result.status = "interrupted"
            return result
        started = time.monotonic()
        export_id = self.state.start_export(run_id, query.name, target.key, self.now())
        job: PlannedJob | None = None
        try:
            if not self._lease(query.name, target.key):
                return self._busy(result, backfill is not None)
            try:
                job = self.plan(query, target, backfill, self._retention_policy(target))
                self._export(job, export_id, result, backfill is not None)
            finally:
                self.state.release_lease(query.name, target.key, self.holder)
        except AuthError as exc:
            # A refused credential fails every query alike: stop the run, say it once.
            result.status, result.error = "failed", redact(str(exc))
            self._auth_failure = self._auth_failure or exc
            self._abort.set()
        except ArchiverError as exc:
            result.status, result.error = "failed", redact(str(exc))
        except Exception as exc:  # a bug must fail this job only, with its type in the message
            log.debug("unexpected error in %s → %s", query.name, target.key, exc_info=True)
            result.status, result.error = "failed", redact(f"{type(exc).__name__}: {exc}")
        finally:
            result.seconds = time.monotonic() - started
            result.exported_until = self.state.checkpoint(query.name, target.key)
            self.state.finish_export(
                export_id,
                status=result.status,
                now=self.now(),
                since=job.segments[0][0] if job and job.segments else None,
                nr_requests=result.nr_requests,
                retries=result.retries,
                error=result.error,
            )
            self._report(result)
            self._collect_metrics(result, target, "backfill" if backfill else "incremental")
        return result

    def _export(self, job: PlannedJob, export_id: int, result: JobResult, backfill: bool) -> None:
        name, key = job.query.name, job.target.key
        for note in job.skipped:
            log.warning("%s → %s: %s", name, key, note)
        if self.progress is not None:
            self.progress.plan(sum((u - s).total_seconds() for s, u in job.segments))
        client = self._client()  # here: the batches are produced on the read-ahead thread
        if job.query.mode == "events":
            batches = self._event_batches(job, result, client)
        else:
            batches = self._aggregate_batches(job, result, client)
        # New Relic answers the next window (and it is transformed) while InfluxDB writes this
        # one; at most READ_AHEAD_WINDOWS wait in between, so memory stays a few windows.
        thread = threading.current_thread().name
        ahead = read_ahead(batches, depth=READ_AHEAD_WINDOWS, name=f"{thread}-fetch")
        with closing(ahead):
            for window, lines, precision in ahead:
                try:
                    written = self.sink.write(
                        job.target.database, job.target.retention_policy, lines, precision
                    )
                    self.state.record_window(
                        export_id, name, key, window.since, window.until, len(lines),
                        self.now(), backfill=backfill,
                    )  # fmt: skip
                except BaseException:
                    result.window = window  # the read-ahead thread may be on the next one
                    raise
                result.windows += 1
                result.points += written.lines - written.dropped_beyond_retention
                if self.progress is not None:
                    seconds = (window.until - window.since).total_seconds()
                    self.progress.advance(seconds, len(lines))
                log.debug("%s → %s: %s: %d points", name, key, window, len(lines))
                if not self._lease(name, key):
                    log.warning(
                        "%s → %s: lost the lease after %s (a window took longer than "
                        "ARCHIVER_LEASE_SECONDS?); the run that took it goes on from there",
                        name,
                        key,
                        window,
                    )
                    result.status = "busy"
                    return
        if result.status == "interrupted":
            return
        result.window = None
        if backfill:
            for since, until in job.segments:
                self.state.finish_backfill(name, key, since, until)
            result.backfilled = job.segments

    def _aggregate_batches(
        self, job: PlannedJob, result: JobResult, client: NerdGraphClient
    ) -> Iterator[tuple[Window, list[str], Precision]]:
        """TIMESERIES windows: one request each, sized by the rows the last answers had."""
        guard = SeriesGuard(job.query.facets, job.query.max_series)
        sizer = self.sizer(job)
        for window in self.windows_of(job, sizer):
            if self._interrupted(result):
                return
            result.window = window
            nrql = job.query.nrql_for(window.since, window.until, job.target.interval)
            answer = client.query(job.account_id, nrql)
            result.nr_requests += answer.requests
            result.retries += answer.retries
            guard.check(answer.results, answer.facets)
            sizer.learn(window, len(answer.results))
            query = job.query
            yield (
                window,
                transform.to_lines(answer.results, answer.facets, query.measurement, query.tags),
                "s",
            )

    def _event_batches(
        self, job: PlannedJob, result: JobResult, client: NerdGraphClient
    ) -> Iterator[tuple[Window, list[str], Precision]]:
        """Raw events: windows of `interval`, halved while New Relic caps the answer."""
        query, target = job.query, job.target
        guard = SeriesGuard(query.tag_attributes, query.max_series)

        def fetch(since: datetime, until: datetime) -> list[dict]:
            result.window = Window(since, until)
            answer = client.query(job.account_id, query.nrql_for(since, until, target.interval))
            result.nr_requests += answer.requests
            result.retries += answer.retries
            return answer.results

        for window in self.windows_of(job, WindowSizer(target.interval)):
            if self._interrupted(result):
                return
            label = f"{query.name} → {target.key}"
            for since, until, rows in events.plan_events(
                fetch, window.since, window.until, label=label
            ):
                guard.check_events(rows)
                lines = events.to_lines(rows, query.measurement, query.tag_attributes, query.tags)
                yield Window(since, until), lines, "ns"

    def _interrupted(self, result: JobResult) -> bool:
        if stopping := self._stopping():
            result.status = "interrupted"
        return stopping

    def _stopping(self) -> bool:
        return self.stop.is_set() or self._abort.is_set()

    # -- helpers ---------------------------------------------------------------------------

    def _lease(self, query: str, target: str) -> bool:
        return self.state.acquire_lease(
            query, target, self.holder, self.lease_ttl, self.now(), holder_is_dead=holder_is_dead
        )

    def _busy(self, result: JobResult, backfill: bool) -> JobResult:
        """Another live run holds the lease: it does this export; a backfill must say so."""
        holder = self.state.lease_holder(result.query, result.target)
        who = f"{holder[0]} until {iso(holder[1])}" if holder else "another run"
        if backfill:
            result.status = "failed"
            result.error = f"another run is exporting it (lease held by {who}); try again later"
        else:
            result.status = "busy"
            log.info("%s → %s: skipped, another run is exporting it (%s)", *_head(result), who)
        return result

    def sizer(self, job: PlannedJob) -> WindowSizer:
        """Start from the last window this (query, target) wrote, if any."""
        sizer = WindowSizer(job.target.interval)
        if last := self.state.last_window(job.query.name, job.target.key):
            sizer.learn(Window(last[0], last[1]), last[2])
        return sizer

    def _client(self) -> NerdGraphClient:
        client = getattr(self._local, "client", None)
        if client is None:
            client = self._local.client = self.client_factory()
        return client

    def _retention_policy(self, target: Target) -> RetentionPolicy:
        key = (target.database, target.retention_policy)
        with self._policies_lock:
            if key not in self._policies:
                self._policies[key] = self.sink.ensure_target(
                    target.database, target.retention_policy, target.retention_duration
                )
            return self._policies[key]

    def _collect_metrics(self, result: JobResult, target: Target, kind: str) -> None:
        if not self.self_metrics or result.status == "busy":
            return
        now = self.now()
        line = metrics.job_line(
            query=result.query,
            target=result.target,
            kind=kind,
            status=result.status,
            points=result.points,
            windows=result.windows,
            nr_requests=result.nr_requests,
            retries=result.retries,
            seconds=result.seconds,
            exported_until=result.exported_until,
            now=now,
        )
        self._metric_lines.setdefault(target.database, []).append(line)

    def _write_metrics(self) -> None:
        """The run's own `nr_archiver` points, one write per database; never fails the run."""
        for database, lines in self._metric_lines.items():
            try:
                self.sink.write(database, None, lines)
            except ArchiverError as exc:
                log.warning("self-metrics not written to %s: %s", database, exc)
        self._metric_lines.clear()

    def _report(self, result: JobResult) -> None:
        head = f"{result.query} → {result.target}"
        if self._auth_failure is not None:
            return  # said once, by the CLI
        if result.failed:
            where = f" (window {result.window})" if result.window else ""
            log.error("%s: FAILED%s: %s", head, where, result.error)
            return
        if result.status != "ok":
            return
        if result.backfilled:
            position = "backfilled " + ", ".join(str(Window(*s)) for s in result.backfilled)
        else:
            until = iso(result.exported_until) if result.exported_until else "-"
            position = f"exported until {until}"
        if not result.windows:
            log.info("%s: up to date (%s)", head, position)
            return
        log.info(
            "%s: %d windows, %d points, %d New Relic requests (%d retries), %s, %.1fs",
            head,
            result.windows,
            result.points,
            result.nr_requests,
            result.retries,
            position,
            result.seconds,
        )
