"""`nr-archiver status`: per query and target, how far it is exported and how it last went."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import datetime

from archiver.queries import QueryDef
from archiver.state import State, VerifyRecord
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
    last_verify: dict | None = None  # the last `nr-archiver verify` of it, None if never


def collect(state: State, known: list[QueryDef], now: datetime) -> list[TargetStatus]:
    checkpoints = {(c.query, c.target): c.exported_until for c in state.all_checkpoints()}
    exports = state.latest_exports()
    verifies = state.latest_verifies()
    configured = {(q.name, t.key) for q in known for t in q.targets}
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
                last_verify=_verify(verifies.get((query, target))),
            )
        )
    return rows


def _verify(record: VerifyRecord | None) -> dict | None:
    if record is None:
        return None
    counts = ("windows", "checked", "missing", "different", "extra", "repaired", "pruned")
    return {
        "verified_at": iso(record.verified_at),
        "status": record.status,
        **{key: getattr(record, key) for key in (*counts, "remaining")},
        "error": record.error,
    }


def verify_section(rows: list[TargetStatus]) -> str:
    """Below the table: the last verify of each target that had one."""
    lines = []
    for row in rows:
        if (v := row.last_verify) is None:
            continue
        lines.append(
            f"{row.query} → {row.target}: verified {v['verified_at']}: {v['status']}, "
            f"{v['checked']} points checked, {v['missing']} missing, {v['different']} "
            f"different, {v['extra']} extra, {v['repaired']} repaired, {v['pruned']} pruned, "
            f"{v['remaining']} remaining" + (f": {v['error']}" if v["error"] else "")
        )
    return "\n\nLAST VERIFY\n" + "\n".join(lines) if lines else ""


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
        (
            "  ".join(cell.ljust(width) for cell, width in zip(r, widths, strict=False))
            + "  "
            + r[-1]
        ).rstrip()
        for r in table
    )
