"""Initial schema: checkpoints, run log, backfill progress, leases.

Revision ID: 0001
Revises:
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "checkpoints",
        sa.Column("query", sa.String(200), primary_key=True),
        sa.Column("target", sa.String(400), primary_key=True),
        sa.Column("exported_until", sa.BigInteger, nullable=False),
        sa.Column("updated_at", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "runs",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("started_at", sa.BigInteger, nullable=False),
        sa.Column("finished_at", sa.BigInteger),
        sa.Column("exit_code", sa.Integer),
        sa.Column("host", sa.String(200), nullable=False),
        sa.Column("pid", sa.Integer, nullable=False),
    )
    op.create_table(
        "exports",
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
    )
    op.create_index("ix_exports_query_target", "exports", ["query", "target", "id"])
    op.create_table(
        "windows",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("export_id", sa.Integer, sa.ForeignKey("exports.id"), nullable=False),
        sa.Column("query", sa.String(200), nullable=False),
        sa.Column("target", sa.String(400), nullable=False),
        sa.Column("since", sa.BigInteger, nullable=False),
        sa.Column("until", sa.BigInteger, nullable=False),
        sa.Column("points", sa.Integer, nullable=False),
        sa.Column("written_at", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_windows_written_at", "windows", ["written_at"])
    op.create_table(
        "backfill_progress",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("query", sa.String(200), nullable=False),
        sa.Column("target", sa.String(400), nullable=False),
        sa.Column("since", sa.BigInteger, nullable=False),
        sa.Column("until", sa.BigInteger, nullable=False),
        sa.Column("updated_at", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_backfill_progress_query_target", "backfill_progress", ["query", "target"])
    op.create_table(
        "leases",
        sa.Column("query", sa.String(200), primary_key=True),
        sa.Column("target", sa.String(400), primary_key=True),
        sa.Column("holder", sa.String(200), nullable=False),
        sa.Column("expires_at", sa.BigInteger, nullable=False),
    )


def downgrade() -> None:
    for table in ("leases", "backfill_progress", "windows", "exports", "runs", "checkpoints"):
        op.drop_table(table)
