"""`nr-archiver verify`: ask New Relic again, compare with InfluxDB, repair what differs.

Everything `run` does to produce points is reused, not copied: the window planning and sizing
(`pipeline.plan`), the New Relic clients under the same limiter and retries, a job's fetch +
transform (`pipeline.job.Job.batches`), the same sink for repairs, and the
same (query, target) leases, so a verify never races a `run`. Checkpoints never move.

Per (query, target), the range is what was exported and New Relic still holds: from the query's
`start` or the oldest window the state logged, whichever is older, to the checkpoint, narrowed
to what New Relic and the retention policy keep, and by `--since` / `--until`; never past the
checkpoint.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta

from archiver import queries, windows
from archiver.app import connect_sink, new_relic_client_factory
from archiver.errors import ArchiverError, AuthError
from archiver.lineprotocol import escape_key, unescape_key
from archiver.logs import redact
from archiver.newrelic.client import NewRelicClient
from archiver.newrelic.limiter import Limiter
from archiver.pipeline.job import (
    READ_AHEAD_WINDOWS,
    Job,
    JobResult,
    Said,
    holder_is_dead,
    new_holder,
)
from archiver.pipeline.plan import PlannedJob, account_for, sizer_for, utcnow
from archiver.pipeline.readahead import read_ahead
from archiver.settings import Settings
from archiver.sinks.base import (
    Precision,
    ReadableSink,
    RetentionPolicy,
    Series,
)
from archiver.state.store import State
from archiver.state.verifications import VerifyRecord
from archiver.timeparse import influxdb_duration_seconds
from archiver.verify.compare import Comparison, Point, compare, parse_line
from archiver.verify.report import (
    EXAMPLES,
    TargetReport,
    VerifyReport,
    describe,
    example,
    metrics_line,
)
from archiver.windows import EPOCH, Window, iso

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class VerifyOptions:
    since: datetime | None = None
    until: datetime | None = None
    sample: int | None = None  # windows per target, chosen at random
    seed: int | None = None  # of the random choice (reproducible samples)
    repair: bool = False
    prune: bool = False
    workers: int = 4
    max_concurrent: int = 5
    requests_per_minute: int = 1000
    self_metrics: bool = True


def series_of(query: queries.QueryDef, account: int | None = None) -> Series:
    """Static tags and tag keys of the query's points for `account`, as InfluxDB stores them."""

    def stored(text: str) -> str:
        return unescape_key(escape_key(text))

    tags = query.job_tags(account)  # an `account_ids` file adds account_id=<id>
    static = {stored(k): stored(str(v)) for k, v in tags.items() if stored(str(v))}
    dynamic = {stored(name) for name in (query.tag_attributes or query.facets)}
    fixed = {k: v for k, v in static.items() if k not in dynamic}  # an attribute wins (events)
    return Series(stored(query.measurement), fixed, frozenset(static.keys() | dynamic))


def parse_iso(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def epoch_ns(moment: datetime) -> int:
    return (moment - EPOCH) // timedelta(microseconds=1) * 1000


class Verifier:
    def __init__(
        self,
        *,
        state: State,
        sink: ReadableSink,
        client_factory: Callable[[], NewRelicClient],
        default_account: int | None,
        options: VerifyOptions,
        now: Callable[[], datetime] = utcnow,
        lease_ttl: timedelta = timedelta(minutes=10),
        stop: threading.Event | None = None,
    ) -> None:
        self.state = state
        self.sink = sink
        self.client_factory = client_factory
        self.default_account = default_account
        self.options = options
        self.now = now
        self.lease_ttl = lease_ttl
        self.stop = stop or threading.Event()
        # Jobs plan, size, fetch and transform exactly as in `run`; they write nothing here.
        self.holder = new_holder()
        self._said = Said()
        self._random = random.Random(options.seed)
        self._random_lock = threading.Lock()
        self._auth_failure: AuthError | None = None
        self._metric_lines: dict[str, list[str]] = {}
        self._metrics_lock = threading.Lock()

    def verify(self, selected: list[queries.QueryDef]) -> VerifyReport:
        for query in selected:
            account_for(query, self.default_account)  # every config error before any work
        jobs = [
            (query, target, account)
            for query in selected
            for account in query.accounts(self.default_account)
            for target in query.targets
        ]
        with ThreadPoolExecutor(self.options.workers, thread_name_prefix="verify") as pool:
            report = VerifyReport(list(pool.map(lambda job: self._job(*job), jobs)))
        if self._auth_failure is not None:
            raise self._auth_failure
        self._write_metrics()
        return report

    # -- one (query, target) -------------------------------------------------------------------

    def _job(
        self, query: queries.QueryDef, target: queries.Target, account: int | None
    ) -> TargetReport:
        name = query.job_name(account)  # `<name>@<id>` for an `account_ids` file
        report = TargetReport(name, target.key, account)
        if self.stop.is_set():
            report.status, report.error = "failed", "interrupted before it began"
            return report
        holder = self.holder
        lease = (name, target.key)
        if not self._renew_lease(name, target):
            report.status = "busy"
            report.error = "a run is exporting it (its lease is held); verify it later"
            return report
        try:
            self._verify(query, target, report)
        except AuthError as exc:
            report.status, report.error = "failed", redact(str(exc))
            self._auth_failure = self._auth_failure or exc
            self.stop.set()
        except ArchiverError as exc:
            report.status, report.error = "failed", redact(str(exc))
        except Exception as exc:  # a bug fails this target only, with its type in the message
            log.debug("unexpected error verifying %s → %s", *lease, exc_info=True)
            report.status, report.error = "failed", redact(f"{type(exc).__name__}: {exc}")
        finally:
            self.state.release_lease(*lease, holder)
        if report.status == "ok" and report.remaining:
            report.status = "differs"
        self._log(report)
        self._collect_metrics(report, target)
        self._record(report)
        return report

    def _verify(
        self, query: queries.QueryDef, target: queries.Target, report: TargetReport
    ) -> None:
        policy = self.sink.existing_policy(target.database, target.retention_policy)
        rng = self._range(query, target, policy, report.query)
        if rng is None:
            report.status = "not exported"
            return
        report.since, report.until = iso(rng.since), iso(rng.until)
        for note in rng.skipped:
            log.info("%s → %s: %s", report.query, target.key, note)
        if rng.empty:
            return
        job = PlannedJob(query, target, report.account_id, [(rng.since, rng.until)], rng.skipped)
        if self.options.sample is not None:
            chosen = self._sample(job)
            report.sampled = [str(window) for window in chosen]
            segments = [(window.since, window.until) for window in chosen]
            job = PlannedJob(query, target, job.account_id, segments, [])
        series = series_of(query, report.account_id)
        progress = JobResult(report.query, target.key)
        # As in `run`, New Relic answers the next window while this one is read back.
        fetch = Job(
            job, progress, self.state, self.client_factory(), self.stop.is_set,
            said=self._said, now=self.now,
        )  # fmt: skip
        batches = fetch.batches()
        thread = threading.current_thread().name
        ahead = read_ahead(batches, depth=READ_AHEAD_WINDOWS, name=f"{thread}-fetch")
        try:
            for window, lines, precision, _inspected in ahead:
                self._window(target, series, window, lines, precision, policy, report)
                policy = policy or self._policy_after_repair(target)
                if not self._renew_lease(report.query, target):
                    report.status = "failed"
                    report.error = (
                        f"lost the lease after {window} (a window took longer than "
                        "ARCHIVER_LEASE_SECONDS?); verified up to there"
                    )
                    return
        finally:
            ahead.close()
            report.nr_requests = progress.nr_requests
            if progress.status == "interrupted":
                report.status, report.error = "failed", "interrupted"

    def _renew_lease(self, name: str, target: queries.Target) -> bool:
        return self.state.acquire_lease(
            name, target.key, self.holder, self.lease_ttl, self.now(),
            holder_is_dead=holder_is_dead,
        )  # fmt: skip

    def _range(
        self,
        query: queries.QueryDef,
        target: queries.Target,
        policy: RetentionPolicy | None,
        name: str,
    ) -> windows.Range | None:
        """What was exported and New Relic still holds; None when nothing was exported yet."""
        checkpoint = self.state.checkpoint(name, target.key)
        if checkpoint is None:
            return None
        now = self.now()
        interval = timedelta(seconds=1) if query.mode == "events" else target.interval
        # What was exported begins at `start` or at the oldest window logged (a backfill may
        # reach further back); --since only narrows it.
        logged = [s for s, _ in self.state.windows_written(name, target.key)]
        starts = [*logged, *([query.start] if query.start is not None else [])]
        since = windows.floor(min(starts, default=now - query.nr_retention), interval)
        if self.options.since is not None:
            since = max(since, windows.floor(self.options.since, interval))
        until = checkpoint
        if self.options.until is not None:
            until = min(until, windows.ceil(self.options.until, interval))
        if policy is not None:
            seconds = policy.duration_seconds
        else:
            seconds = influxdb_duration_seconds(target.retention_duration or "INF")
        rng = windows.clamp(
            since,
            until,
            now=now,
            interval=interval,
            nr_retention=query.nr_retention,
            rp_duration=timedelta(seconds=seconds) if seconds else None,
        )
        return windows.Range(rng.since, max(rng.since, rng.until), rng.skipped)

    def _sample(self, job: PlannedJob) -> list[Window]:
        """N of the windows `run` would cut (at the size it uses now), chosen at random."""
        (since, until), query = job.segments[0], job.query
        if query.mode == "events":
            buckets = 1
        else:
            buckets = sizer_for(self.state, job).buckets(bool(query.facets))
        planned = list(windows.plan(since, until, job.target.interval, buckets))
        with self._random_lock:
            chosen = self._random.sample(planned, min(self.options.sample or 0, len(planned)))
        return sorted(chosen, key=lambda window: window.since)

    def _window(
        self,
        target: queries.Target,
        series: Series,
        window: Window,
        lines: list[str],
        precision: Precision,
        policy: RetentionPolicy | None,
        report: TargetReport,
    ) -> None:
        expected = [parse_line(line, precision) for line in lines]
        comparison = compare(expected, self._read(target, series, window, policy))
        report.windows += 1
        report.checked += comparison.checked
        for kind in ("missing", "different", "extra"):
            setattr(report, kind, getattr(report, kind) + len(comparison.of(kind)))
        for kind in ("missing", "different", "extra"):  # the first few of each kind
            shown = sum(e["kind"] == kind for e in report.examples)
            report.examples += [example(d) for d in comparison.of(kind)[: EXAMPLES - shown]]
        if comparison.clean:
            return
        if not self.options.repair:
            report.remaining += len(comparison.differences)
            return
        self._repair(target, series, comparison, precision, report)
        after = compare(expected, self._read(target, series, window, policy=True))
        report.remaining += len(after.differences)

    def _read(
        self,
        target: queries.Target,
        series: Series,
        window: Window,
        policy: RetentionPolicy | bool | None,
    ) -> list[Point]:
        if not policy:  # no database or retention policy: nothing was kept
            return []
        return self.sink.read_points(
            target.database,
            target.retention_policy,
            series,
            epoch_ns(window.since),
            epoch_ns(window.until),
        )

    def _repair(
        self,
        target: queries.Target,
        series: Series,
        comparison: Comparison,
        precision: Precision,
        report: TargetReport,
    ) -> None:
        """Delete (with --prune) the extra points, rewrite the missing and different ones."""
        database, rp = target.database, target.retention_policy
        self.sink.ensure_target(database, rp, target.retention_duration)
        rewrite = comparison.of("missing") + comparison.of("different")
        if self.options.prune:
            extra = [d.actual for d in comparison.of("extra")]
            # Fields only InfluxDB has survive a rewrite (it merges fields): delete, then write.
            stale = [d.actual for d in rewrite if d.fields_only_in_influxdb]
            deleted = self.sink.delete_points(database, rp, series, [*extra, *stale])  # type: ignore[list-item]
            extra_keys = {point.key for point in extra if point}
            report.pruned += sum(point.key in extra_keys for point in deleted.deleted)
            report.not_pruned += [f"{describe(point)}: {reason}" for point, reason in deleted.kept][
                : EXAMPLES - len(report.not_pruned)
            ]
        lines = [d.expected.line for d in rewrite if d.expected and d.expected.line]
        if lines:
            self.sink.write(database, rp, lines, precision)
            report.repaired += len(lines)

    def _policy_after_repair(self, target: queries.Target) -> RetentionPolicy | None:
        if not self.options.repair:
            return None
        return self.sink.existing_policy(target.database, target.retention_policy)

    # -- reporting -----------------------------------------------------------------------------

    def _log(self, report: TargetReport) -> None:
        head = f"{report.query} → {report.target}"
        if report.status in ("failed", "busy"):
            log.error("%s: %s: %s", head, report.status.upper(), report.error)
            return
        log.info(
            "%s: %d windows, %d points checked, %d missing, %d different, %d extra, "
            "%d repaired, %d pruned, %d New Relic requests",
            head,
            report.windows,
            report.checked,
            report.missing,
            report.different,
            report.extra,
            report.repaired,
            report.pruned,
            report.nr_requests,
        )

    def _record(self, report: TargetReport) -> None:
        """The last verify of the target, for `status` (a busy target was not verified)."""
        if report.status == "busy":
            return
        self.state.record_verify(
            VerifyRecord(
                query=report.query,
                target=report.target,
                verified_at=self.now(),
                status=report.status,
                since=parse_iso(report.since) if report.since else None,
                until=parse_iso(report.until) if report.until else None,
                windows=report.windows,
                checked=report.checked,
                missing=report.missing,
                different=report.different,
                extra=report.extra,
                repaired=report.repaired,
                pruned=report.pruned,
                remaining=report.remaining,
                error=report.error,
            )
        )

    def _collect_metrics(self, report: TargetReport, target: queries.Target) -> None:
        if not self.options.self_metrics or report.status == "busy":
            return
        line = metrics_line(report, self.now())
        with self._metrics_lock:
            self._metric_lines.setdefault(target.database, []).append(line)

    def _write_metrics(self) -> None:
        """One `nr_archiver` point (kind=verify) per target; never fails the verify."""
        for database, lines in self._metric_lines.items():
            try:
                self.sink.write(database, None, lines)
            except ArchiverError as exc:
                log.warning("self-metrics not written to %s: %s", database, exc)


# -- the pass, from settings, and its output ---------------------------------------------------


def verify_pass(
    settings: Settings,
    selected: list[queries.QueryDef],
    options: VerifyOptions,
    stop: threading.Event | None = None,
) -> VerifyReport:
    limiter = Limiter(max_concurrent=options.max_concurrent, per_minute=options.requests_per_minute)
    client_factory = new_relic_client_factory(settings, limiter)
    sink = connect_sink(settings, None)
    try:
        verifier = Verifier(
            state=State.open(settings.db_url),
            sink=sink,  # type: ignore[arg-type]
            client_factory=client_factory,
            default_account=settings.new_relic_account_id,
            options=options,
            lease_ttl=timedelta(seconds=settings.lease_seconds),
            stop=stop,
        )
        return verifier.verify(selected)
    finally:
        sink.close()
