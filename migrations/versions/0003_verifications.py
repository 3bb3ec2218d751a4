"""The last `verify` of each (query, target), which `status` shows.

A new table only: checkpoints, the run log and backfill progress are untouched.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "verifications",
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


def downgrade() -> None:
    op.drop_table("verifications")
