"""Backfill progress keyed by the request; why a whole pass failed.

Progress rows of 0001 knew only (query, target), so a finished backfill could leave rows
behind that made the next backfill skip data. 0002 gives every backfill its own row in
`backfills` (the range as it was asked) and hangs the progress rows on it.

Existing progress is kept: per (query, target), its rows become one backfill whose request is
unknown (NULL specs). It stays open (resumable by the next backfill of that query and target)
when the last backfill export of that pair did not end `ok` (interrupted, failed, or killed:
still `running`); when it ended `ok`, 0001 had finished that backfill and the rows are what it
failed to forget, so the backfill is recorded as done and never skips anything again.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

runs = sa.table("runs", sa.column("id"), sa.column("kind"))
exports = sa.table(
    "exports", sa.column("id"), sa.column("run_id"), sa.column("query"), sa.column("target"),
    sa.column("status"),
)  # fmt: skip
progress = sa.table(
    "backfill_progress", sa.column("query"), sa.column("target"), sa.column("since"),
    sa.column("until"), sa.column("updated_at"), sa.column("backfill_id"),
)  # fmt: skip
backfills = sa.table(
    "backfills", sa.column("id"), sa.column("query"), sa.column("target"),
    sa.column("range_since"), sa.column("range_until"), sa.column("status"),
    sa.column("started_at"), sa.column("updated_at"), sa.column("finished_at"),
)  # fmt: skip


def upgrade() -> None:
    op.add_column("runs", sa.Column("error", sa.Text))
    op.create_table(
        "backfills",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("query", sa.String(200), nullable=False),
        sa.Column("target", sa.String(400), nullable=False),
        sa.Column("since_spec", sa.String(100)),
        sa.Column("until_spec", sa.String(100)),
        sa.Column("range_since", sa.BigInteger, nullable=False),
        sa.Column("range_until", sa.BigInteger, nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("holder", sa.String(200)),
        sa.Column("export_id", sa.Integer),
        sa.Column("started_at", sa.BigInteger, nullable=False),
        sa.Column("updated_at", sa.BigInteger, nullable=False),
        sa.Column("finished_at", sa.BigInteger),
    )
    op.create_index("ix_backfills_query_target", "backfills", ["query", "target", "status"])
    with op.batch_alter_table("backfill_progress") as batch:
        batch.add_column(sa.Column("backfill_id", sa.Integer, nullable=True))
    _adopt_existing_progress(op.get_bind())
    with op.batch_alter_table("backfill_progress") as batch:
        batch.alter_column("backfill_id", existing_type=sa.Integer, nullable=False)
        batch.create_foreign_key(
            "fk_backfill_progress_backfill_id", "backfills", ["backfill_id"], ["id"]
        )
        batch.create_index("ix_backfill_progress_backfill_id", ["backfill_id"])


def _adopt_existing_progress(conn: sa.Connection) -> None:
    pairs = conn.execute(
        sa.select(
            progress.c.query,
            progress.c.target,
            sa.func.min(progress.c.since),
            sa.func.max(progress.c.until),
            sa.func.max(progress.c.updated_at),
        ).group_by(progress.c.query, progress.c.target)
    ).all()
    for query, target, since, until, updated in pairs:
        last_status = conn.execute(
            sa.select(exports.c.status)
            .select_from(exports.join(runs, runs.c.id == exports.c.run_id))
            .where(exports.c.query == query, exports.c.target == target)
            .where(runs.c.kind == "backfill")
            .order_by(exports.c.id.desc())
            .limit(1)
        ).scalar()
        finished = last_status == "ok"
        backfill_id = conn.execute(
            backfills.insert()
            .values(
                query=query,
                target=target,
                range_since=since,
                range_until=until,
                status="done" if finished else "open",
                started_at=updated,
                updated_at=updated,
                finished_at=updated if finished else None,
            )
            .returning(backfills.c.id)
        ).scalar_one()
        conn.execute(
            progress.update()
            .where(progress.c.query == query, progress.c.target == target)
            .values(backfill_id=backfill_id)
        )


def downgrade() -> None:
    with op.batch_alter_table("backfill_progress") as batch:
        batch.drop_index("ix_backfill_progress_backfill_id")
        batch.drop_constraint("fk_backfill_progress_backfill_id", type_="foreignkey")
        batch.drop_column("backfill_id")
    op.drop_index("ix_backfills_query_target", "backfills")
    op.drop_table("backfills")
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("error")
