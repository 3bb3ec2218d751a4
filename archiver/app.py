"""The library under the CLI: each command's work, assembled from the settings.

One pass of the archiver (what `run` and `schedule` call) picks the New Relic client
(NerdGraph, or the Insights API for a query key), checks the sink before New Relic is asked
anything (its answers cost money), opens the state and hands everything to the runner. Also
the query selection, `validate`, `db upgrade` and `grafana`. The CLI only parses options,
calls one function of this module and prints.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from archiver import queries
from archiver.errors import (
    ArchiverError,
    ConfigError,
    ExitCode,
    InfluxError,
    StateError,
    TransientError,
    exit_code_of,
)
from archiver.logs import redact
from archiver.newrelic.client import NewRelicClient
from archiver.newrelic.limiter import Limiter
from archiver.newrelic.nerdgraph import NerdGraphClient
from archiver.pipeline import plan, sharding
from archiver.pipeline.plan import Backfill, PlannedJob
from archiver.pipeline.progress import Progress
from archiver.pipeline.report import RunReport
from archiver.pipeline.run import Runner
from archiver.schedule.health import PassOutcome
from archiver.settings import Settings
from archiver.sinks.base import Sink
from archiver.sinks.choose import open_sink
from archiver.state import migrate
from archiver.state.store import State
from archiver.windows import Window

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WorkOptions:
    """What `run` and `verify` share: worker threads, New Relic's limits, self-metrics."""

    workers: int = 4
    max_concurrent: int = 5
    requests_per_minute: int = 1000
    self_metrics: bool = True

    def limiter(self) -> Limiter:
        """One limiter for the whole pass, shared by every New Relic client."""
        return Limiter(max_concurrent=self.max_concurrent, per_minute=self.requests_per_minute)


@dataclass(frozen=True)
class PassOptions(WorkOptions):
    output: str | None = None  # a line-protocol file (or "-") instead of InfluxDB


def run_pass(
    settings: Settings,
    loaded: queries.LoadResult,
    backfill: Backfill | None,
    options: PassOptions,
    stop: threading.Event,
) -> RunReport:
    """Export every (query, target) of `loaded`; the report says how each one went.

    A pass that fails as a whole (no valid query file, no key, InfluxDB unreachable, a query
    without an account) is recorded in the run log with its cause before the error goes up,
    so `status` shows it.
    """
    kind = "backfill" if backfill else "incremental"
    pairs = [(query.name, target.key) for query in loaded.queries for target in query.targets]
    with recorded_failures(settings, kind, pairs, record=not options.output):
        if not loaded.queries:
            first = f": {loaded.problems[0]}" if loaded.problems else ""
            raise NoQueries(f"no valid query file to run{first}")
        client_factory = new_relic_client_factory(settings, options.limiter())
        sink = connect_sink(settings, options.output)
        try:
            # A file output is for inspection: it must not move the real target's checkpoints.
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
            return runner.run(loaded.queries, backfill, loaded.problems)
        finally:
            sink.close()


class NoQueries(ArchiverError):
    """Nothing to run: every query file is broken (or the selection is empty); exit 1."""


@contextmanager
def recorded_failures(
    settings: Settings,
    kind: str,
    pairs: list[tuple[str, str]] = (),
    *,
    record: bool = True,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> Iterator[None]:
    """Record an ArchiverError that ends a pass in the run log, then let it go on.

    Not when the state database is the problem (it cannot take the record) nor twice (the
    runner records what happens inside it). A failure to record never hides the error.
    """
    try:
        yield
    except ArchiverError as exc:
        if record and not isinstance(exc, StateError) and not getattr(exc, "recorded", False):
            exc.recorded = True
            try:
                State.open(settings.db_url).record_failed_pass(
                    kind, now(), int(exit_code_of(exc)), redact(str(exc)), list(pairs)
                )
            except StateError as state_error:
                log.warning("the failed pass was not recorded: %s", state_error)
        raise


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
    return plan.dry_run(
        state, loaded.queries, backfill, settings.new_relic_account_id, datetime.now(UTC)
    )


def for_api(settings: Settings, loaded: queries.LoadResult) -> queries.LoadResult:
    """The queries the chosen New Relic API can answer; the others become file problems.

    Only a query key (the Insights API): `other: true` is refused, that API has no otherResult.
    """
    if settings.new_relic_api_key or not settings.new_relic_query_key:
        return loaded
    from archiver.newrelic.insights import OTHER_REFUSED

    refused = [query for query in loaded.queries if query.other]
    problems = [
        queries.QueryFileProblem(query.path, "other", OTHER_REFUSED, query.name)
        for query in refused
    ]
    kept = [query for query in loaded.queries if not query.other]
    return queries.LoadResult(kept, [*loaded.problems, *problems])


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


def new_relic_client_factory(settings: Settings, limiter: Limiter) -> Callable[[], NewRelicClient]:
    """NerdGraph with a user key; the legacy Insights API when only a query key is given."""
    key = settings.require_new_relic_key()
    if settings.new_relic_api_key:
        return lambda: NerdGraphClient(
            settings.nerdgraph_url,
            key,
            timeout=settings.nerdgraph_timeout,
            nrql_timeout=settings.query_timeout,
            async_queries=settings.async_queries,
            limiter=limiter,
            backoff_base=settings.retry_base_seconds,
        )
    from archiver.newrelic.insights import InsightsClient

    return lambda: InsightsClient(
        settings.insights_url,
        key,
        timeout=settings.nerdgraph_timeout,
        limiter=limiter,
        backoff_base=settings.retry_base_seconds,
    )


def use_state_of(settings: Settings) -> None:
    """Where the state database's migrations are, from the settings (ARCHIVER_MIGRATIONS_DIR)."""
    migrate.use_migrations(settings.migrations_dir)


def load_queries(
    settings: Settings, names: Sequence[str], shard: sharding.Shard | None = None
) -> queries.LoadResult:
    """The query files of the settings' folder, only `names` (all if empty) of `shard`."""
    loaded = queries.load_dir(settings.queries_dir)
    selected = queries.select(loaded.queries, names) if names else loaded.queries
    problems = [p for p in loaded.problems if not names or p.query in names]
    if shard is not None:
        selected, problems = shard.queries(selected), shard.problems(problems)
    return for_api(settings, queries.LoadResult(selected, problems))


def load_and_report(
    settings: Settings, names: Sequence[str], shard: sharding.Shard | None = None
) -> queries.LoadResult:
    """The selected queries; each broken file is logged in one line."""
    loaded = load_queries(settings, names, shard)
    for problem in loaded.problems:
        log.error("%s", problem)
    return loaded


def validate(settings: Settings, files: Sequence[Path]) -> queries.LoadResult:
    """`files` (default: the queries folder) checked as `run` would load them."""
    loaded = queries.load_files(files) if files else queries.load_dir(settings.queries_dir)
    return for_api(settings, loaded)


def upgrade_state(settings: Settings) -> None:
    """`db upgrade`: the Alembic migrations applied to the state database."""
    use_state_of(settings)
    State.open(settings.db_url)


def grafana_dashboard(
    settings: Settings, names: Sequence[str], datasource: str
) -> tuple[str, queries.LoadResult]:
    """The Grafana dashboard's JSON for the selected queries; broken files are logged."""
    from archiver.dashboards import grafana

    loaded = queries.load_dir(settings.queries_dir)
    for problem in loaded.problems:
        log.error("%s", problem)
    selected = queries.select(loaded.queries, names)
    text = grafana.to_json(grafana.dashboard(selected, datasource))
    return text, queries.LoadResult(selected, loaded.problems)


def scheduled_pass(
    read_settings: Callable[[], Settings],
    names: Sequence[str],
    shard: sharding.Shard | None,
    options: PassOptions,
    stop: threading.Event,
) -> Callable[[], PassOutcome]:
    """One incremental pass of `schedule`, as a job for `cron.run_forever`.

    The settings (secret files included) and the query files are read afresh at every pass: a
    key rotated through a mounted secret, or a query file fixed, is used at the next tick. No
    failure ends the loop; the scheduler logs each pass's outcome in one line.
    """

    def one_pass() -> PassOutcome:
        try:
            settings = read_settings()
            use_state_of(settings)
            with recorded_failures(settings, "incremental"):
                loaded = load_and_report(settings, names, shard)
            report = run_pass(settings, loaded, None, options, stop)
        except queries.NoQueryFiles as exc:
            return PassOutcome(
                exit_code=ExitCode.USAGE, reason=f"{exc}; add query files to it", nothing_to_do=True
            )
        except ArchiverError as exc:
            return PassOutcome.failure(exit_code_of(exc), str(exc))
        return outcome_of(report)

    return one_pass
