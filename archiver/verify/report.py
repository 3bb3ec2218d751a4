"""What `verify` found: the report per (query, target), its table, JSON and self-metric."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta

from archiver import lineprotocol
from archiver.errors import ExitCode
from archiver.verify.compare import Difference, Point
from archiver.windows import iso

EXAMPLES = 5  # differences of each kind shown per (query, target)
METRICS_MEASUREMENT = "nr_archiver"


@dataclass
class TargetReport:
    """One (query, target): the `--json` object."""

    query: str
    target: str
    account_id: int | None
    since: str | None = None
    until: str | None = None
    windows: int = 0
    checked: int = 0
    missing: int = 0
    different: int = 0
    extra: int = 0
    repaired: int = 0
    pruned: int = 0
    remaining: int = 0  # differences left after the repair (all of them without --repair)
    status: str = "ok"  # ok | differs | failed | busy | not exported
    error: str | None = None
    nr_requests: int = 0
    sampled: list[str] | None = None  # the windows --sample chose
    not_pruned: list[str] = field(default_factory=list)  # extra points kept, and why
    examples: list[dict] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status in ("ok", "not exported")


@dataclass
class VerifyReport:
    targets: list[TargetReport] = field(default_factory=list)

    @property
    def exit_code(self) -> ExitCode:
        return ExitCode.OK if all(t.ok for t in self.targets) else ExitCode.QUERY_FAILED


def metrics_line(report: TargetReport, now: datetime) -> str:
    tags = {
        "kind": "verify",
        "query": report.query,
        "status": report.status,
        "target": report.target,
    }
    fields = {
        "windows": report.windows,
        "checked": report.checked,
        "missing": report.missing,
        "different": report.different,
        "extra": report.extra,
        "repaired": report.repaired,
        "pruned": report.pruned,
        "remaining": report.remaining,
        "nr_requests": report.nr_requests,
        "failed": 0 if report.ok else 1,
    }
    return lineprotocol.point(METRICS_MEASUREMENT, tags, fields, int(now.timestamp()))


def describe(point: Point) -> str:
    tags = ",".join(f"{k}={v}" for k, v in point.tags)
    when = datetime.fromtimestamp(point.time_ns // 10**9, UTC) + timedelta(
        microseconds=point.time_ns % 10**9 // 1000
    )
    return f"{point.measurement}{',' if tags else ''}{tags} {iso(when)}"


def example(difference: Difference) -> dict:
    point = difference.point
    return {
        "kind": difference.kind,
        "measurement": point.measurement,
        "tags": dict(point.tags),
        "time": describe(point).rpartition(" ")[2],
        "time_ns": point.time_ns,
        "new_relic": dict(difference.expected.fields) if difference.expected else None,
        "influxdb": dict(difference.actual.fields) if difference.actual else None,
    }


def to_json(report: VerifyReport) -> str:
    return json.dumps([asdict(t) for t in report.targets], indent=2, ensure_ascii=False)


def _fields(fields: dict | None) -> str:
    if fields is None:
        return "-"
    return ",".join(f"{k}={v!r}" for k, v in fields.items())


def to_table(report: VerifyReport) -> str:
    if not report.targets:
        return "nothing to verify"
    header = (
        "QUERY",
        "TARGET",
        "WINDOWS",
        "CHECKED",
        "MISSING",
        "DIFFERENT",
        "EXTRA",
        "REPAIRED",
        "PRUNED",
        "RESULT",
    )
    rows = [header] + [
        (
            t.query,
            t.target,
            str(t.windows),
            str(t.checked),
            str(t.missing),
            str(t.different),
            str(t.extra),
            str(t.repaired),
            str(t.pruned),
            t.status,
        )
        for t in report.targets
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    out = [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]
    for t in report.targets:
        head = f"{t.query} → {t.target}"
        notes = []
        if t.since and t.until:
            notes.append(f"  range [{t.since}, {t.until}), account {t.account_id}")
        if t.sampled is not None:
            notes.append(f"  sampled {len(t.sampled)} windows: {', '.join(t.sampled)}")
        if t.error:
            notes.append(f"  error: {t.error}")
        for e in t.examples:
            tags = ",".join(f"{k}={v}" for k, v in e["tags"].items()) or "(no tags)"
            notes.append(
                f"  {e['kind']:<9} {tags} {e['time']}  new relic: {_fields(e['new_relic'])}"
                f"  influxdb: {_fields(e['influxdb'])}"
            )
        notes += [f"  not pruned: {note}" for note in t.not_pruned]
        if t.repaired or t.pruned:
            notes.append(f"  after the repair: {t.remaining} differences remain")
        if notes:
            out += ["", head, *notes]
    return "\n".join(out)
