"""`nr-archiver status`: per query and target, how far it is exported and how it last went.

Incremental exports and backfills are told apart: a (query, target) row is its incremental
record (checkpoint, lag, last incremental export); each open backfill, and the last finished
one, is listed with its range, how much of it is done and how to resume it. The last pass of
the archiver (any kind) is shown with its cause when it failed as a whole.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from archiver import queries
from archiver.errors import ConfigError, ExitCode
from archiver.pipeline.job import holder_is_dead
from archiver.queries import QueryDef
from archiver.state.backfills import BackfillRecord
from archiver.state.store import PassRecord, State
from archiver.state.verifications import VerifyRecord
from archiver.windows import iso


@dataclass(frozen=True)
class BackfillStatus:
    requested_since: str | None  # as asked: '7d' or an ISO instant; None: before the upgrade
    requested_until: str | None  # 'now' when --until was not given
    since: str  # the range of its last attempt
    until: str
    state: str  # running | partial | done
    done_seconds: int
    total_seconds: int
    percent: int
    resumable: bool
    resume_command: str | None
    last_run: str
    last_status: str | None  # the last export that worked on it: ok | failed | interrupted …
    last_error: str | None


@dataclass(frozen=True)
class PassStatus:
    kind: str
    started: str
    finished: str | None
    exit_code: int | None
    error: str | None

    @property
    def ok(self) -> bool:
        return self.exit_code == 0


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
    kind: str = "incremental"  # the row's own fields describe incremental exports
    backfills: list[BackfillStatus] = field(default_factory=list)
    last_pass: PassStatus | None = None  # the archiver's last pass, the same in every row


@dataclass(frozen=True)
class StatusReport:
    rows: list[TargetStatus]
    last_pass: PassStatus | None
    folder_problem: str | None  # one line: what is wrong with the queries folder


def report(db_url: str, queries_dir: Path, now: datetime) -> StatusReport:
    """The status of the state database, with the query files as far as they can be read."""
    state = State.open(db_url)
    known: list[QueryDef] = []
    problem = None
    try:
        loaded = queries.load_dir(queries_dir)
    except ConfigError as exc:
        problem = f"{exc} (ARCHIVER_QUERIES_DIR)"
    else:
        known = loaded.queries
        if count := len(loaded.problems):
            broken = "file has a problem" if count == 1 else f"{count} files have problems"
            problem = f"queries folder '{queries_dir}': {broken}; see nr-archiver validate"
    last = state.last_pass()
    last_pass = None
    if last is not None:
        last_pass = _pass(last)
    return StatusReport(collect(state, known, now, last_pass), last_pass, problem)


def collect(
    state: State, known: list[QueryDef], now: datetime, last_pass: PassStatus | None = None
) -> list[TargetStatus]:
    checkpoints = {(c.query, c.target): c.exported_until for c in state.all_checkpoints()}
    exports = state.latest_exports()
    verifies = state.latest_verifies()
    backfills: dict[tuple[str, str], list[BackfillStatus]] = {}
    for record in state.backfills():
        backfills.setdefault((record.query, record.target), []).append(_backfill(record, now))
    configured = {
        (q.job_name(account), t.key)
        for q in known
        for account in q.accounts(None)
        for t in q.targets
    }
    rows = []
    for query, target in sorted(configured | set(checkpoints) | set(exports) | set(backfills)):
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
                backfills=backfills.get((query, target), []),
                last_pass=last_pass,
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


def _pass(record: PassRecord) -> PassStatus:
    return PassStatus(
        kind=record.kind,
        started=iso(record.started_at),
        finished=iso(record.finished_at) if record.finished_at else None,
        exit_code=record.exit_code,
        error=record.error,
    )


def _backfill(record: BackfillRecord, now: datetime) -> BackfillStatus:
    total = max(0, int((record.until - record.since).total_seconds()))
    if record.done:
        done, state = total, "done"
    else:
        covered = sum(
            (
                max(timedelta(0), min(until, record.until) - max(since, record.since))
                for since, until in record.segments
            ),
            timedelta(0),
        )
        done = min(total, int(covered.total_seconds()))
        held = record.lease_expires_at is not None and record.lease_expires_at > now
        state = "running" if held and not holder_is_dead(record.holder or "") else "partial"
    return BackfillStatus(
        requested_since=record.since_spec,
        requested_until=record.until_spec,
        since=iso(record.since),
        until=iso(record.until),
        state=state,
        done_seconds=done,
        total_seconds=total,
        percent=100 if total == 0 else done * 100 // total,
        resumable=not record.done,
        resume_command=None if record.done else _resume_command(record),
        last_run=iso(record.last_run),
        last_status=record.last_status,
        last_error=record.last_error,
    )


def _resume_command(record: BackfillRecord) -> str:
    if record.since_spec is None:  # progress from before the upgrade: any backfill takes it
        return f"nr-archiver run --query {record.query} --since ... (any range)"
    until = "" if record.until_spec == "now" else f" --until {record.until_spec}"
    return f"nr-archiver run --query {record.query} --since {record.since_spec}{until}"


def to_json(rows: list[TargetStatus]) -> str:
    return json.dumps([asdict(row) for row in rows], indent=2, ensure_ascii=False)


def _lag(seconds: int | None) -> str:
    if seconds is None:
        return "-"
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s"


def to_table(rows: list[TargetStatus], last_pass: PassStatus | None = None) -> str:
    lines = [_table(rows)] if rows else ["no query has run yet"]
    for row in rows:
        for backfill in row.backfills:
            if backfill.resume_command:
                lines.append(f"resume {row.query} → {row.target}: {backfill.resume_command}")
    if last_pass is not None:
        lines.append(f"last pass: {last_pass.started} ({last_pass.kind}) {_outcome(last_pass)}")
    return "\n".join(lines)


def _outcome(last_pass: PassStatus) -> str:
    if last_pass.ok:
        return "ok"
    if last_pass.exit_code == ExitCode.INTERRUPTED:
        return "interrupted"
    outcome = f"failed (exit {last_pass.exit_code})"
    if last_pass.error:
        return f"{outcome}: {last_pass.error}"
    return f"{outcome}: see the failed rows above"


def _backfill_result(backfill: BackfillStatus) -> str:
    """`partial (failed)`: a backfill's state, and how its last attempt ended if not ok."""
    ended = backfill.last_status
    if backfill.state == "partial" and ended not in (None, "ok", "running"):
        return f"partial ({ended})"
    return backfill.state


def _table(rows: list[TargetStatus]) -> str:
    header = ("QUERY", "TARGET", "KIND", "EXPORTED UNTIL", "LAG", "LAST RUN", "RESULT", "ERROR")
    table = [header]
    for row in rows:
        name = row.query + ("" if row.in_query_files else " (no file)")
        table.append(
            (
                name,
                row.target,
                row.kind,
                row.exported_until or "never",
                _lag(row.lag_seconds),
                row.last_run or "-",
                row.last_status or "-",
                (row.last_error or "")[:120],
            )
        )
        for backfill in row.backfills:
            table.append(
                (
                    name,
                    row.target,
                    "backfill",
                    f"{backfill.percent}% of {backfill.since} → {backfill.until}",
                    "-",
                    backfill.last_run,
                    _backfill_result(backfill),
                    (backfill.last_error or "")[:120],
                )
            )
    widths = [max(len(r[i]) for r in table) for i in range(len(header) - 1)]
    return "\n".join(
        (
            "  ".join(cell.ljust(width) for cell, width in zip(r, widths, strict=False))
            + "  "
            + r[-1]
        ).rstrip()
        for r in table
    )
