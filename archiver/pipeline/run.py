"""Running a pass (incremental or backfill): the only module that knows the order of a run.

One job is one (query, target) pair. Jobs run in parallel threads; New Relic requests share
one limiter. A job's failure is recorded and reported, never raised past `run()`: one broken
query must not stop the others. A refused credential stops the whole run, said once.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta

from archiver.errors import AuthError, ExitCode
from archiver.logs import redact
from archiver.newrelic.client import NewRelicClient
from archiver.pipeline import plan
from archiver.pipeline.failures import job_failures
from archiver.pipeline.job import (
    LEASE_TTL,
    Job,
    JobResult,
    Said,
    holder_is_dead,
    log_fields,
    new_holder,
)
from archiver.pipeline.plan import Backfill, PlannedJob, account_for, utcnow
from archiver.pipeline.progress import Progress
from archiver.pipeline.report import (
    RunReport,
    SelfMetrics,
    log_busy,
    log_result,
    problems_summary,
)
from archiver.queries import QueryDef, QueryFileProblem, Target
from archiver.sinks.base import RetentionPolicy, Sink
from archiver.state.store import State
from archiver.windows import iso

log = logging.getLogger(__name__)


class Runner:
    """Runs one pass (incremental or backfill) over a list of queries."""

    def __init__(
        self,
        *,
        state: State,
        sink: Sink,
        client_factory: Callable[[], NewRelicClient],
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
        self.holder = new_holder()
        self._policies: dict[tuple[str, str | None], RetentionPolicy] = {}
        self._policies_lock = threading.Lock()
        self._local = threading.local()
        self._auth_failure: AuthError | None = None
        self._metrics = SelfMetrics(now)
        self._said = Said()  # New Relic's messages logged this run

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
            exit_code, error = report.exit_code, problems_summary(report.problems)
            if self._auth_failure is not None:
                exit_code, error = ExitCode.USAGE, redact(str(self._auth_failure))
            self.state.finish_run(run_id, int(exit_code), self.now(), error)
            if self.progress is not None:
                self.progress.close()
        self._metrics.write(self.sink)  # a refused key too: `failed` in the self-metrics alerts
        if self._auth_failure is not None:
            self._auth_failure.recorded = True  # the run log has it: nobody records it again
            raise self._auth_failure
        return report

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
            with job_failures(
                result, on_refused=self._refused, log=log, unexpected="unexpected error in %s → %s",
                name=name, target=target.key, extra=log_fields(name, target.key),
            ):  # fmt: skip
                if not self._lease(name, target.key):
                    return self._busy(result, backfill is not None)
                try:
                    job = self._plan(query, target, backfill, account)
                    backfill_id = None
                    if backfill is not None:
                        backfill_id = self.state.open_backfill(
                            name, target.key, backfill.request, job.range,
                            holder=self.holder, export_id=export_id, now=self.now(),
                        )  # fmt: skip
                    # here: the batches are produced on the read-ahead thread
                    client = self._client()
                    one = Job(
                        job, result, self.state, client, self._stopping,
                        said=self._said, now=self.now, progress=self.progress,
                    )  # fmt: skip
                    one.export(self.sink, export_id, backfill_id, self.holder, self.lease_ttl)
                finally:
                    self.state.release_lease(name, target.key, self.holder)
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
            if self._auth_failure is None:  # else said once, by the CLI
                log_result(result)
            if self.self_metrics:
                kind = "backfill" if backfill else "incremental"
                self._metrics.collect(result, target.database, kind)
        return result

    def _refused(self, exc: AuthError) -> None:
        """A refused credential fails every query alike: stop the run, say it once."""
        self._auth_failure = self._auth_failure or exc
        self._abort.set()

    def _plan(
        self, query: QueryDef, target: Target, backfill: Backfill | None, account: int | None
    ) -> PlannedJob:
        rp = self._retention_policy(target)
        account = account if account is not None else account_for(query, self.default_account)
        facts = plan.facts(self.state, query.job_name(account), target.key, backfill)
        return plan.plan(query, target, account, backfill, rp, now=self.now(), facts=facts)

    def _stopping(self) -> bool:
        return self.stop.is_set() or self._abort.is_set()

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
            log_busy(result, who)
        return result

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
