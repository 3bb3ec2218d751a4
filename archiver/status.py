"""`nr-archiver status`: per query and target, how far it is exported and how it last went."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import datetime

from archiver.queries import QueryDef
from archiver.state import State
from archiver.windows import iso


@dataclass(frozen=True)
class TargetStatus:
    query: str
    target: str
    exported_until: str | None
    lag_seconds: int | None
    last_status: str | None  # ok | failed | busy | interrupted | None (never ran)
    last_run: str | None
    last_error: str | None
    in_query_files: bool


def collect(state: State, known: list[QueryDef], now: datetime) -> list[TargetStatus]:
    checkpoints = {(c.query, c.target): c.exported_until for c in state.all_checkpoints()}
    exports = state.latest_exports()
    configured = {
        (q.job_name(account), t.key)
        for q in known
        for account in q.accounts(None)
        for t in q.targets
    }
    rows = []
    for query, target in sorted(configured | set(checkpoints) | set(exports)):
        until = checkpoints.get((query, target))
        export = exports.get((query, target))
        rows.append(
            TargetStatus(
                query=query,
                target=target,
                exported_until=iso(until) if until else None,
                lag_seconds=int((now - until).total_seconds()) if until else None,
                last_status=export.status if export else None,
                last_run=iso(export.started_at) if export else None,
                last_error=export.error if export else None,
                in_query_files=(query, target) in configured,
            )
        )
    return rows


def to_json(rows: list[TargetStatus]) -> str:
    return json.dumps([asdict(row) for row in rows], indent=2, ensure_ascii=False)


def _lag(seconds: int | None) -> str:
    if seconds is None:
        return "-"
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s"


def to_table(rows: list[TargetStatus]) -> str:
    if not rows:
        return "no query has run yet"
    header = ("QUERY", "TARGET", "EXPORTED UNTIL", "LAG", "LAST RUN", "RESULT", "ERROR")
    table = [header] + [
        (
            row.query + ("" if row.in_query_files else " (no file)"),
            row.target,
            row.exported_until or "never",
            _lag(row.lag_seconds),
            row.last_run or "-",
            row.last_status or "-",
            (row.last_error or "")[:120],
        )
        for row in rows
    ]
    widths = [max(len(r[i]) for r in table) for i in range(len(header) - 1)]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(r, widths, strict=False)) + "  " + r[-1]
        for r in table
    ).rstrip()
