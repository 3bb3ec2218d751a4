"""Command line: parse options, call the library, turn known errors into one line + exit code.

`program()` is the program without error handling; `main()` owns the mapping of exceptions
to exit codes (the contract: 0 ok, 1 some query failed, 2 usage/config, 130 interrupted).
"""

from __future__ import annotations

import argparse
import logging
import sys
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from archiver import __version__, logs
from archiver.dashboards import DEFAULT_DATABASE, DEFAULT_DATASOURCE_UID
from archiver.errors import ArchiverError, AuthError, ConfigError, ExitCode, StateError
from archiver.settings import ENVIRONMENT_HELP, Settings, load
from archiver.wording import plural

if TYPE_CHECKING:  # the command handlers import these when they run: `--help` and `health`
    from archiver.app import PassOptions  # stay fast (tests/test_cli.py)
    from archiver.pipeline.runner import Backfill, PlannedJob
    from archiver.pipeline.sharding import Shard
    from archiver.schedule.cron import PassOutcome
    from archiver.windows import Window

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
        epilog=ENVIRONMENT_HELP,
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
    reset.add_argument(
        "--dry-run",
        action="store_true",
        help="print the old and new value, change nothing (--to must not be in the future; "
        "it is aligned down to the target's interval)",
    )

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
        help="one pass at start, then one at every tick of ARCHIVER_SCHEDULE "
        "(default '0 * * * *') until SIGTERM; no failure stops it",
        description="The container's loop: one incremental pass at start, then one at every "
        "tick of the cron schedule (UTC) until SIGTERM, with a heartbeat file for `health`. "
        "Settings and secret files are read afresh at every pass; no failure stops the loop.",
    )
    schedule.add_argument(
        "--cron", metavar="EXPR", help="cron expression (default: $ARCHIVER_SCHEDULE)"
    )
    at_start = schedule.add_mutually_exclusive_group()
    at_start.add_argument(
        "--run-at-start",
        dest="run_at_start",
        action="store_true",
        default=True,
        help="run one pass at start, before the first tick (the default)",
    )
    at_start.add_argument(
        "--no-run-at-start",
        dest="run_at_start",
        action="store_false",
        help="wait for the first tick before the first pass",
    )
    add_run_options(schedule, backfill=False)

    verify = commands.add_parser(
        "verify",
        parents=[common],
        help="ask New Relic again and compare with what InfluxDB holds; --repair fixes it",
        description="Compare the archive with New Relic, window by window, for every query "
        "and target, from its start (or what New Relic still holds) to its checkpoint. "
        "Costs one New Relic request per window verified.",
    )
    add_verify_options(verify)

    commands.add_parser(
        "health",
        parents=[common],
        help="exit 0 if the scheduler's heartbeat is fresh and its last pass did not fail "
        "as a whole (HEALTHCHECK)",
        description="Exit 0 while the heartbeat file of `schedule` (ARCHIVER_HEARTBEAT_FILE) "
        "shows its next pass is not overdue and its last pass exported something (or had "
        "nothing to do); exit 1 otherwise, with the reason in one line. The Docker HEALTHCHECK.",
    )
    add_dashboard_commands(commands, common)
    return parser


def add_dashboard_commands(commands: argparse._SubParsersAction, common: argparse.ArgumentParser):
    import_cmd = commands.add_parser(
        "import",
        parents=[common],
        help="write query files from a New Relic dashboard's widgets",
        description="Write query files from what New Relic already holds (today: dashboards).",
    )
    what = import_cmd.add_subparsers(dest="import_what", required=True, metavar="WHAT")
    dashboard = what.add_parser(
        "dashboard",
        parents=[common],
        help="one query file per widget query of the dashboard GUID (read through NerdGraph)",
        description="Read the dashboard GUID through NerdGraph and write one query file per "
        "widget query: time clauses removed, interval from the widget's TIMESERIES, names from "
        "the page and widget titles. Widgets that cannot be archived are listed with the reason. "
        "Never overwrites a file without --force; every file written passes `validate`.",
    )
    dashboard.add_argument("guid", metavar="GUID", help="the dashboard's entity GUID")
    dashboard.add_argument("--page", metavar="NAME", help="only this page of the dashboard")
    dashboard.add_argument(
        "--out", type=Path, metavar="DIR", help="folder to write to (default: the queries folder)"
    )
    dashboard.add_argument(
        "--database",
        default=DEFAULT_DATABASE,
        metavar="DB",
        help=f"InfluxDB database of the files ({DEFAULT_DATABASE})",
    )
    dashboard.add_argument(
        "--retention-policy", metavar="RP", help="retention policy (default: the database's)"
    )
    dashboard.add_argument("--force", action="store_true", help="overwrite existing files")
    dashboard.add_argument(
        "--dry-run", action="store_true", help="print the files instead of writing them"
    )

    grafana_cmd = commands.add_parser(
        "grafana",
        parents=[common],
        help="write a Grafana dashboard (JSON) of the archived series and of the archiver",
        description="Write a Grafana dashboard: one panel per (query, target) reading the "
        "archived measurement with InfluxQL, a variable per facet tag, and a row for the "
        "archiver itself from nr_archiver (lag, failures, points, New Relic requests).",
    )
    grafana_cmd.add_argument(
        "--out", metavar="FILE", default="-", help="where to write the JSON (default: stdout)"
    )
    grafana_cmd.add_argument(
        "--datasource",
        metavar="UID",
        default=DEFAULT_DATASOURCE_UID,
        help=f"UID of the InfluxDB (InfluxQL) data source ({DEFAULT_DATASOURCE_UID})",
    )
    grafana_cmd.add_argument(
        "--query", action="append", default=[], metavar="NAME", help="only this query (repeatable)"
    )


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


def add_verify_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--query", action="append", default=[], metavar="NAME", help="only this query (repeatable)"
    )
    parser.add_argument("--since", metavar="TIME", help="verify from TIME (ISO, epoch, 7d)")
    parser.add_argument(
        "--until", metavar="TIME", help="verify up to TIME (never past the checkpoint)"
    )
    parser.add_argument(
        "--sample",
        type=positive_int,
        metavar="N",
        help="verify only N windows per target, chosen at random (the output lists them)",
    )
    parser.add_argument(
        "--seed", type=int, metavar="N", help="seed of --sample's random choice (reproducible)"
    )
    parser.add_argument(
        "--repair",
        action="store_true",
        help="write missing and different points again (checkpoints do not move), then verify "
        "the repaired windows again",
    )
    parser.add_argument(
        "--prune",
        action="store_true",
        help="with --repair: also delete the points of the query's series New Relic does not have",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument(
        "--workers", type=positive_int, default=4, help="targets verified in parallel (4)"
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
        help="New Relic requests per minute at most (1000)",
    )
    parser.add_argument(
        "--no-self-metrics",
        dest="self_metrics",
        action="store_false",
        help="do not write the nr_archiver kind=verify points",
    )


def positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of at least 1")
    return int(text)


def shard_argument(text: str) -> Shard:
    from archiver.pipeline import sharding

    try:
        return sharding.parse_shard(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


# -- commands ------------------------------------------------------------------------------


def backfill_from(args: argparse.Namespace, now: datetime) -> Backfill | None:
    from archiver.pipeline.runner import Backfill

    since, until = getattr(args, "since", None), getattr(args, "until", None)
    if since is None:
        if until is not None:
            raise ConfigError("--until needs --since")
        return None
    try:
        backfill = Backfill.parse(since, until, now)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if backfill.until is not None and backfill.until <= backfill.since:
        raise ConfigError(f"--until {until} is not after --since {since}")
    return backfill


def pass_options(args: argparse.Namespace) -> PassOptions:
    from archiver.app import PassOptions

    return PassOptions(
        workers=args.workers,
        max_concurrent=args.max_concurrent,
        requests_per_minute=args.requests_per_minute,
        self_metrics=args.self_metrics,
        output=getattr(args, "output", None),
    )


def cmd_run(args: argparse.Namespace, settings: Settings, stop: threading.Event) -> int:
    from archiver import app

    backfill = backfill_from(args, datetime.now(UTC))
    dry_run = getattr(args, "dry_run", False)
    kind = "backfill" if backfill else "incremental"
    record = not dry_run and not getattr(args, "output", None)
    with app.recorded_failures(settings, kind, record=record):
        loaded = app.load_and_report(settings, args.query, args.shard)
    if dry_run:
        print_plan(app.plan_pass(settings, loaded, backfill))
        return ExitCode.QUERY_FAILED if loaded.problems else ExitCode.OK
    options = pass_options(args)
    if options.output:
        log.info("writing line protocol to %s instead of InfluxDB", options.output)
    report = app.run_pass(settings, loaded, backfill, options, stop)
    log.info("run finished: %s", app.outcome_of(report).summary)
    return report.exit_code


def print_plan(plan: Iterable[tuple[PlannedJob, list[Window]]]) -> None:
    from archiver.timeparse import format_duration

    for job, planned in plan:
        target = job.target
        print(
            f"{job.name} → {target.key} (database {target.database}, retention policy "
            f"{target.retention_policy or 'default'}, every {format_duration(target.interval)}, "
            f"account {job.account_id}): {plural(len(planned), 'window')}"
        )
        for note in job.skipped:
            print(f"  {note}")
        print(f"  {cost_line(job, planned)}")
        for window in planned:
            print(f"  {window}: {job.query.nrql_for(window.since, window.until, target.interval)}")


def cmd_verify(args: argparse.Namespace, settings: Settings) -> int:
    from archiver import app
    from archiver.timeparse import parse_time
    from archiver.verify import command as verify
    from archiver.verify import report as verify_report

    if args.prune and not args.repair:
        raise ConfigError("--prune deletes points only as part of a repair: add --repair")
    now = datetime.now(UTC)
    try:
        since = parse_time(args.since, now) if args.since else None
        until = parse_time(args.until, now) if args.until else None
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if since is not None and until is not None and until <= since:
        raise ConfigError(f"--until {args.until} is not after --since {args.since}")
    loaded = app.load_and_report(settings, args.query)
    options = verify.VerifyOptions(
        since=since,
        until=until,
        sample=args.sample,
        seed=args.seed,
        repair=args.repair,
        prune=args.prune,
        workers=args.workers,
        max_concurrent=args.max_concurrent,
        requests_per_minute=args.requests_per_minute,
        self_metrics=args.self_metrics,
    )
    report = verify.verify_pass(settings, loaded.queries, options)
    print(verify_report.to_json(report) if args.json else verify_report.to_table(report))
    if loaded.problems:
        return ExitCode.QUERY_FAILED
    return report.exit_code


def cost_line(job: PlannedJob, planned: list[Window]) -> str:
    """What the plan will cost: requests, and from earlier windows events and points."""
    line = f"cost: {len(planned)} New Relic request(s) at least"
    if job.costs is None or not planned:
        return line + "; no earlier run of this query to estimate from"
    points, inspected = job.costs.estimate(job.seconds)
    seen = "unknown" if inspected is None else f"~{inspected:,}"
    return f"{line}; estimated from earlier windows: {seen} events inspected, ~{points:,} points"


def cmd_validate(args: argparse.Namespace, settings: Settings) -> int:
    from archiver import app

    loaded = app.validate(settings, args.files)
    for problem in loaded.problems:
        print(problem)
    print(
        f"{plural(len(loaded.queries), 'valid query', 'valid queries')}, "
        f"{plural(len(loaded.problems), 'problem')}"
    )
    return ExitCode.QUERY_FAILED if loaded.problems else ExitCode.OK


def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    from archiver import status

    result = status.report(settings.db_url, settings.queries_dir, datetime.now(UTC))
    if result.folder_problem:
        print(f"nr-archiver: warning: {result.folder_problem}", file=sys.stderr)
    if args.json:
        text = status.to_json(result.rows)
    else:
        text = status.to_table(result.rows, result.last_pass) + status.verify_section(result.rows)
    # errors are stored redacted; this also covers those stored by an older release
    print(logs.redact(text))
    return ExitCode.OK


def cmd_reset(args: argparse.Namespace, settings: Settings) -> int:
    from archiver.reset import reset_checkpoints

    moves = reset_checkpoints(
        settings.db_url, settings.queries_dir, args.query, args.target, args.to,
        datetime.now(UTC), dry_run=args.dry_run,
        default_account=settings.new_relic_account_id,
    )  # fmt: skip
    for move in moves:
        print(f"{move}{' (dry run: nothing changed)' if args.dry_run else ''}")
    return ExitCode.OK


def cmd_db(args: argparse.Namespace, settings: Settings) -> int:
    from archiver import app

    app.upgrade_state(settings)
    print("state database is at the latest schema")
    return ExitCode.OK


def cmd_schedule(args: argparse.Namespace, settings: Settings) -> int:
    from archiver.schedule import cron

    stop = threading.Event()
    cron.install_signal_handlers(stop)
    job = scheduled_pass(args, stop)
    return cron.run_forever(
        settings.schedule,
        job,
        stop=stop,
        run_at_start=args.run_at_start,
        heartbeat_file=settings.heartbeat_file,
    )


def scheduled_pass(
    args: argparse.Namespace, stop: threading.Event, env: Mapping[str, str] | None = None
) -> Callable[[], PassOutcome]:
    """One incremental pass of `schedule` (`app.scheduled_pass`) with the command's options.

    The settings are read afresh from `env` (default: the environment) at every pass.
    """
    from archiver import app

    return app.scheduled_pass(
        lambda: settings_from(args, env), args.query, args.shard, pass_options(args), stop
    )


def cmd_health(args: argparse.Namespace, settings: Settings) -> int:
    from archiver.schedule import cron

    healthy, message = cron.health(settings.heartbeat_file)
    print(message)
    return ExitCode.OK if healthy else ExitCode.QUERY_FAILED


def settings_from(args: argparse.Namespace, env: Mapping[str, str] | None = None) -> Settings:
    """The environment's settings; `--queries-dir`, `--db-url` and `--cron` win over it."""
    return load(
        env,
        queries_dir=getattr(args, "queries_dir", None),
        db_url=getattr(args, "db_url", None),
        schedule=getattr(args, "cron", None),
    )


def cmd_import(args: argparse.Namespace, settings: Settings) -> int:
    from archiver.dashboards import importer

    options = importer.Options(
        out=args.out or settings.queries_dir,
        database=args.database,
        retention_policy=args.retention_policy,
        page=args.page,
    )
    plan = importer.fetch_and_plan(settings, args.guid, options)
    if args.dry_run:
        for planned in plan.files:
            print(f"--- {planned.path}{' (replaces the file)' if planned.replaces else ''}")
            print(planned.text)
    else:
        for path in importer.write(plan, force=args.force):
            print(f"wrote {path}")
    for skipped in plan.skipped:
        print(f"not archived: {skipped}")
    verb = "would write" if args.dry_run else "wrote"
    print(
        f"dashboard {plan.dashboard!r}: {verb} {len(plan.files)} query file(s), "
        f"{len(plan.skipped)} widget query(ies) not archivable"
    )
    return ExitCode.OK


def cmd_grafana(args: argparse.Namespace, settings: Settings) -> int:
    from archiver import app

    text, selected = app.grafana_dashboard(settings, args.query, args.datasource)
    if args.out == "-":
        sys.stdout.write(text)
    else:
        try:
            Path(args.out).write_text(text, encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot write {args.out}: {exc.strerror}") from None
        print(f"wrote {args.out}: {len(selected.queries)} queries", file=sys.stderr)
    return ExitCode.QUERY_FAILED if selected.problems else ExitCode.OK


STATE_COMMANDS = ("status", "reset", "db", "verify")  # "run" and "schedule" passes too


def program(args: argparse.Namespace) -> int:
    """The main program without error handling."""
    settings = settings_from(args)
    data_on_stdout = getattr(args, "output", None) == "-"
    data_on_stdout = data_on_stdout or args.command == "verify"  # its report is on stdout
    logs.setup(
        settings.log_level,
        getattr(args, "log_format", "text"),
        stream=sys.stderr if data_on_stdout else None,
    )
    if args.command == "run":
        from archiver import app
        from archiver.schedule import cron

        app.use_state_of(settings)
        # SIGTERM (Kubernetes, docker stop): finish the window being written, release the leases.
        stop = threading.Event()
        cron.install_signal_handlers(stop)
        return cmd_run(args, settings, stop)
    handlers = {
        "validate": cmd_validate,
        "status": cmd_status,
        "reset": cmd_reset,
        "db": cmd_db,
        "schedule": cmd_schedule,
        "health": cmd_health,
        "import": cmd_import,
        "grafana": cmd_grafana,
        "verify": cmd_verify,
    }
    if args.command in STATE_COMMANDS:
        from archiver import app

        app.use_state_of(settings)
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
