"""The state database: checkpoints, backfill progress, leases and the run log.

SQLAlchemy Core over SQLite (default) or PostgreSQL. The schema belongs to the Alembic
migrations in `migrations/`; the tables below only describe it for queries, and
`upgrade()` is the one place that changes it. Instants are stored as epoch seconds (BIGINT):
the same on every backend, with no time-zone surprises.

A checkpoint moves in the same transaction that logs the window, and only after InfluxDB
acknowledged the window's points (the runner's job).
"""

from __future__ import annotations

import fcntl
import logging
import os
import socket
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError

from archiver.errors import StateError
from archiver.logs import redact

log = logging.getLogger(__name__)

metadata = sa.MetaData()

checkpoints = sa.Table(
    "checkpoints",
    metadata,
    sa.Column("query", sa.String(200), primary_key=True),
    sa.Column("target", sa.String(400), primary_key=True),
    sa.Column("exported_until", sa.BigInteger, nullable=False),
    sa.Column("updated_at", sa.BigInteger, nullable=False),
)

runs = sa.Table(
    "runs",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("kind", sa.String(20), nullable=False),
    sa.Column("started_at", sa.BigInteger, nullable=False),
    sa.Column("finished_at", sa.BigInteger),
    sa.Column("exit_code", sa.Integer),
    sa.Column("host", sa.String(200), nullable=False),
    sa.Column("pid", sa.Integer, nullable=False),
    sa.Column("error", sa.Text),  # why the whole pass failed (one line, redacted)
)

exports = sa.Table(
    "exports",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("run_id", sa.Integer, sa.ForeignKey("runs.id"), nullable=False),
    sa.Column("query", sa.String(200), nullable=False),
    sa.Column("target", sa.String(400), nullable=False),
    sa.Column("since", sa.BigInteger),
    sa.Column("until", sa.BigInteger),
    sa.Column("windows", sa.Integer, nullable=False, server_default="0"),
    sa.Column("points", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("nr_requests", sa.Integer, nullable=False, server_default="0"),
    sa.Column("retries", sa.Integer, nullable=False, server_default="0"),
    sa.Column("inspected", sa.BigInteger),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("error", sa.Text),
    sa.Column("started_at", sa.BigInteger, nullable=False),
    sa.Column("finished_at", sa.BigInteger),
    sa.Index("ix_exports_query_target", "query", "target", "id"),
)

windows_log = sa.Table(
    "windows",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("export_id", sa.Integer, sa.ForeignKey("exports.id"), nullable=False),
    sa.Column("query", sa.String(200), nullable=False),
    sa.Column("target", sa.String(400), nullable=False),
    sa.Column("since", sa.BigInteger, nullable=False),
    sa.Column("until", sa.BigInteger, nullable=False),
    sa.Column("points", sa.Integer, nullable=False),
    sa.Column("written_at", sa.BigInteger, nullable=False),
    sa.Column("inspected", sa.BigInteger),  # New Relic's inspectedCount; NULL: not told
    sa.Column("max_buckets", sa.Integer),  # New Relic refused bigger windows; NULL: never
    sa.Index("ix_windows_written_at", "written_at"),
)

# One row per backfill the user asked for: (query, target, since_spec, until_spec) while it is
# open. The specs are how the range was asked (`7d`, or an ISO instant): the same command run
# again resumes the open row; once done, the same command starts a new row and exports anew.
# NULL specs: progress recorded before revision 0002, which did not keep the request.
backfills = sa.Table(
    "backfills",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("query", sa.String(200), nullable=False),
    sa.Column("target", sa.String(400), nullable=False),
    sa.Column("since_spec", sa.String(100)),
    sa.Column("until_spec", sa.String(100)),
    sa.Column("range_since", sa.BigInteger, nullable=False),
    sa.Column("range_until", sa.BigInteger, nullable=False),
    sa.Column("status", sa.String(20), nullable=False),  # open | done
    sa.Column("holder", sa.String(200)),
    sa.Column("export_id", sa.Integer),  # the last export that worked on it
    sa.Column("started_at", sa.BigInteger, nullable=False),
    sa.Column("updated_at", sa.BigInteger, nullable=False),
    sa.Column("finished_at", sa.BigInteger),
    sa.Index("ix_backfills_query_target", "query", "target", "status"),
)

backfill_progress = sa.Table(
    "backfill_progress",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("query", sa.String(200), nullable=False),
    sa.Column("target", sa.String(400), nullable=False),
    sa.Column("since", sa.BigInteger, nullable=False),
    sa.Column("until", sa.BigInteger, nullable=False),
    sa.Column("updated_at", sa.BigInteger, nullable=False),
    sa.Column("backfill_id", sa.Integer, sa.ForeignKey("backfills.id"), nullable=False),
    sa.Index("ix_backfill_progress_query_target", "query", "target"),
    sa.Index("ix_backfill_progress_backfill_id", "backfill_id"),
)

leases = sa.Table(
    "leases",
    metadata,
    sa.Column("query", sa.String(200), primary_key=True),
    sa.Column("target", sa.String(400), primary_key=True),
    sa.Column("holder", sa.String(200), nullable=False),
    sa.Column("expires_at", sa.BigInteger, nullable=False),
)

verifications = sa.Table(  # the last `verify` of each (query, target), for `status`
    "verifications",
    metadata,
    sa.Column("query", sa.String(200), primary_key=True),
    sa.Column("target", sa.String(400), primary_key=True),
    sa.Column("verified_at", sa.BigInteger, nullable=False),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("since", sa.BigInteger),
    sa.Column("until", sa.BigInteger),
    sa.Column("windows", sa.Integer, nullable=False),
    sa.Column("checked", sa.BigInteger, nullable=False),
    sa.Column("missing", sa.BigInteger, nullable=False),
    sa.Column("different", sa.BigInteger, nullable=False),
    sa.Column("extra", sa.BigInteger, nullable=False),
    sa.Column("repaired", sa.BigInteger, nullable=False),
    sa.Column("pruned", sa.BigInteger, nullable=False),
    sa.Column("remaining", sa.BigInteger, nullable=False),
    sa.Column("error", sa.Text),
)

WINDOW_LOG_DAYS = 30
MIGRATION_LOCK = 0x6E72_6172  # pg_advisory_xact_lock key of the migrations ('nrar')


def epoch(t: datetime) -> int:
    return int(t.timestamp())


def from_epoch(seconds: int | None) -> datetime | None:
    return None if seconds is None else datetime.fromtimestamp(seconds, UTC)


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
    config = Config()
    config.set_main_option("script_location", str(migrations_dir()))
    return config


def _describe(exc: Exception) -> str:
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
        raise StateError(f"ARCHIVER_DB_URL is not usable: {_describe(exc)}") from None


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def current_revision(conn: Connection) -> str | None:
    return MigrationContext.configure(conn).get_current_revision()


def head_revision() -> str | None:
    return ScriptDirectory.from_config(_alembic_config()).get_current_head()


def upgrade(engine: Engine) -> None:
    """Apply the Alembic migrations up to head (what `nr-archiver db upgrade` runs).

    Processes starting at once (workers, an overlapping cron run) take turns: an advisory lock
    on PostgreSQL, a lock file next to a SQLite database (whose DDL is not transactional, so
    the others would otherwise see half a schema). The later ones find the schema done.
    """
    config = _alembic_config()
    try:
        with _sqlite_migration_lock(engine), engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
            if current_revision(conn) == head_revision():
                return
            config.attributes["connection"] = conn
            command.upgrade(config, "head")
    except DBAPIError as exc:
        raise StateError(f"cannot open the state database: {_describe(exc)}") from None


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


@dataclass(frozen=True)
class Checkpoint:
    query: str
    target: str
    exported_until: datetime
    updated_at: datetime


@dataclass(frozen=True)
class ExportRecord:
    query: str
    target: str
    status: str
    error: str | None
    since: datetime | None
    until: datetime | None
    windows: int
    points: int
    started_at: datetime
    finished_at: datetime | None


@dataclass(frozen=True)
class VerifyRecord:
    """The outcome of one `verify` of a (query, target)."""

    query: str
    target: str
    verified_at: datetime
    status: str  # ok | differs | failed | not exported
    since: datetime | None
    until: datetime | None
    windows: int
    checked: int
    missing: int
    different: int
    extra: int
    repaired: int
    pruned: int
    remaining: int
    error: str | None


@dataclass(frozen=True)
class BackfillRecord:
    query: str
    target: str
    since_spec: str | None  # None: recorded before revision 0002, request unknown
    until_spec: str | None
    since: datetime  # the range of its last attempt
    until: datetime
    done: bool
    segments: list[tuple[datetime, datetime]]  # exported so far (open backfills)
    holder: str | None
    lease_expires_at: datetime | None  # its holder still holds the (query, target) lease
    last_run: datetime
    last_status: str | None
    last_error: str | None


@dataclass(frozen=True)
class PassRecord:
    kind: str
    started_at: datetime
    finished_at: datetime | None
    exit_code: int | None
    error: str | None


@dataclass(frozen=True)
class WindowCosts:
    """Totals over logged windows: seconds covered, points written, events inspected (over
    `inspected_seconds` of those seconds: New Relic does not always tell)."""

    seconds: int
    points: int
    inspected: int | None
    inspected_seconds: int

    def estimate(self, seconds: float) -> tuple[int, int | None]:
        """(points, inspected) for `seconds` of the same query at the same rate."""
        points = round(self.points * seconds / self.seconds)
        if self.inspected is None or not self.inspected_seconds:
            return points, None
        return points, round(self.inspected * seconds / self.inspected_seconds)


class State:
    """All reads and writes of the state database. Every method is one short transaction."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    @classmethod
    def open(cls, url: str, *, migrate: bool = True) -> State:
        engine = make_engine(url)
        if migrate:
            upgrade(engine)
        return cls(engine)

    @classmethod
    def scratch(cls) -> State:
        """A throwaway state in a temporary file (in-memory SQLite is one DB per thread)."""
        folder = tempfile.TemporaryDirectory(prefix="nr-archiver-")
        state = cls.open(f"sqlite:///{folder.name}/scratch.db")
        state._scratch_folder = folder  # removed with the object
        return state

    @classmethod
    def open_existing(cls, url: str) -> State | None:
        """The state database if it exists and is migrated; never creates anything."""
        parsed = sa.engine.make_url(url)
        if parsed.get_backend_name() == "sqlite":
            path = parsed.database or ""
            if path.startswith("file:"):
                path = path[len("file:") :].split("?", 1)[0]
            if path in ("", ":memory:") or not Path(path).exists():
                return None
        state = cls(make_engine(url))
        return state if state.is_migrated() else None

    @contextmanager
    def _begin(self) -> Iterator[Connection]:
        """One transaction; database failures become one-line StateErrors."""
        try:
            with self.engine.begin() as conn:
                yield conn
        except DBAPIError as exc:
            raise StateError(f"state database: {_describe(exc)}") from None

    # -- checkpoints -------------------------------------------------------------------------

    def checkpoint(self, query: str, target: str) -> datetime | None:
        with self._begin() as conn:
            value = conn.execute(
                sa.select(checkpoints.c.exported_until).where(
                    checkpoints.c.query == query, checkpoints.c.target == target
                )
            ).scalar()
        return from_epoch(value)

    def all_checkpoints(self) -> list[Checkpoint]:
        with self._begin() as conn:
            rows = conn.execute(sa.select(checkpoints).order_by("query", "target")).all()
        return [
            Checkpoint(r.query, r.target, from_epoch(r.exported_until), from_epoch(r.updated_at))
            for r in rows
        ]

    def set_checkpoint(self, query: str, target: str, until: datetime, now: datetime) -> None:
        """Move a checkpoint on purpose (`nr-archiver reset`), backwards or forwards."""
        with self._begin() as conn:
            _upsert_checkpoint(conn, query, target, epoch(until), epoch(now), only_forward=False)

    # -- the run log ---------------------------------------------------------------------------

    def start_run(self, kind: str, now: datetime) -> int:
        with self._begin() as conn:
            return conn.execute(
                runs.insert().values(
                    kind=kind,
                    started_at=epoch(now),
                    host=socket.gethostname()[:200],
                    pid=os.getpid(),
                )
            ).inserted_primary_key[0]

    def finish_run(
        self, run_id: int, exit_code: int, now: datetime, error: str | None = None
    ) -> None:
        cutoff = epoch(now - timedelta(days=WINDOW_LOG_DAYS))
        with self._begin() as conn:
            conn.execute(
                runs.update()
                .where(runs.c.id == run_id)
                .values(
                    finished_at=epoch(now),
                    exit_code=exit_code,
                    error=redact(error) if error else None,
                )
            )
            conn.execute(windows_log.delete().where(windows_log.c.written_at < cutoff))

    def record_failed_pass(
        self,
        kind: str,
        now: datetime,
        exit_code: int,
        error: str,
        pairs: list[tuple[str, str]] = (),
    ) -> None:
        """A pass that failed as a whole (InfluxDB unreachable, a refused key, no usable query
        file): one run with its cause, and a failed export for each (query, target) it was
        about to export, so `status` shows the failure where the user looks."""
        run_id = self.start_run(kind, now)
        for query, target in pairs:
            export_id = self.start_export(run_id, query, target, now)
            self.finish_export(export_id, status="failed", now=now, error=error)
        self.finish_run(run_id, exit_code, now, error=error)

    def last_pass(self) -> PassRecord | None:
        """The newest finished run (pass) of any kind."""
        with self._begin() as conn:
            row = conn.execute(
                sa.select(runs)
                .where(runs.c.finished_at.is_not(None))
                .order_by(runs.c.id.desc())
                .limit(1)
            ).first()
        if row is None:
            return None
        return PassRecord(
            row.kind, from_epoch(row.started_at), from_epoch(row.finished_at), row.exit_code,
            row.error,
        )  # fmt: skip

    def start_export(self, run_id: int, query: str, target: str, now: datetime) -> int:
        with self._begin() as conn:
            return conn.execute(
                exports.insert().values(
                    run_id=run_id,
                    query=query,
                    target=target,
                    status="running",
                    started_at=epoch(now),
                )
            ).inserted_primary_key[0]

    def finish_export(
        self,
        export_id: int,
        *,
        status: str,
        now: datetime,
        since: datetime | None = None,
        until: datetime | None = None,
        nr_requests: int = 0,
        retries: int = 0,
        error: str | None = None,
    ) -> None:
        with self._begin() as conn:
            conn.execute(
                exports.update()
                .where(exports.c.id == export_id)
                .values(
                    status=status,
                    error=redact(error) if error else None,
                    since=None if since is None else epoch(since),
                    until=None if until is None else epoch(until),
                    nr_requests=nr_requests,
                    retries=retries,
                    finished_at=epoch(now),
                )
            )

    def record_window(
        self,
        export_id: int,
        query: str,
        target: str,
        since: datetime,
        until: datetime,
        points: int,
        now: datetime,
        *,
        backfill_id: int | None = None,
        inspected: int | None = None,
        max_buckets: int | None = None,
    ) -> None:
        """Log a written window and move the checkpoint (or the backfill's progress) with it.

        `inspected` is what New Relic inspected for it; `max_buckets` the query's bucket cap.
        """
        with self._begin() as conn:
            conn.execute(
                windows_log.insert().values(
                    export_id=export_id,
                    query=query,
                    target=target,
                    since=epoch(since),
                    until=epoch(until),
                    points=points,
                    written_at=epoch(now),
                    inspected=inspected,
                    max_buckets=max_buckets,
                )
            )
            inspected_sum = exports.c.inspected
            if inspected is not None:
                inspected_sum = sa.func.coalesce(exports.c.inspected, 0) + inspected
            conn.execute(
                exports.update()
                .where(exports.c.id == export_id)
                .values(
                    windows=exports.c.windows + 1,
                    points=exports.c.points + points,
                    until=epoch(until),
                    inspected=inspected_sum,
                )
            )
            if backfill_id is not None:
                _extend_backfill(
                    conn, backfill_id, query, target, epoch(since), epoch(until), epoch(now)
                )
            else:
                _upsert_checkpoint(conn, query, target, epoch(until), epoch(now), only_forward=True)

    def latest_exports(
        self, kind: str | None = "incremental"
    ) -> dict[tuple[str, str], ExportRecord]:
        """The last finished export of each (query, target) in runs of `kind` (None: any)."""
        latest = (
            sa.select(sa.func.max(exports.c.id))
            .select_from(exports.join(runs, runs.c.id == exports.c.run_id))
            .where(exports.c.status.not_in(("running", "busy")))
            .group_by(exports.c.query, exports.c.target)
        )
        if kind is not None:
            latest = latest.where(runs.c.kind == kind)
        with self._begin() as conn:
            rows = conn.execute(sa.select(exports).where(exports.c.id.in_(latest))).all()
        return {
            (r.query, r.target): ExportRecord(
                query=r.query,
                target=r.target,
                status=r.status,
                error=r.error,
                since=from_epoch(r.since),
                until=from_epoch(r.until),
                windows=r.windows,
                points=r.points,
                started_at=from_epoch(r.started_at),
                finished_at=from_epoch(r.finished_at),
            )
            for r in rows
        }

    def windows_written(self, query: str, target: str) -> list[tuple[datetime, datetime]]:
        with self._begin() as conn:
            rows = conn.execute(
                sa.select(windows_log.c.since, windows_log.c.until)
                .where(windows_log.c.query == query, windows_log.c.target == target)
                .order_by(windows_log.c.id)
            ).all()
        return [(from_epoch(r.since), from_epoch(r.until)) for r in rows]

    def last_window(self, query: str, target: str) -> tuple[datetime, datetime, int] | None:
        """The newest window written for (query, target): since, until, points."""
        with self._begin() as conn:
            row = conn.execute(
                sa.select(windows_log.c.since, windows_log.c.until, windows_log.c.points)
                .where(windows_log.c.query == query, windows_log.c.target == target)
                .order_by(windows_log.c.id.desc())
                .limit(1)
            ).first()
        return None if row is None else (from_epoch(row.since), from_epoch(row.until), row.points)

    def bucket_cap(self, query: str, target: str) -> int | None:
        """The bucket cap of the newest window written for (query, target), if it had one."""
        with self._begin() as conn:
            return conn.execute(
                sa.select(windows_log.c.max_buckets)
                .where(windows_log.c.query == query, windows_log.c.target == target)
                .order_by(windows_log.c.id.desc())
                .limit(1)
            ).scalar()

    def window_costs(self, query: str, target: str) -> WindowCosts | None:
        """What the logged windows of (query, target) covered and cost (the last 30 days)."""
        with self._begin() as conn:
            row = conn.execute(
                sa.select(
                    sa.func.count(),
                    sa.func.sum(windows_log.c.until - windows_log.c.since),
                    sa.func.sum(windows_log.c.points),
                    sa.func.sum(windows_log.c.inspected),
                    sa.func.sum(
                        sa.case(
                            (
                                windows_log.c.inspected.is_not(None),
                                windows_log.c.until - windows_log.c.since,
                            ),
                            else_=0,
                        )
                    ),
                ).where(windows_log.c.query == query, windows_log.c.target == target)
            ).one()
        count, seconds, points, inspected, inspected_seconds = row
        if not count or not seconds:
            return None
        return WindowCosts(
            seconds=int(seconds),
            points=int(points or 0),
            inspected=None if inspected is None else int(inspected),
            inspected_seconds=int(inspected_seconds or 0),
        )

    def is_migrated(self) -> bool:
        with self._begin() as conn:
            return current_revision(conn) == head_revision()

    # -- backfill progress ---------------------------------------------------------------------

    def backfill_done(
        self, query: str, target: str, request: tuple[str, str]
    ) -> list[tuple[datetime, datetime]]:
        """What the open backfill of this request already exported (empty: a new backfill)."""
        with self._begin() as conn:
            backfill_id = _open_backfill_id(conn, query, target, request)
            if backfill_id is None:
                return []
            rows = conn.execute(
                sa.select(backfill_progress.c.since, backfill_progress.c.until).where(
                    backfill_progress.c.backfill_id == backfill_id
                )
            ).all()
        return [(from_epoch(r.since), from_epoch(r.until)) for r in rows]

    def open_backfill(
        self,
        query: str,
        target: str,
        request: tuple[str, str],
        rng: tuple[datetime, datetime],
        *,
        holder: str,
        export_id: int,
        now: datetime,
    ) -> int:
        """The open backfill of this request (resumed), else a new one; returns its id.

        Progress from before revision 0002 (request unknown) is taken over by the first
        backfill of its query and target, which is what that release would have done.
        """
        values = {
            "since_spec": request[0],
            "until_spec": request[1],
            "range_since": epoch(rng[0]),
            "range_until": epoch(rng[1]),
            "holder": holder,
            "export_id": export_id,
            "updated_at": epoch(now),
        }
        with self._begin() as conn:
            backfill_id = _open_backfill_id(conn, query, target, request)
            if backfill_id is not None:
                conn.execute(backfills.update().where(backfills.c.id == backfill_id).values(values))
                return backfill_id
            return conn.execute(
                backfills.insert().values(
                    query=query, target=target, status="open", started_at=epoch(now), **values
                )
            ).inserted_primary_key[0]

    def finish_backfill(self, backfill_id: int, now: datetime) -> None:
        """A backfill that exported its whole range is done: the same command later starts
        a new one and exports the whole range again. Its progress rows go; so do the older
        done backfills of the same query and target (status shows the last one)."""
        with self._begin() as conn:
            row = conn.execute(sa.select(backfills).where(backfills.c.id == backfill_id)).one()
            conn.execute(
                backfill_progress.delete().where(backfill_progress.c.backfill_id == backfill_id)
            )
            older = sa.select(backfills.c.id).where(
                backfills.c.query == row.query,
                backfills.c.target == row.target,
                backfills.c.status == "done",
            )
            conn.execute(
                backfill_progress.delete().where(backfill_progress.c.backfill_id.in_(older))
            )
            conn.execute(backfills.delete().where(backfills.c.id.in_(older)))
            conn.execute(
                backfills.update()
                .where(backfills.c.id == backfill_id)
                .values(status="done", finished_at=epoch(now), updated_at=epoch(now))
            )

    def backfills(self) -> list[BackfillRecord]:
        """Every open backfill and the last done one of each (query, target), for `status`."""
        with self._begin() as conn:
            rows = conn.execute(
                sa.select(
                    backfills,
                    exports.c.status.label("last_status"),
                    exports.c.error.label("last_error"),
                    exports.c.started_at.label("last_run"),
                    leases.c.holder.label("lease_holder"),
                    leases.c.expires_at.label("lease_expires_at"),
                )
                .select_from(
                    backfills.outerjoin(exports, exports.c.id == backfills.c.export_id).outerjoin(
                        leases,
                        sa.and_(
                            leases.c.query == backfills.c.query,
                            leases.c.target == backfills.c.target,
                            leases.c.holder == backfills.c.holder,
                        ),
                    )
                )
                .order_by(backfills.c.query, backfills.c.target, backfills.c.id)
            ).all()
            done = {
                r.id: [
                    (from_epoch(p.since), from_epoch(p.until))
                    for p in conn.execute(
                        sa.select(backfill_progress.c.since, backfill_progress.c.until).where(
                            backfill_progress.c.backfill_id == r.id
                        )
                    )
                ]
                for r in rows
                if r.status == "open"
            }
        return [
            BackfillRecord(
                query=r.query,
                target=r.target,
                since_spec=r.since_spec,
                until_spec=r.until_spec,
                since=from_epoch(r.range_since),
                until=from_epoch(r.range_until),
                done=r.status == "done",
                segments=done.get(r.id, []),
                holder=r.holder,
                lease_expires_at=from_epoch(r.lease_expires_at) if r.lease_holder else None,
                last_run=from_epoch(r.last_run) if r.last_run else from_epoch(r.started_at),
                last_status=r.last_status,
                last_error=r.last_error,
            )
            for r in rows
        ]

    # -- leases --------------------------------------------------------------------------------

    def acquire_lease(
        self,
        query: str,
        target: str,
        holder: str,
        ttl: timedelta,
        now: datetime,
        *,
        holder_is_dead: Callable[[str], bool] = lambda _holder: False,
    ) -> bool:
        """Take or renew the (query, target) lease; False if another live holder has it.

        A lease is free when it has expired or when `holder_is_dead` says its holder crashed
        (a process on this host that no longer runs). Insert-if-absent and compare-and-set on
        `expires_at` make it atomic on SQLite and PostgreSQL alike. On PostgreSQL the row to
        take is locked first with FOR UPDATE SKIP LOCKED: a lease that another worker is taking
        at this instant is busy at once, without waiting for that worker's transaction. Only a
        lease this worker may take is locked, so a live holder's renewal never finds it locked.
        """
        expires = epoch(now + ttl)
        where = (leases.c.query == query, leases.c.target == target)
        with self._begin() as conn:
            current = conn.execute(sa.select(leases).where(*where)).first()
            if current is None:
                inserted = conn.execute(
                    _insert(conn)(leases)
                    .values(query=query, target=target, holder=holder, expires_at=expires)
                    .on_conflict_do_nothing()
                    .returning(leases.c.holder)
                ).first()
                return inserted is not None
            free = current.expires_at <= epoch(now) or holder_is_dead(current.holder)
            if current.holder != holder and not free:
                return False
            if conn.dialect.name == "postgresql" and not _lock_lease(conn, current):
                return False
            taken = conn.execute(
                leases.update()
                .where(*where, leases.c.holder == current.holder)
                .where(leases.c.expires_at == current.expires_at)
                .values(holder=holder, expires_at=expires)
            )
            return taken.rowcount == 1

    def lease_holder(self, query: str, target: str) -> tuple[str, datetime] | None:
        with self._begin() as conn:
            row = conn.execute(
                sa.select(leases.c.holder, leases.c.expires_at).where(
                    leases.c.query == query, leases.c.target == target
                )
            ).first()
        return None if row is None else (row.holder, from_epoch(row.expires_at))

    def release_lease(self, query: str, target: str, holder: str) -> None:
        with self._begin() as conn:
            conn.execute(
                leases.delete().where(
                    leases.c.query == query, leases.c.target == target, leases.c.holder == holder
                )
            )

    # -- verify ---------------------------------------------------------------------------------

    def record_verify(self, record: VerifyRecord) -> None:
        """Keep `record` as the last verify of its (query, target)."""
        values = {
            **record.__dict__,
            "verified_at": epoch(record.verified_at),
            "since": epoch(record.since) if record.since else None,
            "until": epoch(record.until) if record.until else None,
            "error": redact(record.error) if record.error else None,
        }
        where = (verifications.c.query == record.query, verifications.c.target == record.target)
        with self._begin() as conn:
            conn.execute(verifications.delete().where(*where))
            conn.execute(verifications.insert().values(**values))

    def latest_verifies(self) -> dict[tuple[str, str], VerifyRecord]:
        with self._begin() as conn:
            rows = conn.execute(sa.select(verifications)).all()
        return {
            (r.query, r.target): VerifyRecord(
                **{
                    **r._asdict(),
                    "verified_at": from_epoch(r.verified_at),
                    "since": from_epoch(r.since),
                    "until": from_epoch(r.until),
                }
            )
            for r in rows
        }


def _lock_lease(conn: Connection, current: sa.Row) -> bool:
    """Lock this version of the lease row; False if another transaction holds it or it changed."""
    locked = conn.execute(
        sa.select(leases.c.holder)
        .where(
            leases.c.query == current.query,
            leases.c.target == current.target,
            leases.c.holder == current.holder,
            leases.c.expires_at == current.expires_at,
        )
        .with_for_update(skip_locked=True)
    ).first()
    return locked is not None


def _insert(conn: Connection):
    """The dialect's INSERT, which knows ON CONFLICT DO NOTHING (SQLite and PostgreSQL)."""
    if conn.dialect.name == "postgresql":
        return postgresql.insert
    return sqlite.insert


def _upsert_checkpoint(
    conn: Connection, query: str, target: str, until: int, now: int, *, only_forward: bool
) -> None:
    where = (checkpoints.c.query == query, checkpoints.c.target == target)
    current = conn.execute(sa.select(checkpoints.c.exported_until).where(*where)).scalar()
    if current is None:
        conn.execute(
            checkpoints.insert().values(
                query=query, target=target, exported_until=until, updated_at=now
            )
        )
    elif not only_forward or until > current:
        conn.execute(
            checkpoints.update().where(*where).values(exported_until=until, updated_at=now)
        )


def _extend_backfill(
    conn: Connection, backfill_id: int, query: str, target: str, since: int, until: int, now: int
) -> None:
    """Grow the segment that ends where this window starts, or start a new one."""
    extended = conn.execute(
        backfill_progress.update()
        .where(backfill_progress.c.backfill_id == backfill_id, backfill_progress.c.until == since)
        .values(until=until, updated_at=now)
    )
    if extended.rowcount == 0:
        conn.execute(
            backfill_progress.insert().values(
                backfill_id=backfill_id,
                query=query,
                target=target,
                since=since,
                until=until,
                updated_at=now,
            )
        )
    conn.execute(backfills.update().where(backfills.c.id == backfill_id).values(updated_at=now))


def _open_backfill_id(
    conn: Connection, query: str, target: str, request: tuple[str, str]
) -> int | None:
    """The open backfill of exactly this request, else an open one from before 0002."""
    open_ = sa.select(backfills.c.id).where(
        backfills.c.query == query, backfills.c.target == target, backfills.c.status == "open"
    )
    same = conn.execute(
        open_.where(backfills.c.since_spec == request[0], backfills.c.until_spec == request[1])
    ).scalar()
    if same is not None:
        return same
    return conn.execute(open_.where(backfills.c.since_spec.is_(None)).limit(1)).scalar()
