"""Upgrading a state database written at revision 0001 keeps its checkpoints and progress; a
new database, created from `schema` without the migrations, is exactly what they would give."""

import threading
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from archiver.errors import StateError
from archiver.state import migrate
from archiver.state.store import State
from tests.conftest import fresh_postgres_database

NOW = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)
MIN = timedelta(minutes=1)
T = int(NOW.timestamp())


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


def at_0001(url: str) -> sa.Engine:
    """A database as release 0001 left it: a checkpoint, an interrupted backfill of `q` → `t`
    and the rows a finished (resumed) backfill of `done` → `t` failed to forget."""
    engine = migrate.make_engine(url)
    config = migrate._alembic_config()
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, "0001")
    rows = {
        "checkpoints": [dict(query="q", target="t", exported_until=T, updated_at=T)],
        "runs": [
            dict(id=1, kind="backfill", started_at=T, host="h", pid=1),
            dict(id=2, kind="incremental", started_at=T, host="h", pid=1, exit_code=0),
        ],
        "exports": [
            dict(id=1, run_id=1, query="q", target="t", status="running", started_at=T),
            dict(id=2, run_id=1, query="done", target="t", status="ok", started_at=T),
            dict(id=3, run_id=2, query="q", target="t", status="ok", started_at=T),
        ],
        "backfill_progress": [
            dict(query="q", target="t", since=T - 600, until=T - 480, updated_at=T),
            dict(query="q", target="t", since=T - 300, until=T - 240, updated_at=T),
            dict(query="done", target="t", since=T - 600, until=T, updated_at=T),
        ],
    }
    with engine.begin() as conn:
        for table, values in rows.items():
            conn.execute(sa.table(table, *map(sa.column, values[0])).insert(), values)
            if table in ("runs", "exports") and conn.dialect.name == "postgresql":
                conn.execute(sa.text(f"SELECT setval('{table}_id_seq', 10)"))
    return engine


def test_upgrade_from_0001_keeps_checkpoints_and_backfill_progress(db_url):
    at_0001(db_url).dispose()
    state = State.open(db_url)  # upgrades to head

    assert state.is_migrated()
    assert state.checkpoint("q", "t") == NOW
    # The interrupted backfill stays resumable: the next backfill of q → t takes it over.
    expected = [(NOW - 10 * MIN, NOW - 8 * MIN), (NOW - 5 * MIN, NOW - 4 * MIN)]
    assert sorted(state.backfill_done("q", "t", ("1h", "now"))) == expected
    # What a finished backfill left behind never makes a new backfill skip anything.
    assert state.backfill_done("done", "t", ("1h", "now")) == []
    listed = {(b.query, b.done, b.since_spec) for b in state.backfills()}
    assert listed == {("q", False, None), ("done", True, None)}
    with state.engine.connect() as conn:
        kept = conn.execute(sa.text("SELECT count(*) FROM backfill_progress")).scalar()
    assert kept == 3

    # Taken over by a request, it is resumed by that request and done when it completes.
    run = state.start_run("backfill", NOW)
    export = state.start_export(run, "q", "t", NOW)
    rng = (NOW - 10 * MIN, NOW)
    adopted = state.open_backfill(
        "q", "t", ("1h", "now"), rng, holder="h", export_id=export, now=NOW
    )
    assert sorted(state.backfill_done("q", "t", ("1h", "now"))) == expected
    assert state.backfill_done("q", "t", ("2h", "now")) == []
    state.finish_backfill(adopted, NOW)
    assert state.backfill_done("q", "t", ("1h", "now")) == []


# -- a new database: created from `schema`, not by running every migration ----------------------


def described(engine: sa.Engine) -> dict[str, dict[str, object]]:
    """Every table as SQLAlchemy inspects it: columns in order (name, type, null, default),
    primary key, foreign keys, indexes and unique constraints, with their names."""
    inspector = sa.inspect(engine)
    tables = {}
    for table in inspector.get_table_names():
        columns = inspector.get_columns(table)
        tables[table] = {
            "columns": [(c["name"], str(c["type"]), c["nullable"], c["default"]) for c in columns],
            "primary key": inspector.get_pk_constraint(table),
            "foreign keys": sorted(map(repr, inspector.get_foreign_keys(table))),
            "indexes": sorted(map(repr, inspector.get_indexes(table))),
            "unique": sorted(map(repr, inspector.get_unique_constraints(table))),
        }
    return tables


def by_the_migrations(url: str) -> sa.Engine:
    engine = migrate.make_engine(url)
    config = migrate._alembic_config()
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, "head")
    return engine


def test_a_new_database_has_exactly_the_schema_the_migrations_give(db_url, tmp_path):
    """`upgrade` creates a database without tables from `schema` and stamps it at head; the
    result must not differ in anything from running every migration, `alembic_version` too."""
    with ExitStack() as stack:
        if db_url.startswith("sqlite"):
            other_url = f"sqlite:///{tmp_path / 'migrated.db'}"
        else:
            other_url = stack.enter_context(fresh_postgres_database("nr_archiver_migrated"))
        migrated = by_the_migrations(other_url)
        expected = described(migrated)
        migrated.dispose()
    created = migrate.make_engine(db_url)
    migrate.upgrade(created)

    assert sorted(described(created)) == sorted(expected)
    assert described(created) == expected
    with created.connect() as conn:
        assert MigrationContext.configure(conn).get_current_revision() == migrate.HEAD_REVISION
    assert State(created).is_migrated()


def test_a_database_with_any_table_is_left_to_the_migrations(db_url):
    """Only a database without a single table is created from `schema`: one with a stray
    table, or tables of an earlier release without `alembic_version`, goes through Alembic
    (which here fails on the existing table rather than quietly stamping it)."""
    engine = migrate.make_engine(db_url)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE checkpoints (query VARCHAR(200))"))
    with pytest.raises(StateError, match="checkpoints"):
        migrate.upgrade(engine)
    with engine.connect() as conn:
        assert migrate.current_revision(conn) is None


def test_a_database_at_head_is_recognised_without_alembic(db_url):
    """`current_revision` reads what Alembic wrote, at every revision."""
    engine = migrate.make_engine(db_url)
    config = migrate._alembic_config()
    with engine.connect() as conn:
        assert migrate.current_revision(conn) is None
    script = ScriptDirectory.from_config(config)
    revisions = [r.revision for r in reversed(list(script.walk_revisions()))]
    assert revisions[-1] == migrate.HEAD_REVISION
    for revision in revisions:
        with engine.begin() as conn:
            config.attributes["connection"] = conn
            command.upgrade(config, revision)
        with engine.connect() as conn:
            assert migrate.current_revision(conn) == revision
            assert MigrationContext.configure(conn).get_current_revision() == revision
    assert State(engine).is_migrated()


def test_processes_starting_at_once_on_a_new_database_create_it_once(db_url):
    """Under the migration lock the first creates the tables; the others find them at head
    (a second `create_all` + stamp would add a second `alembic_version` row or fail)."""
    barrier = threading.Barrier(4)
    errors: list[BaseException] = []

    def start() -> None:
        engine = migrate.make_engine(db_url)
        barrier.wait(timeout=30)
        try:
            migrate.upgrade(engine)
        except BaseException as exc:  # reported below, with the others'
            errors.append(exc)
        finally:
            engine.dispose()

    threads = [threading.Thread(target=start) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads)
    assert errors == []
    engine = migrate.make_engine(db_url)
    with engine.connect() as conn:
        versions = conn.execute(sa.text("SELECT version_num FROM alembic_version")).all()
    assert versions == [(migrate.HEAD_REVISION,)]
    assert State(engine).is_migrated()
