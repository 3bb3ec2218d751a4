"""Leases: one worker at a time exports a (query, target)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from archiver.state.schema import epoch, from_epoch, leases


class Leases:
    """The lease methods of `State` (which provides `_begin`)."""

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
    """The dialect's INSERT, which knows ON CONFLICT DO NOTHING (SQLite and PostgreSQL).

    Imported here: the PostgreSQL dialect costs ~20 ms to import, for nothing on SQLite.
    """
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    return insert
