"""One window of `verify`: read it back, compare it with New Relic's answer, repair it.

A repair deletes (with --prune) the extra points and rewrites the missing and different ones
through the same sink `run` writes with; then the window is read and compared again.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from archiver import queries
from archiver.sinks.base import Precision, ReadableSink, RetentionPolicy, Series
from archiver.verify.compare import Comparison, Point, compare, parse_line
from archiver.verify.report import EXAMPLES, TargetReport, describe, example
from archiver.windows import EPOCH, Window


def epoch_ns(moment: datetime) -> int:
    return (moment - EPOCH) // timedelta(microseconds=1) * 1000


class WindowCheck:
    """Compares (and with `repair`, repairs) windows of InfluxDB against New Relic's lines."""

    def __init__(self, sink: ReadableSink, *, repair: bool, prune: bool) -> None:
        self.sink = sink
        self.repair = repair
        self.prune = prune

    def check(
        self,
        target: queries.Target,
        series: Series,
        window: Window,
        lines: list[str],
        precision: Precision,
        policy: RetentionPolicy | None,
        report: TargetReport,
    ) -> None:
        expected = [parse_line(line, precision) for line in lines]
        comparison = compare(expected, self._read(target, series, window, policy))
        report.windows += 1
        report.checked += comparison.checked
        for kind in ("missing", "different", "extra"):
            setattr(report, kind, getattr(report, kind) + len(comparison.of(kind)))
        for kind in ("missing", "different", "extra"):  # the first few of each kind
            shown = sum(e["kind"] == kind for e in report.examples)
            report.examples += [example(d) for d in comparison.of(kind)[: EXAMPLES - shown]]
        if comparison.clean:
            return
        if not self.repair:
            report.remaining += len(comparison.differences)
            return
        self._repair(target, series, comparison, precision, report)
        after = compare(expected, self._read(target, series, window, policy=True))
        report.remaining += len(after.differences)

    def policy_after_repair(self, target: queries.Target) -> RetentionPolicy | None:
        if not self.repair:
            return None
        return self.sink.existing_policy(target.database, target.retention_policy)

    def _read(
        self,
        target: queries.Target,
        series: Series,
        window: Window,
        policy: RetentionPolicy | bool | None,
    ) -> list[Point]:
        if not policy:  # no database or retention policy: nothing was kept
            return []
        return self.sink.read_points(
            target.database,
            target.retention_policy,
            series,
            epoch_ns(window.since),
            epoch_ns(window.until),
        )

    def _repair(
        self,
        target: queries.Target,
        series: Series,
        comparison: Comparison,
        precision: Precision,
        report: TargetReport,
    ) -> None:
        """Delete (with --prune) the extra points, rewrite the missing and different ones."""
        database, rp = target.database, target.retention_policy
        self.sink.ensure_target(database, rp, target.retention_duration)
        rewrite = comparison.of("missing") + comparison.of("different")
        if self.prune:
            extra = [d.actual for d in comparison.of("extra")]
            # Fields only InfluxDB has survive a rewrite (it merges fields): delete, then write.
            stale = [d.actual for d in rewrite if d.fields_only_in_influxdb]
            deleted = self.sink.delete_points(database, rp, series, [*extra, *stale])  # type: ignore[list-item]
            extra_keys = {point.key for point in extra if point}
            report.pruned += sum(point.key in extra_keys for point in deleted.deleted)
            report.not_pruned += [f"{describe(point)}: {reason}" for point, reason in deleted.kept][
                : EXAMPLES - len(report.not_pruned)
            ]
        lines = [d.expected.line for d in rewrite if d.expected and d.expected.line]
        if lines:
            self.sink.write(database, rp, lines, precision)
            report.repaired += len(lines)
