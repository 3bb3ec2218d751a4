"""The state database's tables, as the Alembic migrations in `migrations/` create them.

They describe the schema for queries (and for `migrations/env.py`), and `migrate.upgrade()`
creates a new database from them: the same tables, columns in the same order, indexes and
constraint names as the migrations give (tests/test_state_upgrade.py). `migrate.upgrade()` is the
one place that changes the schema. Instants are stored as epoch seconds (BIGINT): the same on every
backend, with no time-zone surprises.
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa

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
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("error", sa.Text),
    sa.Column("started_at", sa.BigInteger, nullable=False),
    sa.Column("finished_at", sa.BigInteger),
    sa.Column("inspected", sa.BigInteger),  # added by 0004, last as in a migrated database
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
    sa.Column(
        "backfill_id",
        sa.Integer,
        sa.ForeignKey("backfills.id", name="fk_backfill_progress_backfill_id"),  # as 0002 names it
        nullable=False,
    ),
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


def epoch(t: datetime) -> int:
    return int(t.timestamp())


def from_epoch(seconds: int | None) -> datetime | None:
    return None if seconds is None else datetime.fromtimestamp(seconds, UTC)
