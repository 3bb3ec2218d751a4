"""The last `verify` of each (query, target), for `status`."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa

from archiver.logs import redact
from archiver.state.schema import epoch, from_epoch, verifications


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


class Verifications:
    """The verify methods of `State` (which provides `_begin`)."""

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
