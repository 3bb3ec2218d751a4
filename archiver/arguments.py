"""The command line's options: `build_parser()`, the `--help` of every command.

Only argparse and light modules here, not even pydantic (`settings` needs it): `--help` must start
fast (tests/test_cli.py).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from archiver import __version__
from archiver.dashboards import DEFAULT_DATABASE, DEFAULT_DATASOURCE_UID

if TYPE_CHECKING:
    from archiver.pipeline.sharding import Shard

# The epilog of `nr-archiver --help`: the variables `settings.Settings` reads (checked by
# tests/test_settings.py); README's Configuration table says more (tests/test_docs.py).
ENVIRONMENT_HELP = """\
environment variables (README.md, "Configuration", says more):
  NEW_RELIC_API_KEY            user key (NRAK-...) for NerdGraph
  NEW_RELIC_ACCOUNT_ID         account of the query files that name none
  NEW_RELIC_REGION             US (default) or EU
  NEW_RELIC_NERDGRAPH_URL      GraphQL URL; overrides the region
  NEW_RELIC_QUERY_KEY          Insights query key (used without an API key)
  NEW_RELIC_INSIGHTS_URL       Insights API URL; overrides the region
  NEW_RELIC_QUERY_TIMEOUT      NerdGraph NRQL timeout, 1-120 s (60)
  NEW_RELIC_ASYNC              true: asynchronous NRQL (Data Plus accounts)
  INFLUX_URL                   InfluxDB URL (http://localhost:8086)
  INFLUX_USERNAME              InfluxDB 1.x user
  INFLUX_PASSWORD              InfluxDB 1.x password
  INFLUX_TOKEN                 InfluxDB 2.x/3.x token
  INFLUX_ORG                   InfluxDB 2.x organisation
  INFLUX_API                   auto (default), v1 or v2
  ARCHIVER_DB_URL              state database (SQLAlchemy URL); --db-url wins
  ARCHIVER_QUERIES_DIR         folder of query files; --queries-dir wins
  ARCHIVER_LOG_LEVEL           DEBUG, INFO (default), WARNING or ERROR
  ARCHIVER_SCHEDULE            cron of schedule (0 * * * *); --cron wins
  ARCHIVER_HEARTBEAT_FILE      heartbeat of schedule, read by health
  ARCHIVER_LEASE_SECONDS       lease of a crashed holder, in seconds (600)
  ARCHIVER_RETRY_BASE_SECONDS  first wait between New Relic retries (1 s)
  ARCHIVER_MIGRATIONS_DIR      where the Alembic migrations are
Each secret (NEW_RELIC_API_KEY, NEW_RELIC_QUERY_KEY, INFLUX_PASSWORD,
INFLUX_TOKEN) may instead be read from the file named by NAME_FILE.
"""


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
    add_new_relic_limits(parser, "1000; the account limit is 3000")
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
    add_new_relic_limits(parser, "1000")
    parser.add_argument(
        "--no-self-metrics",
        dest="self_metrics",
        action="store_false",
        help="do not write the nr_archiver kind=verify points",
    )


def add_new_relic_limits(parser: argparse.ArgumentParser, per_minute_default: str) -> None:
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
        help=f"New Relic requests per minute and account at most ({per_minute_default})",
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
