"""The cost and size of each written window: inspected count and the bucket cap.

`windows.inspected` is New Relic's performanceStats.inspectedCount of the window (NULL when New
Relic did not tell); `windows.max_buckets` the most buckets New Relic still answered for the
query when the window was written (NULL: never refused one); `exports.inspected` their sum.
Existing rows keep everything they had; the new columns start NULL.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("windows") as batch:
        batch.add_column(sa.Column("inspected", sa.BigInteger))
        batch.add_column(sa.Column("max_buckets", sa.Integer))
    with op.batch_alter_table("exports") as batch:
        batch.add_column(sa.Column("inspected", sa.BigInteger))


def downgrade() -> None:
    with op.batch_alter_table("exports") as batch:
        batch.drop_column("inspected")
    with op.batch_alter_table("windows") as batch:
        batch.drop_column("max_buckets")
        batch.drop_column("inspected")
