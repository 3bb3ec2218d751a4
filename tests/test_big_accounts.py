"""Big accounts end to end: the CLI (in this process) against the fake NerdGraph server and influxd.

Windows New Relic finds too big are asked again smaller, asynchronous queries are polled, one
file archives many accounts, and every window's inspected count is kept for the cost estimate.
What landed in InfluxDB is compared with the contract's points from the fake's data model.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from alembic import command

from archiver import settings
from archiver.errors import ConfigError
from archiver.state import migrate
from archiver.state.store import State
from archiver.windows import iso
from fakes import events
from fakes.nerdgraph import INSPECTED_PER_ROW, TOO_BIG_MESSAGE
from tests.e2e import ACCOUNT, actual_points, ago, expected_points, floor, parse_iso
from tests.faults import LAG_SECONDS, assert_exact, error_lines, facet_spec, plain_spec, small_spec
from tests.inprocess import InProcessCli


@pytest.fixture
def cli(inprocess_cli: InProcessCli) -> InProcessCli:
    """The CLI in this process, where a process of its own adds nothing (`cli.popen` still
    starts one)."""
    return inprocess_cli


MINUTE_MS = 60_000


def buckets(request, seconds: int = 60) -> int:
    return (request.until_ms - request.since_ms) // (seconds * 1000)


def newest(before: datetime, interval_seconds: int) -> datetime:
    return floor(before - timedelta(seconds=LAG_SECONDS), interval_seconds)


def checkpoint(cli, query: str, target: str, before: datetime, interval: int) -> datetime:
    """The checkpoint `status` shows: the newest complete bucket at the start or end of the run."""
    until = parse_iso(cli.status()[(query, target)]["exported_until"])
    assert until in {newest(before, interval), newest(ago(), interval)}, until
    return until


# -- windows that shrink -----------------------------------------------------------------------


def test_a_facet_query_timing_out_above_n_buckets_archives_exactly_with_smaller_windows(
    cli, fake_nr, influxd, influx_db, queries_dir
):
    start = floor(ago(hours=5), 60)
    spec = facet_spec("busy", influx_db, start)  # LIMIT MAX: the first window is 4 buckets
    spec.write(queries_dir)
    fake_nr.time_out_above(20, "FROM Transaction")

    before = ago()
    result = cli("run")

    assert result.returncode == 0, result.stdout + result.stderr
    outcomes = [(r.outcome, buckets(r)) for r in fake_nr.requests]
    assert outcomes[0] == ("ok", 4)  # the first window: 20,000 rows at most at LIMIT MAX
    # Then windows sized by its answer, refused and asked again with half the buckets, alone
    # (the windows asked with it would be refused too) until New Relic answers one.
    refused = list(itertools.takewhile(lambda asked: asked[0] == "too_big", outcomes[1:]))
    sizes = [size for _, size in refused]
    assert len(sizes) >= 2 and all(b == a // 2 for a, b in itertools.pairwise(sizes)), outcomes
    answered = 1 + len(refused)
    assert outcomes[answered] == ("ok", sizes[-1] // 2) and sizes[-1] // 2 <= 20, outcomes
    smaller = sizes[-1] // 2
    after = outcomes[answered:]
    assert all(size <= smaller for _, size in after), "the smaller size was forgotten"
    assert {outcome for outcome, _ in after} == {"ok"}
    until = checkpoint(cli, "busy", f"{influx_db}.autogen", before, 60)
    assert_exact(influxd, spec, start, until)
    assert "retrying" not in result.stderr  # a shrink is not a retry

    # The next run (here a backfill of the same range) starts at the size New Relic answered.
    fake_nr.reset_log()
    again = cli("run", "--since", iso(start), "--until", iso(start + timedelta(hours=2)))
    assert again.returncode == 0, again.stdout + again.stderr
    again_asked = [(r.outcome, buckets(r)) for r in fake_nr.requests]
    assert again_asked[0] == ("ok", smaller) and {outcome for outcome, _ in again_asked} == {"ok"}
    assert all(size <= smaller for _, size in again_asked)
    assert_exact(influxd, spec, start, until)


def test_a_window_timing_out_even_at_one_bucket_fails_only_that_query(
    cli, fake_nr, influxd, influx_db, queries_dir
):
    start = floor(ago(hours=3), 300)
    good = small_spec("logins", influx_db, start)
    bad = plain_spec("pages", influx_db, start)
    for spec in (good, bad):
        spec.write(queries_dir)
    fake_nr.time_out_above(0, "FROM PageView")

    before = ago()
    result = cli("run", ARCHIVER_RETRY_BASE_SECONDS="0.01")

    assert result.returncode == 1
    asked = [(r.outcome, buckets(r)) for r in fake_nr.requests if "PageView" in r.nrql]
    assert {outcome for outcome, _ in asked} == {"too_big"}
    sizes = [size for _, size in asked]
    halves, ones = sizes[: sizes.index(1)], sizes[sizes.index(1) :]
    assert all(later == earlier // 2 for earlier, later in itertools.pairwise([*halves, 1]))
    assert ones == [1] * 6  # at one bucket: retried like a transient failure, 6 attempts
    [error] = error_lines(result.stdout + result.stderr)
    assert "pages" in error and TOO_BIG_MESSAGE in error
    status, status_key = cli.status(), f"{influx_db}.autogen"
    assert status[("pages", f"{influx_db}.autogen")]["exported_until"] is None
    assert status[("pages", f"{influx_db}.autogen")]["last_status"] == "failed"
    assert_exact(influxd, good, start, checkpoint(cli, "logins", status_key, before, 300))
    assert actual_points(influxd, bad) == {}


# -- asynchronous queries ----------------------------------------------------------------------


def test_an_async_query_that_needs_several_polls_archives_exactly(
    cli, fake_nr, influxd, influx_db, queries_dir
):
    start = floor(ago(hours=2), 300)
    spec = small_spec("logins", influx_db, start)
    spec.write(queries_dir)
    fake_nr.set_async(polls=3, retry_after=0.05, retry_deadline=30)

    before = ago()
    result = cli("run", NEW_RELIC_ASYNC="true", NEW_RELIC_QUERY_TIMEOUT="120")

    assert result.returncode == 0, result.stdout + result.stderr
    outcomes = [r.outcome for r in fake_nr.requests]
    assert outcomes == ["async_started", "async_running", "async_running", "ok"]
    assert_exact(
        influxd, spec, start, checkpoint(cli, "logins", f"{influx_db}.autogen", before, 300)
    )
    [metrics] = influxd.points(influx_db, "nr_archiver")
    assert metrics["fields"]["nr_requests"] == 4 and metrics["fields"]["retries"] == 0


def test_query_timeout_outside_1_to_120_is_refused(cli, queries_dir, influx_db):
    small_spec("logins", influx_db, ago(hours=1)).write(queries_dir)
    result = cli("run", NEW_RELIC_QUERY_TIMEOUT="121")
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "nr-archiver: error: NEW_RELIC_QUERY_TIMEOUT must be a whole number of seconds "
        "from 1 to 120, not '121'"
    )


# -- many accounts from one file ---------------------------------------------------------------


def test_a_three_account_file_archives_three_tagged_copies_each_with_its_own_checkpoint(
    cli, fake_nr, influxd, influx_db, queries_dir
):
    accounts = [ACCOUNT, 2222222, 3333333]
    fake_nr.accounts.update(accounts)
    start = floor(ago(hours=3), 300)
    spec = small_spec("logins", influx_db, start)
    spec = replace(spec, extra={**spec.extra, "account_ids": accounts})
    spec.write(queries_dir)

    before = ago()
    result = cli("run")

    assert result.returncode == 0, result.stdout + result.stderr
    target = f"{influx_db}.autogen"
    until = checkpoint(cli, f"logins@{ACCOUNT}", target, before, 300)
    expected = {}
    for account in accounts:
        expected |= expected_points(replace(spec, tags={"account_id": str(account)}), start, until)
    assert actual_points(influxd, spec) == expected
    assert len(expected) == 3 * len(expected_points(spec, start, until))
    assert {r.account_id for r in fake_nr.requests} == set(accounts)
    status = cli.status()
    assert {key for key in status if key[0].startswith("logins")} == {
        (f"logins@{account}", target) for account in accounts
    }
    assert {status[(f"logins@{a}", target)]["exported_until"] for a in accounts} == {iso(until)}
    metrics = influxd.points(influx_db, "nr_archiver")
    assert sorted(row["tags"]["query"] for row in metrics) == [f"logins@{a}" for a in accounts]

    # `reset` moves the checkpoint of every account; the next run asks each account again.
    reset = cli("reset", "--query", "logins", "--to", iso(until - timedelta(minutes=30)))
    assert reset.returncode == 0, reset.stderr
    assert len(reset.stdout.splitlines()) == 3
    fake_nr.reset_log()
    assert cli("run").returncode == 0
    assert sorted(r.account_id for r in fake_nr.requests) == sorted(accounts)

    # A backfill runs per account too, and leaves every checkpoint where it was.
    fake_nr.reset_log()
    backfill = cli("run", "--since", iso(start), "--until", iso(start + timedelta(hours=1)))
    assert backfill.returncode == 0, backfill.stdout + backfill.stderr
    assert sorted(r.account_id for r in fake_nr.requests) == sorted(accounts)
    assert {r.since_ms for r in fake_nr.requests} == {int(start.timestamp() * 1000)}
    # (the run after the reset may have gone past `until` if a 5-minute boundary passed)
    status = cli.status()
    [latest] = {status[(f"logins@{a}", target)]["exported_until"] for a in accounts}
    expected = {}
    for account in accounts:
        tagged = replace(spec, tags={"account_id": str(account)})
        expected |= expected_points(tagged, start, parse_iso(latest))
    assert actual_points(influxd, spec) == expected


def test_dry_run_and_shard_plan_each_account(cli, fake_nr, influx_db, queries_dir):
    spec = small_spec("logins", influx_db, floor(ago(hours=1), 300))
    replace(spec, extra={**spec.extra, "account_ids": [5, 6]}).write(queries_dir)
    result = cli("run", "--dry-run", "--shard", "0/1")
    assert result.returncode == 0, result.stderr
    heads = [line for line in result.stdout.splitlines() if not line.startswith(" ")]
    assert [re.search(r"^(\S+) → .*account (\d+)\)", h).groups() for h in heads] == [
        ("logins@5", "5"),
        ("logins@6", "6"),
    ]
    assert "account_id=" not in result.stdout  # NRQL unchanged: the tag is added on our side
    assert fake_nr.requests == []


# -- what it costs -----------------------------------------------------------------------------


def test_every_window_records_its_inspected_count_and_dry_run_estimates_the_cost(
    cli, fake_nr, influxd, influx_db, queries_dir, state_path
):
    start = floor(ago(hours=6), 300)
    spec = small_spec("logins", influx_db, start)
    spec.write(queries_dir)

    before = ago()
    assert cli("run").returncode == 0
    until = checkpoint(cli, "logins", f"{influx_db}.autogen", before, 300)
    points = len(actual_points(influxd, spec))
    rows = points  # count(*) never leaves a Login row without a field
    [metrics] = influxd.points(influx_db, "nr_archiver")
    assert metrics["fields"]["inspected"] == INSPECTED_PER_ROW * rows
    engine = sa.create_engine(f"sqlite:///{state_path}")
    with engine.connect() as conn:
        logged = conn.execute(sa.text("SELECT inspected FROM windows")).scalars().all()
    engine.dispose()
    assert logged and None not in logged and sum(logged) == INSPECTED_PER_ROW * rows

    plan = cli("run", "--dry-run", "--since", iso(start), "--until", iso(until))
    assert plan.returncode == 0, plan.stderr
    [cost] = [line.strip() for line in plan.stdout.splitlines() if "cost:" in line]
    windows = sum(1 for line in plan.stdout.splitlines() if line.startswith("  ["))
    assert cost == (
        f"cost: {windows} New Relic request(s) at least; estimated from earlier windows: "
        f"~{INSPECTED_PER_ROW * rows:,} events inspected, ~{points:,} points"
    )


def test_dry_run_without_an_earlier_run_has_no_estimate(cli, influx_db, queries_dir):
    small_spec("logins", influx_db, floor(ago(hours=1), 300)).write(queries_dir)
    plan = cli("run", "--dry-run")
    assert "no earlier run of this query to estimate from" in plan.stdout


# -- the state database of the previous release ----------------------------------------------


@pytest.fixture(params=["sqlite", "postgresql"])
def old_db_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'old.db'}"
    url = request.getfixturevalue("postgres_url")
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
    engine.dispose()
    return url


def test_a_state_db_at_0003_upgrades_keeping_checkpoints_progress_and_windows(old_db_url):
    engine = migrate.make_engine(old_db_url)
    config = migrate._alembic_config()
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, "0003")  # the revision before window costs
        conn.execute(
            sa.text("INSERT INTO checkpoints VALUES ('q', 'db.rp', 1700000000, 1700000100)")
        )
        conn.execute(
            sa.text(
                "INSERT INTO runs (id, kind, started_at, host, pid) "
                "VALUES (1, 'incremental', 1700000000, 'h', 1)"
            )
        )
        conn.execute(
            sa.text(
                "INSERT INTO exports (id, run_id, query, target, status, started_at) "
                "VALUES (1, 1, 'q', 'db.rp', 'ok', 1700000000)"
            )
        )
        conn.execute(
            sa.text(
                "INSERT INTO windows (export_id, query, target, since, until, points, written_at) "
                "VALUES (1, 'q', 'db.rp', 1699996400, 1700000000, 60, 1700000000)"
            )
        )
        conn.execute(
            sa.text(
                "INSERT INTO backfills (id, query, target, since_spec, until_spec, range_since, "
                "range_until, status, started_at, updated_at) VALUES (7, 'q', 'db.rp', "
                "'1600000000', '1600007200', 1600000000, 1600007200, 'open', 1700000000, "
                "1700000000)"
            )
        )
        conn.execute(
            sa.text(
                "INSERT INTO backfill_progress (query, target, since, until, updated_at, "
                "backfill_id) VALUES ('q', 'db.rp', 1600000000, 1600003600, 1700000000, 7)"
            )
        )
    engine.dispose()

    state = State.open(old_db_url)  # upgrades to head

    assert state.is_migrated()
    assert state.checkpoint("q", "db.rp") == datetime.fromtimestamp(1700000000, UTC)
    assert state.backfill_done("q", "db.rp", ("1600000000", "1600007200")) == [
        (datetime.fromtimestamp(1600000000, UTC), datetime.fromtimestamp(1600003600, UTC))
    ]
    assert state.bucket_cap("q", "db.rp") is None
    costs = state.window_costs("q", "db.rp")
    assert costs is not None and (costs.seconds, costs.points, costs.inspected) == (3600, 60, None)
    assert costs.estimate(7200) == (120, None)
    state.engine.dispose()


def test_an_events_query_per_account_tags_every_event_and_logs_what_each_window_inspected(
    cli, fake_nr, influxd, influx_db, queries_dir, state_path
):
    accounts = [ACCOUNT, 2222222]
    fake_nr.accounts.update(accounts)
    (queries_dir / "busy.yaml").write_text(
        "nrql: SELECT duration, name, appName, host FROM BusyTransaction\n"
        "mode: events\ntag_attributes: [appName, host]\n"
        f"account_ids: {accounts}\nmeasurement: nr_busy\ndatabase: {influx_db}\n"
    )
    since, until = floor(ago(hours=2), 60), floor(ago(hours=1) - timedelta(minutes=20), 60)
    result = cli("run", "--since", iso(since), "--until", iso(until))
    assert result.returncode == 0, result.stdout + result.stderr

    rows = influxd.query(
        'SELECT count("duration") FROM "nr_busy" GROUP BY "account_id"', db=influx_db
    )
    counts = {row["account_id"]: row["count"] for row in rows}
    expected = events.events(
        "BusyTransaction", int(since.timestamp() * 1000), int(until.timestamp() * 1000)
    )
    durations = sum(1 for event in expected if event.get("duration") is not None)
    assert counts == {str(a): durations for a in accounts}
    engine = sa.create_engine(f"sqlite:///{state_path}")
    with engine.connect() as conn:
        logged = conn.execute(sa.text("SELECT query, inspected FROM windows")).all()
    engine.dispose()
    assert {query for query, _ in logged} == {f"busy@{a}" for a in accounts}
    asked = [r for r in fake_nr.requests if r.outcome == "ok"]
    rows_answered = sum(inspected for _, inspected in logged) // INSPECTED_PER_ROW
    assert None not in {inspected for _, inspected in logged}
    assert len(asked) >= 2 * len(accounts) and rows_answered > 2 * 5000  # split, and all counted


# -- settings ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "timeout", "is_async"),
    [
        pytest.param({}, 60, False, id="defaults"),
        pytest.param({"NEW_RELIC_QUERY_TIMEOUT": "1"}, 1, False, id="lowest"),
        pytest.param(
            {"NEW_RELIC_QUERY_TIMEOUT": "120", "NEW_RELIC_ASYNC": "TRUE"}, 120, True, id="highest"
        ),
    ],
)
def test_query_timeout_and_async_settings(env, timeout, is_async):
    loaded = settings.load(env)
    assert (loaded.query_timeout, loaded.async_queries) == (timeout, is_async)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        pytest.param({"NEW_RELIC_QUERY_TIMEOUT": "0"}, "from 1 to 120, not '0'", id="zero"),
        pytest.param({"NEW_RELIC_QUERY_TIMEOUT": "5s"}, "from 1 to 120, not '5s'", id="unit"),
        pytest.param(
            {"NEW_RELIC_ASYNC": "yes"}, "NEW_RELIC_ASYNC must be one of true, false", id="async"
        ),
    ],
)
def test_bad_query_timeout_or_async_is_a_config_error(env, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        settings.load(env)
