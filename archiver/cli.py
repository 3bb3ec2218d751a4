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
from typing import TYPE_CHECKING, Any

from archiver import logs
from archiver.arguments import build_parser
from archiver.errors import ArchiverError, AuthError, ConfigError, ExitCode, StateError
from archiver.wording import plural

if TYPE_CHECKING:  # the command handlers import these when they run: `--help` and `health`
    from archiver.app import PassOptions  # stay fast (tests/test_cli.py)
    from archiver.pipeline.plan import Backfill, PlannedJob
    from archiver.schedule.health import PassOutcome
    from archiver.settings import Settings
    from archiver.windows import Window

log = logging.getLogger("archiver")


# -- commands ------------------------------------------------------------------------------


def backfill_from(args: argparse.Namespace, now: datetime) -> Backfill | None:
    from archiver.pipeline.plan import Backfill

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

    return PassOptions(**work_options(args), output=getattr(args, "output", None))


def work_options(args: argparse.Namespace) -> dict[str, Any]:
    """The options `run` and `verify` share (`app.WorkOptions`)."""
    return {
        "workers": args.workers,
        "max_concurrent": args.max_concurrent,
        "requests_per_minute": args.requests_per_minute,
        "self_metrics": args.self_metrics,
    }


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
        **work_options(args),
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
    from archiver.schedule import health

    healthy, message = health.health(settings.heartbeat_file)
    print(message)
    return ExitCode.OK if healthy else ExitCode.QUERY_FAILED


def settings_from(args: argparse.Namespace, env: Mapping[str, str] | None = None) -> Settings:
    """The environment's settings; `--queries-dir`, `--db-url` and `--cron` win over it."""
    from archiver.settings import load  # pydantic: not for `--help`

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
