"""`make bench`: the archiver against InfluxDB's own ingest limit, with bounded memory.

Starts the fake NerdGraph server (no latency, 31 days of retention) and, for each measurement,
a fresh throwaway influxd, then measures:

- transform: NerdGraph rows → line protocol, rows/s on one core (in process);
- limit: InfluxDB's ingest rate for the pre-built, gzipped line protocol of a 7-day backfill,
  posted directly in 5,000-line batches;
- backfill 7d / 30d: `nr-archiver run --since T --until T+Nd --query bench` as a child process
  (a 1-minute FACET query with 100 facet values): points/s, wall time, peak RSS, New Relic
  requests, CPU seconds of archiver, influxd and fake;
- hourly: one `nr-archiver run` over 200 small FACET queries, each a 1-hour incremental range.

Prints figures against targets and writes them to bench/results/latest.json. Everything it
starts is stopped, and its temp dir removed, however it ends. `--profile` instead samples the
7-day backfill with py-spy and the transform with pyinstrument (both must be installed).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from archiver import queries, windows  # noqa: E402
from archiver.queries import QueryDef  # noqa: E402
from bench import measures, profiling  # noqa: E402
from bench.fastfake import PrecomputedNerdGraph  # noqa: E402
from bench.harness import (  # noqa: E402
    ACCOUNT,
    BenchError,
    ChildRun,
    archiver_command,
    archiver_env,
    process_cpu_seconds,
    require_success,
    run_measured,
    write_query,
)
from tests.influxd import InfluxServer, running_influxd  # noqa: E402

RESULTS = REPO / "bench" / "results"
NR_RETENTION = timedelta(days=31)
LAG = timedelta(minutes=5)  # the query files' default
INTERVAL = timedelta(minutes=1)
BENCH_FACETS = 100  # `Bench` has 100 facet values
BENCH_QUERY = {
    "nrql": "SELECT average(duration), count(*) FROM Bench FACET name",
    "measurement": "bench",
    "interval": "1 minute",
    "nr_retention": "31d",
}
HOURLY_QUERIES = 200
HOURLY_NRQL = "SELECT average(duration), count(*) FROM Bench10 FACET name"
TRANSFORM_SAMPLE_WINDOWS = 10  # 200,000 rows

TARGET_RATIO = 0.50
TARGET_RSS_RATIO = 1.10
TARGET_TRANSFORM_ROWS_PER_SECOND = 500_000
TARGET_HOURLY_SECONDS = 60.0


@dataclass(frozen=True)
class Backfill:
    days: int
    points: int
    seconds: float
    peak_rss_bytes: int
    nr_requests: int
    cpu_seconds: dict[str, float]  # per process: archiver, influxd, fake NerdGraph (this one)
    precomputed_answers: int  # requests the fake answered from its precomputed replies

    @property
    def points_per_second(self) -> float:
        return self.points / self.seconds


@dataclass(frozen=True)
class Figures:
    transform_rows_per_second: float
    limit_points: int
    limit_points_per_second: float
    backfill_7d: Backfill
    backfill_30d: Backfill | None
    hourly_seconds: float
    hourly_nr_requests: int

    @property
    def ratio(self) -> float:
        return self.backfill_7d.points_per_second / self.limit_points_per_second

    @property
    def rss_ratio(self) -> float | None:
        if self.backfill_30d is None:
            return None
        return self.backfill_30d.peak_rss_bytes / self.backfill_7d.peak_rss_bytes


class Bench:
    """One benchmark run: owns the temp dir's layout and the fake server."""

    def __init__(self, tmp: Path, fake: PrecomputedNerdGraph, timeout: float, source: Path) -> None:
        self.tmp = tmp
        self.fake = fake
        self.timeout = timeout
        self.source = source
        self.runs = 0

    @contextmanager
    def influxd(self, name: str) -> Iterator[InfluxServer]:
        """A fresh influxd per measurement: no earlier data or compaction weighs on it."""
        folder = self.tmp / name
        folder.mkdir()
        try:
            with running_influxd(folder) as server:
                yield server
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def bench_query(self, database: str) -> tuple[Path, QueryDef]:
        folder = self.tmp / f"queries-{database}"
        write_query(folder, "bench", {**BENCH_QUERY, "database": database})
        loaded = queries.load_dir(folder)
        if loaded.problems:
            raise BenchError(f"bench query file: {loaded.problems[0]}")
        return folder, loaded.queries[0]

    def span(self, days: int) -> tuple[datetime, datetime]:
        """The newest `days` days the archiver may export now, as whole 1-minute buckets."""
        until = windows.floor(datetime.now(UTC) - LAG, INTERVAL)
        return until - timedelta(days=days), until

    def planned_nrql(self, query: QueryDef, days: int) -> tuple[datetime, datetime, list[str]]:
        since, until = self.span(days)
        return since, until, list(measures.planned_nrql(query, since, until, BENCH_FACETS))

    def run_archiver(
        self, what: str, argv: list[str], influx: InfluxServer, queries_dir: Path, name: str
    ) -> ChildRun:
        """`argv` against `influx` and the fake, with a fresh state database; must exit 0."""
        self.runs += 1
        name = f"{self.runs:02d}-{name}"
        env = archiver_env(
            source=self.source,
            nerdgraph_url=self.fake.url,
            api_key=self.fake.api_key,
            influx_url=influx.url,
            state_db=self.tmp / f"state-{name}.db",
            queries_dir=queries_dir,
        )
        run = run_measured(argv, env, self.source, self.tmp / f"{name}.log", self.timeout)
        return require_success(what, run)

    # -- measurements ------------------------------------------------------------------------

    def transform_rate(self) -> float:
        _, query = self.bench_query("bench_transform")
        *_, nrqls = self.planned_nrql(query, 7)
        sample = list(
            measures.answers(nrqls[1 : 1 + TRANSFORM_SAMPLE_WINDOWS], retention=NR_RETENTION)
        )
        rows, seconds = measures.transform_rate(query, sample)
        return rows / seconds

    def limit(self) -> tuple[int, float]:
        """(points, points/s) InfluxDB ingests when handed the 7-day backfill's bodies."""
        _, query = self.bench_query("bench_limit")
        *_, nrqls = self.planned_nrql(query, 7)
        source = measures.answers(nrqls, retention=NR_RETENTION)
        bodies, points = measures.gzipped_batches(query, source)
        with self.influxd("influxd-limit") as influx:
            seconds = measures.post_batches(influx.url, "bench_limit", bodies)
            written = count_points(influx, "bench_limit", "bench")
        if written != points:
            raise BenchError(f"limit: InfluxDB holds {written} points, {points} were posted")
        return points, points / seconds

    def backfill(self, days: int, *, precompute: bool, profile_to: Path | None = None) -> Backfill:
        """`nr-archiver run --since … --until … --query bench` over the newest `days` days.

        Explicit instants rather than `--since 7d`, so that the windows are known ahead and the
        fake's answers can be precomputed.
        """
        database = f"bench_{days}d"
        queries_dir, query = self.bench_query(database)
        since, until, nrqls = self.planned_nrql(query, days)
        argv = archiver_command(
            "run", "--since", windows.iso(since), "--until", windows.iso(until), "--query", "bench"
        )
        if profile_to is not None:
            argv = profiling.py_spy_command(argv, profile_to)
        if precompute:
            self.fake.precompute(ACCOUNT, nrqls)
        with self.influxd(f"influxd-{database}") as influx:
            self.fake.reset_log()
            influx_cpu, fake_cpu = process_cpu_seconds(influx.pid), process_cpu_seconds()
            run = self.run_archiver(f"the {days}-day backfill", argv, influx, queries_dir, database)
            cpu = {
                "archiver": run.cpu_seconds,
                "influxd": process_cpu_seconds(influx.pid) - influx_cpu,
                "fake": process_cpu_seconds() - fake_cpu,
            }
            nr_requests, hits = len(self.fake.requests), self.fake.precomputed_hits
            self.fake.forget_precomputed()
            points = count_points(influx, database, "bench")
        expected = days * timedelta(days=1) // INTERVAL * BENCH_FACETS
        if points != expected:
            raise BenchError(f"the {days}-day backfill wrote {points} points, not {expected}")
        return Backfill(days, points, run.seconds, run.peak_rss_bytes, nr_requests, cpu, hits)

    def hourly(self) -> tuple[float, int]:
        """(wall seconds, New Relic requests) of one run over 200 one-hour incremental ranges."""
        folder = self.tmp / "queries-hourly"
        start = windows.floor(datetime.now(UTC) - LAG, INTERVAL) - timedelta(hours=1)
        for index in range(HOURLY_QUERIES):
            write_query(
                folder,
                f"hourly_{index:03d}",
                {
                    "nrql": HOURLY_NRQL,
                    "measurement": f"hourly_{index:03d}",
                    "interval": "1 minute",
                    "database": "bench_hourly",
                    "start": windows.iso(start),
                },
            )
        with self.influxd("influxd-hourly") as influx:
            self.fake.reset_log()
            run = self.run_archiver(
                "the hourly run", archiver_command("run"), influx, folder, "hourly"
            )
            return run.seconds, len(self.fake.requests)


def count_points(influx: InfluxServer, database: str, measurement: str) -> int:
    rows = influx.query(f'SELECT count("count") FROM "{measurement}"', db=database)
    return int(rows[0]["count"]) if rows else 0


# -- output ----------------------------------------------------------------------------------

Row = tuple[str, str, str, str]  # figure, measured, target, verdict


def verdict(ok: bool) -> str:
    return "ok" if ok else "MISSED"


def backfill_rows(b: Backfill) -> list[Row]:
    cpu = ", ".join(f"{name} {seconds:.1f}" for name, seconds in b.cpu_seconds.items())
    fake = f"{b.precomputed_answers} of {b.nr_requests} precomputed"
    return [
        (f"backfill {b.days}d: throughput", f"{b.points_per_second:,.0f} pts/s", "", ""),
        (f"backfill {b.days}d: points, wall time", f"{b.points:,}, {b.seconds:.1f} s", "", ""),
        (f"backfill {b.days}d: peak RSS", mib(b.peak_rss_bytes), "", ""),
        (f"backfill {b.days}d: New Relic requests", f"{b.nr_requests}", "", fake),
        (f"backfill {b.days}d: CPU seconds", cpu, "", ""),
    ]


def rows_of(figures: Figures) -> list[Row]:
    transform_ok = figures.transform_rows_per_second >= TARGET_TRANSFORM_ROWS_PER_SECOND
    rows: list[Row] = [
        (
            "transform alone (one core)",
            f"{figures.transform_rows_per_second:,.0f} rows/s",
            f">= {TARGET_TRANSFORM_ROWS_PER_SECOND:,} rows/s",
            verdict(transform_ok),
        ),
        (
            "limit: InfluxDB ingest",
            f"{figures.limit_points_per_second:,.0f} pts/s",
            "",
            f"{figures.limit_points:,} points, 5,000-line gzip bodies",
        ),
        *backfill_rows(figures.backfill_7d),
        (
            "archiver / limit",
            f"{figures.ratio:.0%}",
            f">= {TARGET_RATIO:.0%}",
            verdict(figures.ratio >= TARGET_RATIO),
        ),
    ]
    if figures.backfill_30d is not None and figures.rss_ratio is not None:
        rows += backfill_rows(figures.backfill_30d)
        rows.append(
            (
                "peak RSS 30d / 7d",
                f"{figures.rss_ratio:.2f}",
                f"<= {TARGET_RSS_RATIO:.2f}",
                verdict(figures.rss_ratio <= TARGET_RSS_RATIO),
            )
        )
    rows.append(
        (
            f"hourly run: {HOURLY_QUERIES} queries x 1 h",
            f"{figures.hourly_seconds:.1f} s",
            f"< {TARGET_HOURLY_SECONDS:.0f} s",
            verdict(figures.hourly_seconds < TARGET_HOURLY_SECONDS),
        )
    )
    return rows


def table(rows: list[Row]) -> str:
    header: Row = ("figure", "measured", "target", "")
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in [header, *rows]
    ]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def mib(size: int) -> str:
    return f"{size / 2**20:.0f} MiB"


def as_json(figures: Figures, source: Path) -> dict[str, object]:
    return {
        "when": windows.iso(datetime.now(UTC).replace(microsecond=0)),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "source": str(source),
        "figures": {
            **asdict(figures),
            "backfill_7d_points_per_second": figures.backfill_7d.points_per_second,
            "backfill_30d_points_per_second": (
                figures.backfill_30d.points_per_second if figures.backfill_30d else None
            ),
            "archiver_limit_ratio": figures.ratio,
            "rss_ratio_30d_7d": figures.rss_ratio,
        },
        "targets": {
            "archiver_limit_ratio_min": TARGET_RATIO,
            "rss_ratio_30d_7d_max": TARGET_RSS_RATIO,
            "transform_rows_per_second_min": TARGET_TRANSFORM_ROWS_PER_SECOND,
            "hourly_seconds_max": TARGET_HOURLY_SECONDS,
        },
    }


# -- main ------------------------------------------------------------------------------------


def measure(bench: Bench, *, repeat: int, skip_30d: bool) -> Figures:
    """Every figure; the throughput ones are the best of `repeat` tries (shared machines)."""
    say("transform alone")
    transform_rate = bench.transform_rate()
    say(f"  {transform_rate:,.0f} rows/s")
    say("InfluxDB ingest limit: the 7-day backfill's points, posted directly")
    limits = [bench.limit() for _ in range(repeat)]
    limit_points, limit_rate = max(limits, key=lambda limit: limit[1])
    say("  " + ", ".join(f"{rate:,.0f}" for _, rate in limits) + " points/s")
    say("archiver: 7-day backfill (fake answers precomputed)")
    tries = [bench.backfill(7, precompute=True) for _ in range(repeat)]
    backfill_7d = max(tries, key=lambda b: b.points_per_second)
    say("  " + ", ".join(f"{b.points_per_second:,.0f}" for b in tries) + " points/s")
    backfill_30d = None
    if not skip_30d:
        say("archiver: 30-day backfill (fake answers live: this one is about memory)")
        backfill_30d = bench.backfill(30, precompute=False)
        say(f"  {backfill_30d.points_per_second:,.0f} points/s")
    say(f"archiver: hourly run over {HOURLY_QUERIES} query files")
    hourly_seconds, hourly_requests = min(bench.hourly() for _ in range(repeat))
    say(f"  {hourly_seconds:.1f} s")
    return Figures(
        transform_rate,
        limit_points,
        limit_rate,
        backfill_7d,
        backfill_30d,
        hourly_seconds,
        hourly_requests,
    )


def profile(bench: Bench) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    say("profile: transform (pyinstrument)")
    _, query = bench.bench_query("bench_profile")
    *_, nrqls = bench.planned_nrql(query, 7)
    sample = list(measures.answers(nrqls[1 : 1 + TRANSFORM_SAMPLE_WINDOWS], retention=NR_RETENTION))
    print(profiling.profile_transform(query, sample, RESULTS / "transform.pyinstrument.txt"))
    say("profile: 7-day backfill (py-spy, every thread, idle included)")
    raw = RESULTS / "backfill.py-spy.txt"
    backfill = bench.backfill(7, precompute=True, profile_to=raw)
    say(f"  {backfill.seconds:.1f} s under py-spy")
    print(profiling.summarize_py_spy(raw))


def say(text: str) -> None:
    print(f"- {text}", flush=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--timeout", type=float, default=900, help="seconds allowed per archiver run (900)"
    )
    parser.add_argument(
        "--source",
        type=Path,
        default=REPO,
        help="checkout whose archiver package runs (default: this one), e.g. a patched copy",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=2,
        help="tries per throughput figure, the best one counts (2)",
    )
    parser.add_argument("--skip-30d", action="store_true", help="leave out the 30-day backfill")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="instead: profile the 7-day backfill (py-spy) and the transform (pyinstrument)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    source = args.source.resolve()
    with (
        tempfile.TemporaryDirectory(prefix="nr-archiver-bench-") as tmp,
        PrecomputedNerdGraph(accounts={ACCOUNT}, retention=NR_RETENTION).start() as fake,
    ):
        bench = Bench(Path(tmp), fake, args.timeout, source)
        try:
            if args.profile:
                profile(bench)
                return 0
            figures = measure(bench, repeat=max(1, args.repeat), skip_30d=args.skip_30d)
        except BenchError as exc:
            print(f"benchmark failed: {exc}", file=sys.stderr)
            return 1
    print()
    print(table(rows_of(figures)))
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "latest.json").write_text(json.dumps(as_json(figures, source), indent=2) + "\n")
    print(f"\nwritten to {(RESULTS / 'latest.json').relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
