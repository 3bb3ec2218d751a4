"""The state database on real SQLite and real PostgreSQL (127.0.0.1:5432, database `test`)."""

import random
import threading
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from archiver.errors import StateError
from archiver.state import migrate, schema
from archiver.state.store import State, Written

NOW = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)
MIN = timedelta(minutes=1)


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'state.db'}"
    url = request.getfixturevalue("postgres_url")
    engine = sa.create_engine(url)
    with engine.begin() as conn:  # each test starts from an empty schema
        conn.execute(sa.text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
    engine.dispose()
    return url


@pytest.fixture
def state(db_url):
    s = State.open(db_url)
    yield s
    s.engine.dispose()


def test_migrations_create_exactly_the_tables_the_code_uses(db_url):
    """By Alembic's migrations, not the shortcut a new database takes (`migrate.upgrade`)."""
    s = State.open(db_url, migrate=False)
    config = migrate._alembic_config()
    with s.engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, "head")
    with s.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), schema.metadata)
    assert diff == []
    assert s.is_migrated()


def test_opening_twice_does_not_migrate_again(db_url):
    State.open(db_url)
    State.open(db_url)  # would raise "table already exists" if it re-ran the migration


def test_opening_without_migrating_creates_nothing(tmp_path):
    s = State.open(f"sqlite:///{tmp_path / 'x.db'}", migrate=False)
    assert not s.is_migrated()
    assert sa.inspect(s.engine).get_table_names() == []


def test_checkpoint_only_moves_forward_when_windows_are_recorded(state):
    run = state.start_run("incremental", NOW)
    export = state.start_export(run, "q", "db.rp", NOW)
    state.record_window(export, "q", "db.rp", NOW - 2 * MIN, NOW - MIN, 5, NOW, backfill_id=None)
    assert state.checkpoint("q", "db.rp") == NOW - MIN
    state.record_window(
        export, "q", "db.rp", NOW - 3 * MIN, NOW - 2 * MIN, 5, NOW, backfill_id=None
    )
    assert state.checkpoint("q", "db.rp") == NOW - MIN


def _recorded(state, query):
    """What the state holds of `query`: its windows log, export, progress and checkpoint."""
    t = schema
    with state.engine.connect() as conn:
        log = conn.execute(
            sa.select(
                t.windows_log.c[
                    "since", "until", "points", "written_at", "inspected", "max_buckets"
                ]
            )
            .where(t.windows_log.c.query == query)
            .order_by(t.windows_log.c.since)
        ).all()
        export = conn.execute(
            sa.select(t.exports.c["windows", "points", "until", "inspected"]).where(
                t.exports.c.query == query
            )
        ).all()
        progress = conn.execute(
            sa.select(t.backfill_progress.c["since", "until", "updated_at"])
            .where(t.backfill_progress.c.query == query)
            .order_by(t.backfill_progress.c.since)
        ).all()
        checkpoint = conn.execute(
            sa.select(t.checkpoints.c["exported_until", "updated_at"]).where(
                t.checkpoints.c.query == query
            )
        ).all()
    return log, export, progress, checkpoint


@pytest.mark.parametrize("seed", range(6))
def test_windows_recorded_together_leave_the_state_one_at_a_time_would(state, seed):
    rng = random.Random(seed)
    backfilled = seed % 2 == 0
    groups, since = [], NOW - 600 * MIN
    for _ in range(4):  # groups of windows that mostly follow each other, now and then a gap
        group = []
        for _ in range(rng.randint(1, 6)):
            since += MIN * rng.choice([0, 0, 0, 2])
            until = since + MIN * rng.randint(1, 3)
            group.append(Written(since, until, rng.randint(0, 900), rng.choice([None, 7, 40])))
            since = until
        groups.append(group)
    run = state.start_run("backfill" if backfilled else "incremental", NOW)
    for query, together in (("together", True), ("one_by_one", False)):
        export = state.start_export(run, query, "t", NOW)
        backfill = None
        if backfilled:
            backfill = state.open_backfill(
                query, "t", ("10h", "now"), (NOW - 600 * MIN, NOW), holder="h",
                export_id=export, now=NOW,
            )  # fmt: skip
        for number, group in enumerate(groups):
            at = NOW + number * MIN
            if together:
                state.record_windows(
                    export, query, "t", group, at, backfill_id=backfill, max_buckets=12
                )
            else:
                for window in group:
                    state.record_windows(
                        export, query, "t", [window], at, backfill_id=backfill, max_buckets=12
                    )

    assert _recorded(state, "together") == _recorded(state, "one_by_one")
    assert len(_recorded(state, "together")[0]) == sum(len(group) for group in groups)


def test_backfill_windows_never_touch_the_checkpoint(state):
    run = state.start_run("backfill", NOW)
    export = state.start_export(run, "q", "t", NOW)
    request = ("10m", "now")
    backfill = state.open_backfill(
        "q", "t", request, (NOW - 10 * MIN, NOW), holder="h", export_id=export, now=NOW
    )
    for start in (10, 9, 5):
        since = NOW - start * MIN
        state.record_window(export, "q", "t", since, since + MIN, 1, NOW, backfill_id=backfill)
    assert state.checkpoint("q", "t") is None
    assert sorted(state.backfill_done("q", "t", request)) == [
        (NOW - 10 * MIN, NOW - 8 * MIN),
        (NOW - 5 * MIN, NOW - 4 * MIN),
    ]
    assert state.backfill_done("q", "t", ("11m", "now")) == []  # another request: from scratch
    state.finish_backfill(backfill, NOW)
    assert state.backfill_done("q", "t", request) == []


def test_the_same_request_resumes_its_open_backfill_until_it_is_done(state):
    run = state.start_run("backfill", NOW)
    export = state.start_export(run, "q", "t", NOW)
    request, rng = ("7d", "now"), (NOW - 10 * MIN, NOW)
    first = state.open_backfill("q", "t", request, rng, holder="h", export_id=export, now=NOW)
    other = state.open_backfill("q", "t", ("1d", "now"), rng, holder="h", export_id=export, now=NOW)
    assert (
        state.open_backfill("q", "t", request, rng, holder="h", export_id=export, now=NOW) == first
    )
    assert other != first
    state.finish_backfill(first, NOW)
    again = state.open_backfill("q", "t", request, rng, holder="h", export_id=export, now=NOW)
    assert again not in (first, other)
    listed = {(b.since_spec, b.done) for b in state.backfills()}
    assert listed == {("7d", True), ("7d", False), ("1d", False)}


def test_set_checkpoint_moves_backwards_on_purpose(state):
    state.set_checkpoint("q", "t", NOW, NOW)
    state.set_checkpoint("q", "t", NOW - timedelta(days=1), NOW)
    assert state.checkpoint("q", "t") == NOW - timedelta(days=1)


def test_latest_exports_and_last_window_feed_status(state):
    run = state.start_run("incremental", NOW)
    first = state.start_export(run, "q", "t", NOW)
    state.finish_export(first, status="failed", now=NOW, error="boom")
    second = state.start_export(run, "q", "t", NOW)
    state.record_window(second, "q", "t", NOW - MIN, NOW, 42, NOW, backfill_id=None)
    state.finish_export(second, status="ok", now=NOW, nr_requests=3)
    latest = state.latest_exports()[("q", "t")]
    assert (latest.status, latest.error, latest.windows, latest.points) == ("ok", None, 1, 42)
    assert state.last_window("q", "t") == (NOW - MIN, NOW, 42)


def test_errors_stored_in_state_are_redacted(state):
    from archiver import logs

    logs.register_secret("NRAK-SECRETSECRET")
    run = state.start_run("incremental", NOW)
    export = state.start_export(run, "q", "t", NOW)
    state.finish_export(export, status="failed", now=NOW, error="key NRAK-SECRETSECRET refused")
    assert state.latest_exports()[("q", "t")].error == "key *** refused"


def test_lease_is_exclusive_until_it_expires(state):
    ttl = timedelta(minutes=10)
    assert state.acquire_lease("q", "t", "a", ttl, NOW)
    assert not state.acquire_lease("q", "t", "b", ttl, NOW)
    assert state.acquire_lease("q", "t", "a", ttl, NOW + MIN)  # renewal by its holder
    assert state.acquire_lease("q", "t", "b", ttl, NOW + 12 * MIN)  # holder died: expired
    assert not state.acquire_lease("q", "t", "a", ttl, NOW + 12 * MIN)
    state.release_lease("q", "t", "b")
    assert state.acquire_lease("q", "t", "a", ttl, NOW + 13 * MIN)


def test_window_log_is_pruned_after_30_days(state):
    run = state.start_run("incremental", NOW)
    export = state.start_export(run, "q", "t", NOW)
    old = NOW - timedelta(days=40)
    state.record_window(export, "q", "t", old, old + MIN, 1, old, backfill_id=None)
    state.record_window(export, "q", "t", NOW - MIN, NOW, 1, NOW, backfill_id=None)
    state.finish_run(run, 0, NOW)
    assert state.windows_written("q", "t") == [(NOW - MIN, NOW)]


def test_read_only_state_database_gives_one_line(tmp_path):
    path = tmp_path / "ro.db"
    State.open(f"sqlite:///{path}").engine.dispose()
    s = State.open(f"sqlite:///file:{path}?mode=ro&uri=true")  # read-only even for root
    with pytest.raises(StateError, match="state database: attempt to write a readonly database"):
        s.start_run("incremental", NOW)


def test_a_sqlite_state_writes_ahead_and_is_still_read_by_a_read_only_connection(tmp_path):
    """WAL with synchronous=NORMAL: a commit per window without an fsync (README: Performance)."""
    path = tmp_path / "wal.db"
    state = State.open(f"sqlite:///{path}")
    with state.engine.connect() as conn:
        modes = [conn.exec_driver_sql(f"PRAGMA {name}").scalar() for name in MODES]
    assert modes == ["wal", 1]  # 1: NORMAL
    state.start_run("incremental", NOW)
    state.engine.dispose()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["wal.db"]  # no -wal/-shm left
    reader = State.open(f"sqlite:///file:{path}?mode=ro&uri=true")
    assert reader.checkpoint("q", "t") is None


MODES = ("journal_mode", "synchronous")


def test_locked_state_database_gives_one_line(tmp_path):
    path = tmp_path / "locked.db"
    State.open(f"sqlite:///{path}").engine.dispose()
    locker = sa.create_engine(f"sqlite:///{path}")
    with locker.connect() as conn:
        conn.exec_driver_sql("BEGIN EXCLUSIVE")
        s = State(sa.create_engine(f"sqlite:///{path}", connect_args={"timeout": 0.1}))
        # (a write: in WAL mode, readers are not blocked by a writer)
        with pytest.raises(StateError, match="state database: database is locked"):
            s.start_run("incremental", NOW)
        conn.exec_driver_sql("ROLLBACK")


def test_unusable_url_is_a_state_error():
    with pytest.raises(StateError, match="ARCHIVER_DB_URL"):
        State.open("nosuchdialect://x")


# -- the SQLite migration lock -------------------------------------------------------------------


def test_migrating_a_sqlite_database_leaves_nothing_beside_it(tmp_path):
    path = tmp_path / "state.db"
    State.open(f"sqlite:///{path}").engine.dispose()  # migrates
    State.open(f"sqlite:///{path}").engine.dispose()  # finds it migrated
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.db"]


def test_a_migrate_lock_left_by_an_earlier_release_is_removed(tmp_path):
    path = tmp_path / "state.db"
    (tmp_path / "state.db.migrate-lock").touch()
    State.open(f"sqlite:///{path}").engine.dispose()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.db"]


def test_the_migration_lock_admits_one_holder_at_a_time_though_each_removes_it(tmp_path):
    """Holders that remove the lock file must not let a waiter and a newcomer in together.

    A waiter blocked on the file the holder then removes, and a newcomer who creates a new
    one, would both get "their" lock: the marker below, created exclusively inside, catches it.
    """
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'state.db'}")
    inside = tmp_path / "inside"
    clashes: list[str] = []

    def hammer() -> None:
        for _ in range(300):
            with migrate._sqlite_migration_lock(engine):
                try:
                    inside.touch(exist_ok=False)
                except FileExistsError:
                    clashes.append("two holders at once")
                    continue
                inside.unlink()

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads)
    assert clashes == []
    assert sorted(p.name for p in tmp_path.iterdir()) == []
