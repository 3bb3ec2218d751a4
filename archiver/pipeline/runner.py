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
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import NamedTuple

from archiver import windows
from archiver.errors import ArchiverError, AuthError, ConfigError, ExitCode, QueryTooBig
from archiver.logs import redact
from archiver.newrelic.client import NewRelicClient, NrqlResult
from archiver.pipeline import completeness, events, metrics, transform
from archiver.pipeline.cardinality import SeriesGuard
from archiver.pipeline.progress import Progress
from archiver.pipeline.readahead import read_ahead
from archiver.queries import QueryDef, QueryFileProblem, Target, funnels
from archiver.sinks.base import Precision, RetentionPolicy, Sink
from archiver.state.store import State, WindowCosts
from archiver.timeparse import parse_time, time_spec
from archiver.windows import Range, Window, iso
from archiver.wording import plural

log = logging.getLogger(__name__)

OTHER_KEPT = "the facets beyond it are archived together as __other__"
OTHER_LOST = "the facets beyond it are missing (raise LIMIT, narrow WHERE, or set `other: true`)"
READ_AHEAD_WINDOWS = 1  # windows fetched ahead of the one being written
LEASE_TTL = timedelta(minutes=10)


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Backfill:
    """A backfill as the user asked for it.

    `since_spec`/`until_spec` say how (`7d`, or an ISO instant; `now` for no --until): the
    same command run again resumes its unfinished backfill, even with ages, whose instants
    move with the clock. Empty specs stand for the instants themselves.
    """

    since: datetime
    until: datetime | None = None
    since_spec: str = ""
    until_spec: str = ""

    @classmethod
    def parse(cls, since: str, until: str | None, now: datetime) -> Backfill:
        """From `--since`/`--until` text; ValueError for a time that cannot be read."""
        return cls(
            parse_time(since, now),
            parse_time(until, now) if until else None,
            time_spec(since, now),
            time_spec(until, now) if until else "now",
        )

    @property
    def request(self) -> tuple[str, str]:
        until = self.until_spec or (iso(self.until) if self.until else "now")
        return self.since_spec or iso(self.since), until


@dataclass
class JobResult:
    query: str
    target: str
    status: str = "ok"  # ok | failed | busy (another process holds it) | interrupted
    windows: int = 0
    points: int = 0
    nr_requests: int = 0
    retries: int = 0
    inspected: int = 0  # New Relic's inspectedCount, summed over the answers that told it
    seconds: float = 0.0
    exported_until: datetime | None = None  # the incremental checkpoint after the job
    error: str | None = None
    window: Window | None = None  # the window being exported when it failed
    backfilled: list[tuple[datetime, datetime]] = field(default_factory=list)
    dropped_keys: set[str] = field(default_factory=set)  # answer keys with no field, warned
    messages: set[str] = field(default_factory=set)  # New Relic's warnings about the query
    facet_limit_hit: int = 0  # answers with as many facets as the LIMIT
    warned: set[str] = field(default_factory=set)  # warnings already logged by this job

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
    """Learns rows per bucket from each answer, so the next request stays small.

    `max_buckets` caps every window once New Relic refused a bigger one (QueryTooBig).
    """

    interval: timedelta
    rows_per_bucket: float | None = None
    max_buckets: int | None = None

    def buckets(self, has_facets: bool) -> int:
        learned = windows.buckets_per_request(
            has_facets=has_facets, rows_per_bucket=self.rows_per_bucket
        )
        return learned if self.max_buckets is None else min(learned, self.max_buckets)

    def learn(self, window: Window, rows: int) -> None:
        self.rows_per_bucket = rows / max(1, window.buckets(self.interval))

    def shrink(self, window: Window) -> int:
        """New Relic refused `window`: from now on at most half its buckets (at least 1)."""
        self.max_buckets = max(1, window.buckets(self.interval) // 2)
        return self.max_buckets


class Batch(NamedTuple):
    """One window as New Relic answered it, transformed: lines, their precision, and what New
    Relic inspected for it."""

    window: Window
    lines: list[str]
    precision: Precision
    inspected: int | None = None


@dataclass(frozen=True)
class PlannedJob:
    query: QueryDef
    target: Target
    account_id: int
    segments: list[tuple[datetime, datetime]]
    skipped: list[str]
    range: tuple[datetime, datetime] | None = None  # the whole range a backfill asks for
    costs: WindowCosts | None = None  # what earlier windows of this job cost (dry runs only)

    @property
    def name(self) -> str:
        """The query's name in the state database (`<name>@<account>` for account_ids)."""
        return self.query.job_name(self.account_id)

    @property
    def seconds(self) -> float:
        return sum((until - since).total_seconds() for since, until in self.segments)


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
    account = query.accounts(default)[0]
    if account is None:
        raise ConfigError(
            f"{query.path}: query {query.name!r} has no account_id and NEW_RELIC_ACCOUNT_ID "
            "is not set"
        )
    return account


def _problems_summary(problems: list[QueryFileProblem]) -> str | None:
    """The run log's one line about broken query files, if any."""
    if not problems:
        return None
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    return redact(f"query file problem: {problems[0]}{more}")


def _head(result: JobResult) -> tuple[str, str]:
    return result.query, result.target


def log_fields(query: str, target: str, window: Window | None = None, **more: object) -> dict:
    """The `extra=` of a log call: JSON log lines carry these as keys (archiver.logs)."""
    fields: dict[str, object] = {"query": query, "target": target}
    if window is not None:
        fields["window_since"], fields["window_until"] = iso(window.since), iso(window.until)
    return {**fields, **more}


class Runner:
    """Runs one pass (incremental or backfill) over a list of queries."""

    def __init__(
        self,
        *,
        state: State,
        sink: Sink | None,
        client_factory: Callable[[], NewRelicClient] | None,
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
        self._said: set[tuple[str, str]] = set()  # (query, New Relic message) logged this run
        self._said_lock = threading.Lock()

    # -- planning -------------------------------------------------------------------------

    def plan(
        self,
        query: QueryDef,
        target: Target,
        backfill: Backfill | None,
        rp: RetentionPolicy | None,
        account: int | None = None,
    ) -> PlannedJob:
        """The job of (query, target) for `account` (default: the query's only account)."""
        now = self.now()
        account = account if account is not None else account_for(query, self.default_account)
        name = query.job_name(account)
        rp_duration = timedelta(seconds=rp.duration_seconds) if rp and rp.duration_seconds else None
        rng = self._range(query, target, backfill, now, rp_duration, name)
        segments = [] if rng.empty else [(rng.since, rng.until)]
        if backfill is not None and segments:
            done = self.state.backfill_done(name, target.key, backfill.request)
            segments = windows.subtract(segments[0], done)
        return PlannedJob(
            query,
            target,
            account,
            segments,
            rng.skipped,
            (rng.since, max(rng.since, rng.until)) if backfill is not None else None,
        )

    def _range(
        self,
        query: QueryDef,
        target: Target,
        backfill: Backfill | None,
        now: datetime,
        rp_duration: timedelta | None,
        name: str,
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
            checkpoint=self.state.checkpoint(name, target.key),
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
        jobs = [
            (query, target, account)
            for query in queries
            for account in query.accounts(self.default_account)
            for target in query.targets
        ]
        run_id = self.state.start_run(kind, self.now())
        try:
            with ThreadPoolExecutor(self.workers, thread_name_prefix="job") as pool:
                report.jobs = list(pool.map(lambda j: self._job(run_id, *j, backfill), jobs))
        finally:
            exit_code, error = report.exit_code, _problems_summary(report.problems)
            if self._auth_failure is not None:
                exit_code, error = ExitCode.USAGE, redact(str(self._auth_failure))
            self.state.finish_run(run_id, int(exit_code), self.now(), error)
            if self.progress is not None:
                self.progress.close()
        self._write_metrics()  # a refused key too: `failed` in the self-metrics is an alert
        if self._auth_failure is not None:
            self._auth_failure.recorded = True  # the run log has it: nobody records it again
            raise self._auth_failure
        return report

    def dry_run(
        self, queries: list[QueryDef], backfill: Backfill | None = None
    ) -> Iterator[tuple[PlannedJob, list[Window]]]:
        """The plan without touching New Relic or InfluxDB (retention policies are not read).

        Each job carries what its logged windows cost, for an estimate of this plan's cost.
        """
        for query in queries:
            for account in query.accounts(self.default_account):
                for target in query.targets:
                    job = self.plan(query, target, backfill, rp=None, account=account)
                    job = replace(job, costs=self.state.window_costs(job.name, target.key))
                    yield job, list(self.windows_of(job, self.sizer(job)))

    def _job(
        self,
        run_id: int,
        query: QueryDef,
        target: Target,
        account: int | None,
        backfill: Backfill | None,
    ) -> JobResult:
        name = query.job_name(account)
        result = JobResult(name, target.key)
        if self._auth_failure is not None:  # refused for another job: refused for this one too
            result.status, result.error = "failed", redact(str(self._auth_failure))
            export_id = self.state.start_export(run_id, name, target.key, self.now())
            self.state.finish_export(export_id, status="failed", now=self.now(), error=result.error)
            return result
        if self._stopping():  # stopping: leave the jobs not yet begun to the next run
            result.status = "interrupted"
            return result
        started = time.monotonic()
        export_id = self.state.start_export(run_id, name, target.key, self.now())
        job: PlannedJob | None = None
        try:
            if not self._lease(name, target.key):
                return self._busy(result, backfill is not None)
            try:
                job = self.plan(query, target, backfill, self._retention_policy(target), account)
                backfill_id = None
                if backfill is not None:
                    backfill_id = self.state.open_backfill(
                        name, target.key, backfill.request, job.range,
                        holder=self.holder, export_id=export_id, now=self.now(),
                    )  # fmt: skip
                self._export(job, export_id, result, backfill_id)
            finally:
                self.state.release_lease(name, target.key, self.holder)
        except AuthError as exc:
            # A refused credential fails every query alike: stop the run, say it once.
            result.status, result.error = "failed", redact(str(exc))
            self._auth_failure = self._auth_failure or exc
            self._abort.set()
        except ArchiverError as exc:
            result.status, result.error = "failed", redact(str(exc))
        except Exception as exc:  # a bug must fail this job only, with its type in the message
            log.debug(
                "unexpected error in %s → %s",
                name,
                target.key,
                exc_info=True,
                extra=log_fields(name, target.key),
            )
            result.status, result.error = "failed", redact(f"{type(exc).__name__}: {exc}")
        finally:
            result.seconds = time.monotonic() - started
            result.exported_until = self.state.checkpoint(name, target.key)
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

    def _export(
        self, job: PlannedJob, export_id: int, result: JobResult, backfill_id: int | None
    ) -> None:
        name, key = job.name, job.target.key
        for note in job.skipped:
            log.warning("%s → %s: %s", name, key, note, extra=log_fields(name, key))
        if self.progress is not None:
            self.progress.plan(sum((u - s).total_seconds() for s, u in job.segments))
        client = self._client()  # here: the batches are produced on the read-ahead thread
        sizer = self.sizer(job)
        batches = self.batches(job, result, client, sizer)
        # New Relic answers the next window (and it is transformed) while InfluxDB writes this
        # one; at most READ_AHEAD_WINDOWS wait in between, so memory stays a few windows.
        thread = threading.current_thread().name
        ahead = read_ahead(batches, depth=READ_AHEAD_WINDOWS, name=f"{thread}-fetch")
        with closing(ahead):
            for window, lines, precision, inspected in ahead:
                try:
                    written = self.sink.write(
                        job.target.database, job.target.retention_policy, lines, precision
                    )
                    self.state.record_window(
                        export_id, name, key, window.since, window.until, len(lines),
                        self.now(), backfill_id=backfill_id, inspected=inspected,
                        max_buckets=sizer.max_buckets,
                    )  # fmt: skip
                except BaseException:
                    result.window = window  # the read-ahead thread may be on the next one
                    raise
                result.windows += 1
                result.points += written.lines - written.dropped_beyond_retention
                if self.progress is not None:
                    seconds = (window.until - window.since).total_seconds()
                    self.progress.advance(seconds, len(lines))
                log.debug(
                    "%s → %s: %s: %s",
                    name,
                    key,
                    window,
                    plural(len(lines), "point"),
                    extra=log_fields(name, key, window, points=len(lines)),
                )
                if not self._lease(name, key):
                    log.warning(
                        "%s → %s: lost the lease after %s (a window took longer than "
                        "ARCHIVER_LEASE_SECONDS?); the run that took it goes on from there",
                        name,
                        key,
                        window,
                        extra=log_fields(name, key, window),
                    )
                    result.status = "busy"
                    return
        if result.status == "interrupted":
            return
        result.window = None
        if backfill_id is not None:
            self.state.finish_backfill(backfill_id, self.now())
            result.backfilled = job.segments

    def batches(
        self,
        job: PlannedJob,
        result: JobResult,
        client: NewRelicClient,
        sizer: WindowSizer | None = None,
    ) -> Iterator[Batch]:
        """Every window of the job as New Relic answers it, transformed.

        What `run` writes, and what `verify` compares with InfluxDB.
        """
        if job.query.mode == "events":
            return self._event_batches(job, result, client)
        return self._aggregate_batches(job, result, client, sizer or self.sizer(job))

    def _aggregate_batches(
        self, job: PlannedJob, result: JobResult, client: NewRelicClient, sizer: WindowSizer
    ) -> Iterator[Batch]:
        """TIMESERIES windows: one request each, sized by the rows the last answers had.

        A window New Relic finds too big is asked again in parts of half the buckets (and
        half again); the sizer keeps the smaller size for the rest of the job.
        """
        query, interval = job.query, job.target.interval
        guard = SeriesGuard(query.facets, query.max_series)
        steps = funnels.funnel_steps(query.nrql)
        tags = query.job_tags(job.account_id)
        for planned in self.windows_of(job, sizer):
            since = planned.since
            while since < planned.until:
                if self._interrupted(result):
                    return
                window = windows.next_window(
                    since, planned.until, interval, sizer.buckets(bool(query.facets))
                )
                answer = self._answer(job, window, result, client, sizer)
                if answer is None:
                    continue  # shrunk: ask again for the first part with fewer buckets
                guard.check(answer.results, answer.facets)
                sizer.learn(window, len(answer.results))
                rows = self._complete_rows(job, result, answer)
                dropped: set[str] = set()
                lines = transform.to_lines(
                    rows, answer.facets, query.measurement, tags,
                    funnels=steps, dropped=dropped,
                )  # fmt: skip
                _warn_dropped(result, dropped)
                yield Batch(window, lines, "s", answer.inspected)
                since = window.until

    def _answer(
        self,
        job: PlannedJob,
        window: Window,
        result: JobResult,
        client: NewRelicClient,
        sizer: WindowSizer,
    ) -> NrqlResult | None:
        """New Relic's answer for `window`, or None after a QueryTooBig shrank the sizer.

        A window of one bucket that is still too big is retried like a transient failure, then
        fails the job with New Relic's message.
        """
        result.window = window
        nrql = job.query.nrql_for(window.since, window.until, job.target.interval)
        shrinkable = window.buckets(job.target.interval) > 1
        try:
            answer = client.query(
                job.account_id, nrql, other=job.query.other, shrinkable=shrinkable
            )
        except QueryTooBig as exc:
            result.nr_requests += exc.requests
            result.retries += exc.requests - 1
            if not shrinkable:  # retried at one bucket as well: New Relic's message fails it
                raise
            buckets = sizer.shrink(window)
            log.warning(
                "%s → %s: New Relic refused %s as too big (%s); asking again with at most %d "
                "bucket(s) per request",
                job.name, job.target.key, window, exc, buckets,
                extra=log_fields(job.name, job.target.key, window),
            )  # fmt: skip
            return None
        result.nr_requests += answer.requests
        result.retries += answer.retries
        if answer.inspected is not None:
            result.inspected += answer.inspected
        return answer

    def _complete_rows(self, job: PlannedJob, result: JobResult, answer: NrqlResult) -> list:
        """The answer's rows with otherResult's, without the zeros of empty buckets; logs and
        counts New Relic's messages and a facet count that reached the LIMIT."""
        query, head = job.query, f"{job.name} → {job.target.key}"
        self._messages(query.name, result, answer.messages)
        rows = answer.results
        facets = answer.facets or query.facets
        limit = query.facet_limit  # fewer rows than that cannot hold as many facets
        if facets and len(rows) >= limit and completeness.facet_count(rows, facets) >= limit:
            result.facet_limit_hit += 1
            beyond = OTHER_KEPT if query.other else OTHER_LOST
            self._warn_once(
                result, "facet_limit",
                "%s: New Relic answered %d facets, as many as the query's LIMIT: %s",
                head, query.facet_limit, beyond,
            )  # fmt: skip
        if query.other:
            rows = rows + completeness.other_rows(answer.other, facets)
        unseen = completeness.drop_unsampled(rows, query.sample_guards)
        if unseen and rows:
            self._warn_once(
                result, "unsampled",
                "%s: cannot tell empty buckets for %s: New Relic named them otherwise; a 0 there "
                "may be a bucket without samples",
                head, ", ".join(sorted(unseen)),
            )  # fmt: skip
        return rows

    def _messages(self, query: str, result: JobResult, messages: tuple[str, ...]) -> None:
        """Counted per job; logged once per query and run."""
        result.messages.update(messages)
        for message in messages:
            with self._said_lock:
                if (query, message) in self._said:
                    continue
                self._said.add((query, message))
            log.warning("%s: New Relic says: %s", query, redact(message))

    @staticmethod
    def _warn_once(result: JobResult, kind: str, message: str, *args: object) -> None:
        if kind not in result.warned:
            result.warned.add(kind)
            log.warning(message, *args)

    def _event_batches(
        self, job: PlannedJob, result: JobResult, client: NewRelicClient
    ) -> Iterator[Batch]:
        """Raw events: windows of `interval`, halved while New Relic caps the answer."""
        query, target = job.query, job.target
        guard = SeriesGuard(query.tag_attributes, query.max_series)
        tags = query.job_tags(job.account_id)
        inspected: list[int] = []  # of the requests since the last yielded window (splits too)

        def fetch(since: datetime, until: datetime) -> list[dict]:
            result.window = Window(since, until)
            answer = client.query(job.account_id, query.nrql_for(since, until, target.interval))
            result.nr_requests += answer.requests
            result.retries += answer.retries
            if answer.inspected is not None:
                result.inspected += answer.inspected
                inspected.append(answer.inspected)
            self._messages(query.name, result, answer.messages)
            return answer.results

        for window in self.windows_of(job, WindowSizer(target.interval)):
            if self._interrupted(result):
                return
            label = f"{job.name} → {target.key}"
            for since, until, rows in events.plan_events(
                fetch, window.since, window.until, label=label
            ):
                guard.check_events(rows)
                dropped: set[str] = set()
                lines = events.to_lines(
                    rows, query.measurement, query.tag_attributes, tags, dropped=dropped
                )
                _warn_dropped(result, dropped)
                spent = sum(inspected) if inspected else None
                inspected.clear()
                yield Batch(Window(since, until), lines, "ns", spent)

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
            log.info(
                "%s → %s: skipped, another run is exporting it (%s)",
                *_head(result),
                who,
                extra=log_fields(*_head(result)),
            )
        return result

    def sizer(self, job: PlannedJob) -> WindowSizer:
        """Start from the last window this (query, target) wrote, if any."""
        sizer = WindowSizer(job.target.interval)
        if last := self.state.last_window(job.name, job.target.key):
            sizer.learn(Window(last[0], last[1]), last[2])
            sizer.max_buckets = self.state.bucket_cap(job.name, job.target.key)
        return sizer

    def _client(self) -> NewRelicClient:
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
            inspected=result.inspected,
            seconds=result.seconds,
            exported_until=result.exported_until,
            now=now,
            dropped_keys=len(result.dropped_keys),
            nr_messages=len(result.messages),
            facet_limit_hit=result.facet_limit_hit,
        )
        self._metric_lines.setdefault(target.database, []).append(line)

    def _write_metrics(self) -> None:
        """The run's own `nr_archiver` points, one write per database; never fails the run."""
        for database, lines in self._metric_lines.items():
            try:
                self.sink.write(database, None, lines)
            except ArchiverError as exc:
                log.warning(
                    "self-metrics not written to %s: %s", database, exc, extra={"error": str(exc)}
                )
        self._metric_lines.clear()

    def _report(self, result: JobResult) -> None:
        head = f"{result.query} → {result.target}"
        if self._auth_failure is not None:
            return  # said once, by the CLI
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


def _warn_dropped(result: JobResult, dropped: set[str]) -> None:
    """Warn once per job about each answer key that gave no field (no line-protocol form)."""
    new = dropped - result.dropped_keys
    if new:
        result.dropped_keys |= new
        log.warning(
            "%s → %s: New Relic's answer has keys with no line-protocol form, left out of the "
            "points: %s (lists such as uniques() cannot be stored; nr_archiver counts them in "
            "dropped_keys)",
            result.query,
            result.target,
            ", ".join(sorted(new)),
        )
