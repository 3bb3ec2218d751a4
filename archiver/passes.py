"""One pass of the archiver, assembled from the settings: what `run` and `schedule` call.

It picks the New Relic client (NerdGraph, or the Insights API for a query key), checks the
sink before New Relic is asked anything (its answers cost money), opens the state and hands
everything to the runner. The CLI only parses options and prints.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta

from archiver import queries
from archiver.config import Settings
from archiver.errors import ArchiverError, ConfigError, InfluxError, TransientError
from archiver.insights import InsightsClient
from archiver.limiter import Limiter
from archiver.newrelic import NerdGraphClient
from archiver.progress import Progress
from archiver.runner import Backfill, PlannedJob, Runner, RunReport
from archiver.scheduler import PassOutcome
from archiver.sinks import Sink, open_sink
from archiver.state import State
from archiver.windows import Window


@dataclass(frozen=True)
class PassOptions:
    workers: int = 4
    max_concurrent: int = 5
    requests_per_minute: int = 1000
    self_metrics: bool = True
    output: str | None = None  # a line-protocol file (or "-") instead of InfluxDB


def run_pass(
    settings: Settings,
    loaded: queries.LoadResult,
    backfill: Backfill | None,
    options: PassOptions,
    stop: threading.Event,
) -> RunReport:
    """Export every (query, target) of `loaded`; the report says how each one went."""
    limiter = Limiter(max_concurrent=options.max_concurrent, per_minute=options.requests_per_minute)
    client_factory = new_relic_client_factory(settings, limiter)
    sink = connect_sink(settings, options.output)
    # A file output is for inspection: it must not move the checkpoints of the real target.
    state = State.scratch() if options.output else State.open(settings.db_url)
    runner = Runner(
        state=state,
        sink=sink,
        client_factory=client_factory,
        default_account=settings.new_relic_account_id,
        workers=options.workers,
        stop=stop,
        progress=Progress(),
        self_metrics=options.self_metrics and not options.output,
        lease_ttl=timedelta(seconds=settings.lease_seconds),
    )
    try:
        return runner.run(loaded.queries, backfill, loaded.problems)
    finally:
        sink.close()


def outcome_of(report: RunReport) -> PassOutcome:
    """The pass as `run`'s summary line and the scheduler's heartbeat tell it."""
    failed = [job for job in report.jobs if job.failed]
    if report.problems:
        reason: str | None = str(report.problems[0])
    elif failed:
        reason = f"{failed[0].query} → {failed[0].target}: {failed[0].error}"
    else:
        reason = None
    return PassOutcome(
        exit_code=int(report.exit_code),
        targets_ok=sum(job.status == "ok" for job in report.jobs),
        targets_failed=len(failed),
        query_file_problems=len(report.problems),
        points=sum(job.points for job in report.jobs),
        reason=reason,
    )


def plan_pass(
    settings: Settings, loaded: queries.LoadResult, backfill: Backfill | None
) -> Iterator[tuple[PlannedJob, list[Window]]]:
    """The windows a pass would export, from the state as it is; creates and asks nothing."""
    state = State.open_existing(settings.db_url) or State.scratch()  # no state yet: empty
    runner = Runner(
        state=state,
        sink=None,
        client_factory=None,
        default_account=settings.new_relic_account_id,
    )
    return runner.dry_run(loaded.queries, backfill)


def connect_sink(settings: Settings, output: str | None) -> Sink:
    """The sink, checked first.

    A URL that is not InfluxDB is configuration (exit 2); an InfluxDB that does not answer
    fails the pass (exit 1) without a single New Relic request.
    """
    try:
        sink = open_sink(settings, api=settings.influx_api, output=output, org=settings.influx_org)
        sink.ping()
    except InfluxError as exc:
        raise ConfigError(str(exc)) from None
    except TransientError as exc:
        raise ArchiverError(f"InfluxDB is unreachable, nothing was exported: {exc}") from None
    return sink


def new_relic_client_factory(settings: Settings, limiter: Limiter) -> Callable[[], NerdGraphClient]:
    """NerdGraph with a user key; the legacy Insights API when only a query key is given."""
    key = settings.require_new_relic_key()
    if settings.new_relic_api_key:
        url, client = settings.nerdgraph_url, NerdGraphClient
    else:
        url, client = settings.insights_url, InsightsClient
    return lambda: client(
        url,
        key,
        timeout=settings.nerdgraph_timeout,
        limiter=limiter,
        backoff_base=settings.retry_base_seconds,
    )
