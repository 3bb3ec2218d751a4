"""`nr-archiver verify`: ask New Relic again, compare with InfluxDB, repair what differs.

Everything `run` does to produce points is reused, not copied: the window planning and sizing
(`pipeline.plan`), the New Relic clients under the same limiter and retries, a job's fetch +
transform (`pipeline.job.Job.batches`), the same sink for repairs, and the
same (query, target) leases, so a verify never races a `run`. Checkpoints never move.

This module is the orchestration: which range and windows (`scope`), each window compared and
repaired (`repair`), the per-target report, its log line, state record and self-metric.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta

from archiver import queries
from archiver.app import WorkOptions, connect_sink, new_relic_client_factory
from archiver.errors import AuthError
from archiver.newrelic.client import NewRelicClient
from archiver.pipeline.failures import job_failures
from archiver.pipeline.job import (
    READ_AHEAD_WINDOWS,
    Job,
    JobResult,
    Said,
    holder_is_dead,
    new_holder,
)
from archiver.pipeline.plan import PlannedJob, account_for, utcnow
from archiver.pipeline.readahead import read_ahead
from archiver.pipeline.report import SelfMetrics
from archiver.settings import Settings
from archiver.sinks.base import ReadableSink
from archiver.state.store import State
from archiver.state.verifications import VerifyRecord
from archiver.verify.repair import WindowCheck
from archiver.verify.report import TargetReport, VerifyReport, metrics_line
from archiver.verify.scope import Sampler, series_of, verify_range
from archiver.windows import iso

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class VerifyOptions(WorkOptions):
    since: datetime | None = None
    until: datetime | None = None
    sample: int | None = None  # windows per target, chosen at random
    seed: int | None = None  # of the random choice (reproducible samples)
    repair: bool = False
    prune: bool = False


def parse_iso(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


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
        self._sampler = Sampler(state, options.sample, options.seed)
        self._windows = WindowCheck(sink, repair=options.repair, prune=options.prune)
        self._auth_failure: AuthError | None = None
        self._metrics = SelfMetrics(now)

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
        self._metrics.write(self.sink)  # one `nr_archiver` point (kind=verify) per target
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
            with job_failures(
                report, on_refused=self._refused, log=log,
                unexpected="unexpected error verifying %s → %s", name=name, target=target.key,
            ):  # fmt: skip
                self._verify(query, target, report)
        finally:
            self.state.release_lease(*lease, holder)
        if report.status == "ok" and report.remaining:
            report.status = "differs"
        self._log(report)
        self._collect_metrics(report, target)
        self._record(report)
        return report

    def _refused(self, exc: AuthError) -> None:
        """A refused key fails every target alike: stop the others, raise it at the end."""
        self._auth_failure = self._auth_failure or exc
        self.stop.set()

    def _verify(
        self, query: queries.QueryDef, target: queries.Target, report: TargetReport
    ) -> None:
        policy = self.sink.existing_policy(target.database, target.retention_policy)
        rng = verify_range(
            self.state, query, target, policy, report.query,
            now=self.now, since=self.options.since, until=self.options.until,
        )  # fmt: skip
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
            chosen = self._sampler.sample(job)
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
                self._windows.check(target, series, window, lines, precision, policy, report)
                policy = policy or self._windows.policy_after_repair(target)
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
        self._metrics.add(target.database, metrics_line(report, self.now()))


# -- the pass, from settings, and its output ---------------------------------------------------


def verify_pass(
    settings: Settings,
    selected: list[queries.QueryDef],
    options: VerifyOptions,
    stop: threading.Event | None = None,
) -> VerifyReport:
    client_factory = new_relic_client_factory(settings, options.limiter())
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
