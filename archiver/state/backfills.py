"""Backfills: the ranges the user asked for, and their progress (never the checkpoints).

A backfill keeps its own progress, and a written window extends it in the same transaction
that logs the window (`State.record_window`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from archiver.state.schema import (
    backfill_progress,
    backfills,
    epoch,
    exports,
    from_epoch,
    leases,
)


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


class Backfills:
    """The backfill methods of `State` (which provides `_begin`)."""

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


def extend_backfill(
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
