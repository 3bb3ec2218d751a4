"""Command line: parse options, call the library, turn known errors into one line + exit code.

`program()` is the program without error handling; `main()` owns the mapping of exceptions
to exit codes (the contract: 0 ok, 1 some query failed, 2 usage/config, 130 interrupted).
"""

from __future__ import annotations

import argparse
import logging
import sys
import threading
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from archiver import __version__, config, logs, scheduler, sharding
from archiver.errors import (
    ArchiverError,
    AuthError,
    ConfigError,
    ExitCode,
    StateError,
)
from archiver.timeparse import format_duration, parse_time
from archiver.windows import Window, iso
from archiver.wording import plural

# Imported where a command needs them, so that `--help`, `health` and `validate` start without
# SQLAlchemy, Alembic or the HTTP clients (bench/README.md: start-up).
if TYPE_CHECKING:
    from archiver import queries
    from archiver.runner import Backfill, PlannedJob

log = logging.getLogger("archiver")


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--log-format",
        choices=("text", "json"),
        default=argparse.SUPPRESS,
        help="log lines as text (default) or one JSON object per line",
    )
    common.add_argument(
        "--queries-dir",
        metavar="DIR",
        default=argparse.SUPPRESS,
        help="folder of query files (default: $ARCHIVER_QUERIES_DIR, else queries)",
    )
    common.add_argument(
        "--db-url",
        metavar="URL",
        default=argparse.SUPPRESS,
        help="SQLAlchemy URL of the state database "
        "(default: $ARCHIVER_DB_URL, else sqlite:///archiver.db)",
    )
    parser = argparse.ArgumentParser(
        prog="nr-archiver",
        description="Copy New Relic NRQL results into InfluxDB, window by window, checkpointed.",
        parents=[common],
        epilog=config.ENVIRONMENT_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser(
        "run",
        parents=[common],
        help="export every complete window since the last run (or --since: backfill), then exit",
        description="One pass over the query files. With --since, backfill that past range.",
    )
    add_run_options(run)

    validate = commands.add_parser(
        "validate",
        parents=[common],
        help="check query files without touching New Relic or InfluxDB",
        description="Check query files without touching New Relic or InfluxDB: YAML, keys, "
        "types, NRQL time clauses, names InfluxDB would reject. One line per problem, naming "
        "the file and the key; exit 1 if there is any.",
    )
    validate.add_argument(
        "files",
        nargs="*",
        type=Path,
        metavar="FILE",
        help="a query file to check (default: every *.yaml/*.yml file of the queries folder)",
    )

    status_cmd = commands.add_parser(
        "status",
        parents=[common],
        help="exported-until, lag, last result and error per target",
        description="Per query and target: how far it is exported, the lag behind now, when "
        "it last ran, its result and its error.",
    )
    status_cmd.add_argument("--json", action="store_true", help="print JSON instead of a table")

    reset = commands.add_parser(
        "reset",
        parents=[common],
        help="move a checkpoint on purpose (prints old and new value)",
        description="Move the checkpoint of a query (every target, or only --target) to TIME; "
        "the next run exports from there. Prints the old and the new value.",
    )
    reset.add_argument(
        "--query",
        required=True,
        metavar="NAME",
        help="the query's name (its file's stem unless the file sets `name`)",
    )
    reset.add_argument("--target", metavar="TARGET", help="target key (default: every target)")
    reset.add_argument("--to", required=True, metavar="TIME", help="ISO 8601, epoch or age (7d)")

    db = commands.add_parser(
        "db",
        parents=[common],
        help="state database maintenance",
        description="State database maintenance (the database of --db-url / ARCHIVER_DB_URL).",
    )
    db_commands = db.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    db_commands.add_parser(
        "upgrade",
        parents=[common],
        help="apply the Alembic migrations",
        description="Apply the Alembic migrations to the state database; every command "
        "applies them too, so this only migrates ahead of a deployment.",
    )

    schedule = commands.add_parser(
        "schedule",
        parents=[common],
        help="run `run` at every tick of ARCHIVER_SCHEDULE (default '0 * * * *') until SIGTERM",
        description="The container's loop: one incremental pass at every tick of the cron "
        "schedule (UTC) until SIGTERM, with a heartbeat file for `health`.",
    )
    schedule.add_argument(
        "--cron", metavar="EXPR", help="cron expression (default: $ARCHIVER_SCHEDULE)"
    )
    schedule.add_argument(
        "--run-at-start", action="store_true", help="also run one pass immediately"
    )
    add_run_options(schedule, backfill=False)

    commands.add_parser(
        "health",
        parents=[common],
        help="exit 0 if the scheduler's heartbeat is fresh (HEALTHCHECK)",
        description="Exit 0 while the heartbeat file of `schedule` (ARCHIVER_HEARTBEAT_FILE) "
        "shows its next pass is not overdue; exit 1 otherwise. The Docker HEALTHCHECK.",
    )
    return parser


def add_run_options(parser: argparse.ArgumentParser, *, backfill: bool = True) -> None:
    parser.add_argument(
        "--query",
        action="append",
        default=[],
        metavar="NAME",
        help="only this query (repeatable)",
    )
    parser.add_argument(
        "--shard",
        type=shard_argument,
        metavar="I/N",
        help="only the queries of shard I of N (0 <= I < N, by a stable hash of the name)",
    )
    parser.add_argument(
        "--workers", type=positive_int, default=4, help="queries run in parallel (4)"
    )
    parser.add_argument(
        "--no-self-metrics",
        dest="self_metrics",
        action="store_false",
        help="do not write the run's own nr_archiver measurement",
    )
    parser.add_argument(
        "--max-concurrent",
        type=positive_int,
        default=5,
        help="concurrent New Relic requests at most (5, as New Relic asks)",
    )
    parser.add_argument(
        "--requests-per-minute",
        type=positive_int,
        default=1000,
        help="New Relic requests per minute at most (1000; the account limit is 3000)",
    )
    if backfill:
        parser.add_argument(
            "--output",
            metavar="FILE.lp",
            help="write line protocol to FILE.lp (or - for stdout) instead of InfluxDB; "
            "checkpoints are not touched",
        )
        parser.add_argument("--since", metavar="TIME", help="backfill from TIME (ISO, epoch, 7d)")
        parser.add_argument("--until", metavar="TIME", help="backfill up to TIME (default: now)")
        parser.add_argument(
            "--dry-run",
            action="store_true",
            help="print windows, NRQL and targets; touch nothing",
        )


def positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of at least 1")
    return int(text)


def shard_argument(text: str) -> sharding.Shard:
    try:
        return sharding.parse_shard(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


# -- commands ------------------------------------------------------------------------------


def load_queries(
    settings: config.Settings, names: Sequence[str], shard: sharding.Shard | None = None
) -> queries.LoadResult:
    from archiver import queries

    loaded = queries.load_dir(settings.queries_dir)
    selected = queries.select(loaded.queries, names) if names else loaded.queries
    problems = [p for p in loaded.problems if not names or p.query in names]
    if shard is not None:
        selected, problems = shard.queries(selected), shard.problems(problems)
    return queries.LoadResult(selected, problems)


def backfill_from(args: argparse.Namespace, now: datetime) -> Backfill | None:
    from archiver.runner import Backfill

    since, until = getattr(args, "since", None), getattr(args, "until", None)
    if since is None:
        if until is not None:
            raise ConfigError("--until needs --since")
        return None
    try:
        backfill = Backfill(parse_time(since, now), parse_time(until, now) if until else None)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if backfill.until is not None and backfill.until <= backfill.since:
        raise ConfigError(f"--until {until} is not after --since {since}")
    return backfill


def cmd_run(args: argparse.Namespace, settings: config.Settings, stop: threading.Event) -> int:
    from archiver import passes

    loaded = load_queries(settings, args.query, args.shard)
    for problem in loaded.problems:
        log.error("%s", problem)
    backfill = backfill_from(args, datetime.now(UTC))
    if getattr(args, "dry_run", False):
        print_plan(passes.plan_pass(settings, loaded, backfill))
        return ExitCode.QUERY_FAILED if loaded.problems else ExitCode.OK
    if not loaded.queries:
        log.error("no valid query file to run")
        return ExitCode.QUERY_FAILED
    output = getattr(args, "output", None)
    if output:
        log.info("writing line protocol to %s instead of InfluxDB", output)
    options = passes.PassOptions(
        workers=args.workers,
        max_concurrent=args.max_concurrent,
        requests_per_minute=args.requests_per_minute,
        self_metrics=args.self_metrics,
        output=output,
    )
    report = passes.run_pass(settings, loaded, backfill, options, stop)
    log.info(
        "run finished: %s ok, %d failed, %s, %s written",
        plural(sum(job.status == "ok" for job in report.jobs), "target"),
        sum(job.failed for job in report.jobs),
        plural(len(report.problems), "query file problem"),
        plural(sum(job.points for job in report.jobs), "point"),
    )
    return report.exit_code


def print_plan(plan: Iterable[tuple[PlannedJob, list[Window]]]) -> None:
    for job, planned in plan:
        target = job.target
        print(
            f"{job.query.name} → {target.key} (database {target.database}, retention policy "
            f"{target.retention_policy or 'default'}, every {format_duration(target.interval)}, "
            f"account {job.account_id}): {plural(len(planned), 'window')}"
        )
        for note in job.skipped:
            print(f"  {note}")
        for window in planned:
            print(f"  {window}: {job.query.nrql_for(window.since, window.until, target.interval)}")


def cmd_validate(args: argparse.Namespace, settings: config.Settings) -> int:
    from archiver import queries

    loaded = (
        queries.load_files(args.files) if args.files else queries.load_dir(settings.queries_dir)
    )
    for problem in loaded.problems:
        print(problem)
    print(
        f"{plural(len(loaded.queries), 'valid query', 'valid queries')}, "
        f"{plural(len(loaded.problems), 'problem')}"
    )
    return ExitCode.QUERY_FAILED if loaded.problems else ExitCode.OK


def cmd_status(args: argparse.Namespace, settings: config.Settings) -> int:
    from archiver import queries, status
    from archiver.state import State

    known = queries.load_dir(settings.queries_dir).queries if settings.queries_dir.is_dir() else []
    rows = status.collect(State.open(settings.db_url), known, datetime.now(UTC))
    # errors are stored redacted; this also covers those stored by an older release
    print(logs.redact(status.to_json(rows) if args.json else status.to_table(rows)))
    return ExitCode.OK


def cmd_reset(args: argparse.Namespace, settings: config.Settings) -> int:
    from archiver import queries
    from archiver.state import State

    now = datetime.now(UTC)
    query = queries.select(queries.load_dir(settings.queries_dir).queries, [args.query])[0]
    keys = [t.key for t in query.targets]
    if args.target and args.target not in keys:
        raise ConfigError(f"query {query.name!r} has no target {args.target!r}; it has {keys}")
    try:
        to = parse_time(args.to, now)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    state = State.open(settings.db_url)
    for key in [args.target] if args.target else keys:
        old = state.checkpoint(query.name, key)
        state.set_checkpoint(query.name, key, to, now)
        print(f"{query.name} → {key}: checkpoint {iso(old) if old else 'none'} → {iso(to)}")
    return ExitCode.OK


def cmd_db(args: argparse.Namespace, settings: config.Settings) -> int:
    from archiver.state import State

    State.open(settings.db_url)
    print("state database is at the latest schema")
    return ExitCode.OK


def cmd_schedule(args: argparse.Namespace, settings: config.Settings) -> int:
    stop = threading.Event()
    scheduler.install_signal_handlers(stop)
    cron = args.cron or settings.schedule

    def one_pass() -> int:
        try:
            return cmd_run(args, settings_from(args), stop)
        except ArchiverError as exc:
            log.error("%s", exc)
            return ExitCode.USAGE if isinstance(exc, ConfigError) else ExitCode.QUERY_FAILED

    return scheduler.run_forever(cron, one_pass, stop=stop, run_at_start=args.run_at_start)


def cmd_health(args: argparse.Namespace, settings: config.Settings) -> int:
    healthy, message = scheduler.health()
    print(message)
    return ExitCode.OK if healthy else ExitCode.QUERY_FAILED


def settings_from(args: argparse.Namespace) -> config.Settings:
    """The environment's settings; `--queries-dir` and `--db-url` win over it."""
    return config.from_env(
        queries_dir=getattr(args, "queries_dir", None), db_url=getattr(args, "db_url", None)
    )


def program(args: argparse.Namespace) -> int:
    """The main program without error handling."""
    settings = settings_from(args)
    data_on_stdout = getattr(args, "output", None) == "-"
    logs.setup(
        settings.log_level,
        getattr(args, "log_format", "text"),
        stream=sys.stderr if data_on_stdout else None,
    )
    if args.command == "run":
        # SIGTERM (Kubernetes, docker stop): finish the window being written, release the leases.
        stop = threading.Event()
        scheduler.install_signal_handlers(stop)
        return cmd_run(args, settings, stop)
    handlers = {
        "validate": cmd_validate,
        "status": cmd_status,
        "reset": cmd_reset,
        "db": cmd_db,
        "schedule": cmd_schedule,
        "health": cmd_health,
    }
    return handlers[args.command](args, settings)


def main(argv: Sequence[str] | None = None) -> int:
    """Exit code of the command; a reader of stdout that goes away (`| head`) ends it quietly.

    As Python's documentation advises for SIGPIPE: stdout is flushed here, where a
    BrokenPipeError can be caught, then pointed at the null device so that the interpreter's
    own flush at exit cannot fail again; exit 1.
    """
    try:
        try:
            return run_command(argv)
        finally:
            sys.stdout.flush()
    except BrokenPipeError:
        logs.silence(sys.stdout)
        return ExitCode.QUERY_FAILED


def run_command(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(program(args))
    except KeyboardInterrupt:
        print("nr-archiver: interrupted", file=sys.stderr)
        return ExitCode.INTERRUPTED
    except (ConfigError, StateError, AuthError) as exc:
        print(f"nr-archiver: error: {logs.redact(str(exc))}", file=sys.stderr)
        return ExitCode.USAGE
    except ArchiverError as exc:
        print(f"nr-archiver: error: {logs.redact(str(exc))}", file=sys.stderr)
        return ExitCode.QUERY_FAILED
