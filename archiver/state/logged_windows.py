"""Reads of the windows log: what was written for a (query, target) and what it cost.

The runner sizes windows from them, `verify` finds where an export began, `--dry-run` estimates.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa

from archiver.state.schema import from_epoch, windows_log


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


class LoggedWindows:
    """The windows-log reads of `State` (which provides `_begin`)."""

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
