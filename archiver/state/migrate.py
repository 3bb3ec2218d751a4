"""The state database's engine and its schema's one owner: the Alembic migrations.

`upgrade()` brings a database to the head revision (what `nr-archiver db upgrade` runs, and what
`State.open` does first); processes starting at once take turns on a migration lock. Alembic is
imported only when there is something to migrate: a database already at head is recognised by
reading `alembic_version` with SQLAlchemy, and a database without any table gets the tables of
`schema` and the head revision in one transaction. Importing Alembic costs ~0.12 s of CPU (it
loads every SQL dialect and Mako), a sixth of a short `run`.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import IO, TYPE_CHECKING

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError

from archiver.errors import StateError
from archiver.logs import redact
from archiver.state.schema import metadata

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATION_LOCK = 0x6E72_6172  # pg_advisory_xact_lock key of the migrations ('nrar')

# The newest revision in migrations/versions/: tests/test_startup.py fails when it is not
# Alembic's head, so a new migration cannot be forgotten here.
HEAD_REVISION = "0004"

# Alembic's own version table, as `alembic stamp` creates it (String(32), primary key
# `<table>_pkc`); tests/test_state_upgrade.py compares it with Alembic's on SQLite and PostgreSQL.
_alembic_version = sa.Table(
    "alembic_version",
    sa.MetaData(),
    sa.Column("version_num", sa.String(32), nullable=False),
    sa.PrimaryKeyConstraint("version_num", name="alembic_version_pkc"),
)


_configured_migrations: Path | None = None


def use_migrations(configured: Path | None) -> None:
    """Take the migrations from `configured` (the settings' ARCHIVER_MIGRATIONS_DIR) if set."""
    global _configured_migrations
    _configured_migrations = configured


def migrations_dir() -> Path:
    """Where the Alembic migrations are.

    ARCHIVER_MIGRATIONS_DIR if the settings name it (`use_migrations`); else
    `archiver/migrations/` in an installed wheel (the top-level `migrations/` ships there as
    package data); else `migrations/` beside the package in a source checkout (or an editable
    install).
    """
    if _configured_migrations is not None:
        return _configured_migrations
    package = Path(__file__).resolve().parents[1]  # archiver/
    installed = package / "migrations"
    return installed if installed.is_dir() else package.parent / "migrations"


def _alembic_config() -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(migrations_dir()))
    return config


def describe(exc: Exception) -> str:
    lines = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    message = lines[0] if lines else type(exc).__name__
    return redact(message)


def make_engine(url: str) -> Engine:
    try:
        if url.startswith("sqlite"):
            engine = sa.create_engine(url, connect_args={"timeout": 30})
            sa.event.listen(engine, "connect", _sqlite_pragmas)
            return engine
        return sa.create_engine(url, pool_pre_ping=True)
    except (sa.exc.ArgumentError, ImportError) as exc:
        raise StateError(f"ARCHIVER_DB_URL is not usable: {describe(exc)}") from None


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    """Foreign keys, a 30 s busy timeout, and the write-ahead log with synchronous=NORMAL.

    WAL makes a commit one append without fsync (the log is synced at checkpoints): a window's
    commit costs ~0.05 ms instead of ~9 ms, which on small windows (no facet, raw events) was a
    fifth of a run. A power loss may forget the last commits, never corrupt the database: those
    windows are exported again (InfluxDB keeps one point per series and time). WAL is recorded in
    the file; a read-only connection leaves the database as it is.
    """
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    try:
        [mode] = cursor.execute("PRAGMA journal_mode=WAL").fetchone()
    except sqlite3.OperationalError:  # read-only: its first write says so, by name
        mode = None
    if mode == "wal":
        cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def current_revision(conn: Connection) -> str | None:
    """The database's Alembic revision (None: not under Alembic yet), read without Alembic.

    Several rows (branches, which these migrations never have) read as all of them joined, a
    revision that is never the head: `upgrade` then leaves them to Alembic.
    """
    if not sa.inspect(conn).has_table(_alembic_version.name):
        return None
    rows = conn.execute(sa.select(_alembic_version.c.version_num)).scalars().all()
    return " ".join(sorted(rows)) or None


def head_revision() -> str | None:
    """The newest migration: HEAD_REVISION for the package's own migrations, else Alembic's."""
    if _configured_migrations is None:
        return HEAD_REVISION
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(_alembic_config()).get_current_head()


def upgrade(engine: Engine) -> None:
    """Bring the state database to the head revision (what `nr-archiver db upgrade` runs).

    At head already (every start but the first): one read, no lock, no Alembic. A database
    without any table: the tables of `schema` and the head revision, in one transaction
    (Alembic's recipe for a new database, "create_all then stamp"; tests/test_state_upgrade.py
    proves the tables equal those the migrations create). Anything else: the Alembic
    migrations up to head.

    Processes starting at once (workers, an overlapping cron run) take turns: an advisory lock
    on PostgreSQL, a lock file next to a SQLite database (whose DDL is not transactional, so
    the others would otherwise see half a schema). The later ones find the schema done.
    """
    head = head_revision()
    try:
        with engine.connect() as conn:
            if current_revision(conn) == head:
                return
        with _sqlite_migration_lock(engine), engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
            revision = current_revision(conn)
            if revision == head:
                return
            if revision is None and _configured_migrations is None and _is_empty(conn):
                _create_at_head(conn)
                return
            _alembic_upgrade(conn)
    except DBAPIError as exc:
        raise StateError(f"cannot open the state database: {describe(exc)}") from None


def _is_empty(conn: Connection) -> bool:
    """No table at all in the database's default schema."""
    return not sa.inspect(conn).get_table_names()


def _create_at_head(conn: Connection) -> None:
    """The tables of `schema`, stamped with the head revision as `alembic stamp head` would.

    Written here rather than with `alembic.command.stamp`: importing Alembic costs ~0.12 s of
    CPU, more than all the rest (measured 2026-11-29, best of 7 fresh processes on SQLite: the
    4 migrations 0.11 s, create_all + command.stamp 0.09 s, both plus Alembic's import;
    create_all + this insert 0.016 s, without it).
    """
    metadata.create_all(conn)
    _alembic_version.create(conn)
    conn.execute(_alembic_version.insert().values(version_num=HEAD_REVISION))


def _alembic_upgrade(conn: Connection) -> None:
    from alembic import command

    config = _alembic_config()
    config.attributes["connection"] = conn
    command.upgrade(config, "head")


@contextmanager
def _sqlite_migration_lock(engine: Engine) -> Iterator[None]:
    """An exclusive lock on `<database>.migrate-lock`, a file that is gone again afterwards."""
    path = engine.url.database if engine.url.get_backend_name() == "sqlite" else None
    if not path or path == ":memory:" or path.startswith("file:"):
        yield
        return
    lock_path = Path(f"{path}.migrate-lock")
    lock_file = _lock_file(lock_path)
    if lock_file is None:  # a read-only folder: nobody can migrate there anyway
        yield
        return
    with lock_file:
        try:
            yield
        finally:
            # Removed while still locked: whoever waits on this file finds it gone and retries.
            with suppress(OSError):
                lock_path.unlink()


def _lock_file(lock_path: Path) -> IO[str] | None:
    """The lock file, opened and locked; None when it cannot be created.

    The holder removes the file before it unlocks it, so a process that was waiting on it
    gets a lock on a file nobody else will ever see: it must notice, and lock the file now
    at the path (which a newcomer may have created meanwhile) instead.
    """
    while True:
        try:
            lock_file = lock_path.open("a")
        except OSError:
            return None
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        try:
            on_disk = os.stat(lock_path)
        except FileNotFoundError:
            on_disk = None
        mine = os.fstat(lock_file.fileno())
        if on_disk and (on_disk.st_dev, on_disk.st_ino) == (mine.st_dev, mine.st_ino):
            return lock_file
        lock_file.close()
