"""`make bench`: the archiver against InfluxDB's own ingest limit, shape by shape.

Starts the fake NerdGraph server (31 days of retention) and, for each measurement, a fresh
throwaway influxd, then measures every row of the matrix (`bench/matrix.py`: (a)–(g) and
`live`):

- limit: InfluxDB's ingest rate for the row's own points as pre-built, gzipped line
  protocol, posted directly in batches as long as the sink's (`sinks.base.BATCH_SIZE`);
- archiver: `nr-archiver run --since T --until T' --query bench_<row>` as a child process,
  with the fake's answers computed before the clock starts (except the `live` row): points/s,
  ratio to the limit, CPU µs per point of the archiver and of influxd, peak RSS, requests;

and, in the full run, the transform alone (rows/s on one core, in process) and one
`nr-archiver run` over 200 small FACET queries (1-hour incremental ranges each).

Prints the matrix and writes it to bench/results/latest.json. Everything it starts is stopped,
and its temp dir removed, however it ends. `--rows b,g` runs some rows; `--short` runs small
spans against one influxd (a smoke test); `--profile` instead samples each row's backfill with
py-spy and the transform with pyinstrument (both must be installed).
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
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime, timedelta
from itertools import islice
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from archiver import queries, windows  # noqa: E402
from archiver.queries import QueryDef  # noqa: E402
from bench import hourly, matrix, measures, profiling  # noqa: E402
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
from bench.matrix import Shape  # noqa: E402
from fakes.nerdgraph import Reply  # noqa: E402
from tests.influxd import InfluxServer, running_influxd  # noqa: E402

RESULTS = REPO / "bench" / "results"
NR_RETENTION = timedelta(days=31)
LAG = timedelta(minutes=5)  # the query files' default
INTERVAL = timedelta(minutes=1)
HOURLY_QUERIES = 200
# Each query file its own NRQL text (its own alias), as 200 real query files would have: one
# text for all would meet the limiter's same-text cap (100 a minute), not the archiver's work.
HOURLY_NRQL = "SELECT average(duration) AS 'duration_{index:03d}', count(*) FROM Bench10 FACET name"
TRANSFORM_SAMPLE_WINDOWS = 10  # 200,000 rows

TARGET_RATIO = 0.70  # issue 16: every row (a)-(f)
TARGET_LATENCY_RATIO = 0.90  # (g) within 10% of (b)
TARGET_RSS_BYTES = 200 * 2**20
TARGET_RSS_RATIO = 1.10
TARGET_TRANSFORM_ROWS_PER_SECOND = 500_000
TARGET_HOURLY_SECONDS = 60.0


@dataclass(frozen=True)
class Try:
    points: int
    seconds: float
    peak_rss_bytes: int
    nr_requests: int
    precomputed_answers: int  # requests the fake answered from its precomputed replies
    cpu_seconds: dict[str, float]  # per process: archiver, influxd, fake NerdGraph (this one)
    start_seconds: float  # from starting the process to its first request to New Relic

    @property
    def points_per_second(self) -> float:
        return self.points / self.seconds


@dataclass(frozen=True)
class Row:
    key: str
    title: str
    span: str
    limit_points: int
    limit_points_per_second: float
    limit_influxd_cpu_seconds: float
    best: Try
    tries: list[Try] = field(default_factory=list)
    latency_seconds: float = 0.0  # the fake's wait before each answer

    @property
    def ratio(self) -> float:
        return self.best.points_per_second / self.limit_points_per_second

    @property
    def ceiling(self) -> float:
        """The best ratio a run could reach that asks New Relic first when this one did.

        Nothing reaches InfluxDB before the first answer, and InfluxDB ingests no faster
        beside the archiver than alone (the limit: influxd alone took 1.0-1.2 cores, and the
        archiver's busy core leaves it less), so a run takes at least its start plus the
        limit's time for its points. The parsing, the first write's wait and the last
        write's tail are left out: a bound, not a forecast.
        """
        limit_seconds = self.best.points / self.limit_points_per_second
        return limit_seconds / (self.best.start_seconds + limit_seconds)

    def us_per_point(self, process: str) -> float:
        return self.best.cpu_seconds[process] / self.best.points * 1e6

    @property
    def limit_influxd_us_per_point(self) -> float:
        return self.limit_influxd_cpu_seconds / self.limit_points * 1e6

    @property
    def peak_rss_bytes(self) -> int:
        return max(t.peak_rss_bytes for t in self.tries)


@dataclass(frozen=True)
class Figures:
    rows: list[Row]
    transform_rows_per_second: float | None
    hourly_seconds: float | None
    hourly_nr_requests: int | None

    def row(self, key: str) -> Row | None:
        return next((row for row in self.rows if row.key == key), None)

    @property
    def rss_ratio(self) -> float | None:
        live, a = self.row("live"), self.row("a")
        return None if live is None or a is None else live.peak_rss_bytes / a.peak_rss_bytes

    @property
    def latency_ratio(self) -> float | None:
        """(g)'s points/s over (b)'s: the same points, with and without New Relic's latency.

        Not the ratio of their ratios to the limit: each limit is measured on its own, and the
        limit moves more between two measurements on a small VM than the latency costs.
        """
        g, b = self.row("g"), self.row("b")
        if g is None or b is None:
            return None
        return g.best.points_per_second / b.best.points_per_second


class Bench:
    """One benchmark run: owns the temp dir's layout and the fake server."""

    def __init__(
        self,
        tmp: Path,
        fake: PrecomputedNerdGraph,
        timeout: float,
        source: Path,
        *,
        short: bool = False,
    ) -> None:
        self.tmp = tmp
        self.fake = fake
        self.timeout = timeout
        self.source = source
        self.short = short
        self.runs = 0
        self._shared: InfluxServer | None = None

    @contextmanager
    def influxd(self, name: str) -> Iterator[InfluxServer]:
        """A fresh influxd per measurement: no earlier data or compaction weighs on it.

        In `--short` mode one influxd serves every measurement (each has its own database).
        """
        if self.short and self._shared is not None:
            yield self._shared
            return
        folder = self.tmp / name
        folder.mkdir()
        try:
            with running_influxd(folder) as server:
                yield server
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    @contextmanager
    def shared_influxd(self) -> Iterator[None]:
        if not self.short:
            yield
            return
        with self.influxd("influxd-shared") as server:
            self._shared = server
            try:
                yield
            finally:
                self._shared = None

    def query_of(self, shape: Shape, database: str) -> tuple[Path, QueryDef]:
        folder = self.tmp / f"queries-{database}"
        write_query(folder, f"bench_{shape.key}", shape.query_file(database))
        loaded = queries.load_dir(folder)
        if loaded.problems:
            raise BenchError(f"row {shape.key}: query file: {loaded.problems[0]}")
        return folder, loaded.queries[0]

    def span(self, length: timedelta) -> tuple[datetime, datetime]:
        """The newest `length` the archiver may export now, as whole 1-minute buckets."""
        until = windows.floor(datetime.now(UTC) - LAG, INTERVAL)
        return until - length, until

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
        shape = matrix.SHAPES[0]  # (a)
        _, query = self.query_of(shape, "bench_transform")
        since, until = self.span(shape.span)
        source = measures.runner_answers(query, since, until, self.live_answer)
        sample = list(islice(source, 1, 1 + TRANSFORM_SAMPLE_WINDOWS))
        rows, seconds = measures.transform_rate(query, sample)
        return rows / seconds

    def live_answer(self, nrql: str) -> measures.Answer:
        return self.answer(nrql, keep=None)

    def answer(self, nrql: str, keep: dict[str, Reply] | None) -> measures.Answer:
        """The fake's answer to `nrql`; its reply goes into `keep` for the measured run."""
        reply, nrql_object = self.fake.prepare(ACCOUNT, nrql)
        if keep is not None:
            keep[nrql] = reply
        metadata = nrql_object.get("metadata") or {}
        return measures.Answer(nrql_object["results"], metadata.get("facets") or ())

    def row(self, shape: Shape, *, repeat: int, profile_to: Path | None = None) -> Row:
        """One row of the matrix: the limit for its points, then the archiver `repeat` times."""
        length = shape.short_span if self.short else shape.span
        limit_length = (shape.short_limit_span if self.short else shape.limit_span) or length
        folder, query = self.query_of(shape, f"bench_{shape.key}")
        since, until = self.span(length)
        replies: dict[str, Reply] = {}
        keep = None if shape.live else replies
        limit_since = until - limit_length
        source = measures.runner_answers(
            query, limit_since, until, lambda nrql: self.answer(nrql, keep)
        )
        bodies, limit_points = measures.gzipped_batches(query, source)
        expected = limit_points * (length / limit_length)
        limit_db = f"limit_{shape.key}"
        with self.influxd(f"influxd-limit-{shape.key}") as influx:
            before = process_cpu_seconds(influx.pid)
            seconds = measures.post_batches(
                influx.url, limit_db, bodies, measures.precision_of(query)
            )
            limit_cpu = process_cpu_seconds(influx.pid) - before
            written = count_points(influx, limit_db, query.measurement)
        del bodies
        if written != limit_points:
            raise BenchError(
                f"row {shape.key}: limit: InfluxDB holds {written} points, {limit_points} posted"
            )
        tries = []
        for attempt in range(repeat):
            tries.append(
                self.archiver_try(
                    shape, query, folder, (since, until), replies, attempt, profile_to
                )
            )
            if tries[-1].points != expected:
                raise BenchError(
                    f"row {shape.key}: the archiver wrote {tries[-1].points} points, "
                    f"not {expected:.0f}"
                )
        best = max(tries, key=lambda t: t.points_per_second)
        span = f"{windows.iso(since)}..{windows.iso(until)}"
        return Row(
            shape.key, shape.title, span, limit_points, limit_points / seconds, limit_cpu,
            best, tries, shape.latency,
        )  # fmt: skip

    def archiver_try(
        self,
        shape: Shape,
        query: QueryDef,
        folder: Path,
        span: tuple[datetime, datetime],
        replies: dict[str, Reply],
        attempt: int,
        profile_to: Path | None,
    ) -> Try:
        """`nr-archiver run --since … --until … --query <row>` into a fresh influxd."""
        database = f"{query.targets[0].database}_{attempt}"
        folder = self.tmp / f"queries-{shape.key}-{attempt}"
        write_query(folder, query.name, shape.query_file(database))
        argv = archiver_command(
            "run", "--since", windows.iso(span[0]), "--until", windows.iso(span[1]),
            "--query", query.name,
        )  # fmt: skip
        if profile_to is not None:
            argv = profiling.py_spy_command(argv, profile_to)
        self.fake.load(replies)
        self.fake.latency = shape.latency
        try:
            with self.influxd(f"influxd-{shape.key}-{attempt}") as influx:
                self.fake.reset_log()
                influx_cpu, fake_cpu = process_cpu_seconds(influx.pid), process_cpu_seconds()
                run = self.run_archiver(
                    f"row {shape.key}", argv, influx, folder, f"{shape.key}-{attempt}"
                )
                cpu = {
                    "archiver": run.cpu_seconds,
                    "influxd": process_cpu_seconds(influx.pid) - influx_cpu,
                    "fake": process_cpu_seconds() - fake_cpu,
                }
                nr_requests, hits = len(self.fake.requests), self.fake.precomputed_hits
                first_request = self.fake.first_request_at
                points = count_points(influx, database, query.measurement)
        finally:
            self.fake.latency = 0.0
            self.fake.forget_precomputed()
        if first_request is None:
            raise BenchError(f"row {shape.key}: the archiver asked New Relic nothing")
        start = first_request - run.started
        return Try(points, run.seconds, run.peak_rss_bytes, nr_requests, hits, cpu, start)

    def hourly(self) -> tuple[float, int]:
        """(wall seconds, New Relic requests) of one run over 200 one-hour incremental ranges."""
        folder = self.tmp / "queries-hourly"
        start = windows.floor(datetime.now(UTC) - LAG, INTERVAL) - timedelta(hours=1)
        for index in range(HOURLY_QUERIES):
            write_query(
                folder,
                f"hourly_{index:03d}",
                {
                    "nrql": HOURLY_NRQL.format(index=index),
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
    """Points of `measurement`: the largest count of any of its fields."""
    rows = influx.query(f'SELECT count(*) FROM "{measurement}"', db=database)
    counts = [value for key, value in rows[0].items() if key.startswith("count_")] if rows else []
    return int(max(counts, default=0))


# -- output ----------------------------------------------------------------------------------

Cells = tuple[str, ...]
MATRIX_HEADER: Cells = (
    "row", "points", "archiver pts/s", "limit pts/s", "ratio", "start s", "ceiling",
    "archiver us/pt", "influxd us/pt", "influxd us/pt (limit)", "peak RSS", "NR requests", "",
)  # fmt: skip


def row_target(row: Row) -> tuple[bool, str]:
    """(met, what) for the row's own target: 0.7x the limit, or (g) within 10% of (b)."""
    if row.key == "live":
        return True, ""
    return row.ratio >= TARGET_RATIO, f">= {TARGET_RATIO:.1f}x"


def matrix_cells(row: Row) -> Cells:
    best = row.best
    met, target = row_target(row)
    fake = f"{best.nr_requests}" + (
        f" ({best.precomputed_answers} precomputed)" if best.precomputed_answers else " (live)"
    )
    rss_ok = row.peak_rss_bytes < TARGET_RSS_BYTES
    verdicts = [v for v in (target and verdict(met), "" if rss_ok else "RSS MISSED") if v]
    return (
        row.key,
        f"{best.points:,}",
        f"{best.points_per_second:,.0f}",
        f"{row.limit_points_per_second:,.0f}",
        f"{row.ratio:.2f}x",
        f"{best.start_seconds:.2f}",
        f"{row.ceiling:.2f}x",
        f"{row.us_per_point('archiver'):.2f}",
        f"{row.us_per_point('influxd'):.2f}",
        f"{row.limit_influxd_us_per_point:.2f}",
        mib(row.peak_rss_bytes),
        fake,
        " ".join(verdicts),
    )


def summary_lines(figures: Figures) -> list[str]:
    lines = [f"({row.key}) {row.title}; {row.span}" for row in figures.rows]
    if figures.latency_ratio is not None:
        ok = figures.latency_ratio >= TARGET_LATENCY_RATIO
        lines.append(
            f"(g) / (b) points/s: {figures.latency_ratio:.2f} "
            f"(target >= {TARGET_LATENCY_RATIO:.2f}: {verdict(ok)})"
        )
    if figures.rss_ratio is not None:
        ok = figures.rss_ratio <= TARGET_RSS_RATIO
        lines.append(
            "peak RSS live / (a) (30 days / 7 days; --short: 2 h / 30 min): "
            f"{figures.rss_ratio:.2f} "
            f"(target <= {TARGET_RSS_RATIO:.2f}: {verdict(ok)})"
        )
    if figures.transform_rows_per_second is not None:
        ok = figures.transform_rows_per_second >= TARGET_TRANSFORM_ROWS_PER_SECOND
        lines.append(
            f"transform alone (one core, shape a): {figures.transform_rows_per_second:,.0f} "
            f"rows/s (target >= {TARGET_TRANSFORM_ROWS_PER_SECOND:,}: {verdict(ok)})"
        )
    if figures.hourly_seconds is not None:
        ok = figures.hourly_seconds < TARGET_HOURLY_SECONDS
        lines.append(
            f"hourly run, {HOURLY_QUERIES} queries x 1 h: {figures.hourly_seconds:.1f} s, "
            f"{figures.hourly_nr_requests} requests "
            f"(target < {TARGET_HOURLY_SECONDS:.0f} s: {verdict(ok)})"
        )
    return lines


def verdict(ok: bool) -> str:
    return "ok" if ok else "MISSED"


def table(rows: list[Cells]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def report(figures: Figures) -> str:
    cells = [MATRIX_HEADER, *(matrix_cells(row) for row in figures.rows)]
    return table(cells) + "\n\n" + "\n".join(summary_lines(figures))


def mib(size: int) -> str:
    return f"{size / 2**20:.0f} MiB"


def as_json(figures: Figures, source: Path, *, short: bool) -> dict[str, object]:
    rows = {
        row.key: {
            **asdict(row),
            "points_per_second": row.best.points_per_second,
            "ratio": row.ratio,
            "start_seconds": row.best.start_seconds,
            "ceiling": row.ceiling,
            "archiver_us_per_point": row.us_per_point("archiver"),
            "influxd_us_per_point": row.us_per_point("influxd"),
            "limit_influxd_us_per_point": row.limit_influxd_us_per_point,
            "peak_rss_bytes": row.peak_rss_bytes,
        }
        for row in figures.rows
    }
    return {
        "when": windows.iso(datetime.now(UTC).replace(microsecond=0)),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "load_average": os.getloadavg(),
        },
        "source": str(source),
        "short": short,
        "rows": rows,
        "transform_rows_per_second": figures.transform_rows_per_second,
        "hourly_seconds": figures.hourly_seconds,
        "hourly_nr_requests": figures.hourly_nr_requests,
        "rss_ratio_live_30d_a_7d": figures.rss_ratio,
        "latency_ratio_g_b": figures.latency_ratio,
        "targets": {
            "ratio_min": TARGET_RATIO,
            "latency_ratio_min": TARGET_LATENCY_RATIO,
            "peak_rss_bytes_max": TARGET_RSS_BYTES,
            "rss_ratio_max": TARGET_RSS_RATIO,
            "transform_rows_per_second_min": TARGET_TRANSFORM_ROWS_PER_SECOND,
            "hourly_seconds_max": TARGET_HOURLY_SECONDS,
        },
    }


# -- main ------------------------------------------------------------------------------------


def measure(bench: Bench, shapes: list[Shape], *, repeat: int, extras: bool) -> Figures:
    """Every row; the throughput figures are the best of `repeat` tries (shared machines)."""
    transform_rate = hourly_seconds = hourly_requests = None
    if extras:
        say("transform alone")
        transform_rate = bench.transform_rate()
        say(f"  {transform_rate:,.0f} rows/s")
    rows = []
    with bench.shared_influxd():
        for shape in shapes:
            say(f"row {shape.key}: {shape.title}")
            # the live row is about memory and the fake's cost: once is enough
            row = bench.row(shape, repeat=1 if shape.live else repeat)
            tries = ", ".join(f"{t.points_per_second:,.0f}" for t in row.tries)
            say(
                f"  limit {row.limit_points_per_second:,.0f} points/s; archiver {tries} points/s"
                f" ({row.ratio:.2f}x)"
            )
            rows.append(row)
    if extras:
        say(f"archiver: hourly run over {HOURLY_QUERIES} query files")
        hourly_seconds, hourly_requests = min(bench.hourly() for _ in range(repeat))
        say(f"  {hourly_seconds:.1f} s")
    return Figures(rows, transform_rate, hourly_seconds, hourly_requests)


def profile(bench: Bench, shapes: list[Shape]) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    say("profile: transform of shape (a) (pyinstrument)")
    shape = matrix.SHAPES[0]
    _, query = bench.query_of(shape, "bench_profile")
    since, until = bench.span(shape.span)
    source = measures.runner_answers(query, since, until, bench.live_answer)
    sample = list(islice(source, 1, 1 + TRANSFORM_SAMPLE_WINDOWS))
    print(profiling.profile_transform(query, sample, RESULTS / "transform.pyinstrument.txt"))
    with bench.shared_influxd():
        for shape in shapes:
            say(f"profile: row {shape.key} (py-spy, every thread, idle included)")
            raw = RESULTS / f"row-{shape.key}.py-spy.txt"
            row = bench.row(shape, repeat=1, profile_to=raw)
            say(f"  {row.best.seconds:.1f} s under py-spy")
            print(profiling.summarize_py_spy(raw))


def say(text: str) -> None:
    print(f"- {text}", flush=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--rows",
        help=f"comma-separated rows to run, of {','.join(matrix.KEYS)} and {hourly.KEY} "
        "(2,000 hourly query files, bench/hourly.py) (default: every row)",
    )
    parser.add_argument(
        "--short",
        action="store_true",
        help="small spans, one try, one influxd, no transform/hourly figures: a smoke test",
    )
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
        help="tries per row, the best one counts (2; 1 with --short)",
    )
    parser.add_argument(
        "--latency",
        type=float,
        help="seconds the fake waits before every answer of the rows run, instead of theirs "
        "(e.g. --rows f --latency 0.3: how much of New Relic's latency raw events hide)",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="instead: profile each row's backfill (py-spy) and the transform (pyinstrument)",
    )
    parser.add_argument(
        "--output", type=Path, default=RESULTS / "latest.json", help="where the JSON goes"
    )
    args = parser.parse_args(argv)
    wanted = args.rows.split(",") if args.rows else []
    args.hourly2000 = hourly.KEY in wanted or (args.rows is None and not args.short)
    args.matrix = wanted != [hourly.KEY]
    args.rows = ",".join(row for row in wanted if row != hourly.KEY) or None
    try:
        args.shapes = matrix.select(args.rows)
    except ValueError as exc:
        parser.error(str(exc))
    if args.latency is not None:
        if args.latency < 0:
            parser.error("--latency: seconds, at least 0")
        args.shapes = [
            replace(
                shape,
                latency=args.latency,
                title=f"{shape.title}; --latency {args.latency * 1000:g} ms",
            )
            for shape in args.shapes
        ]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    source = args.source.resolve()
    repeat = 1 if args.short else max(1, args.repeat)
    with (
        tempfile.TemporaryDirectory(prefix="nr-archiver-bench-") as tmp,
        PrecomputedNerdGraph(accounts={ACCOUNT}, retention=NR_RETENTION).start() as fake,
    ):
        bench = Bench(Path(tmp), fake, args.timeout, source, short=args.short)
        try:
            if args.profile:
                profile(bench, args.shapes)
                return 0
            extras = not args.short and args.rows is None
            figures = None
            if args.matrix:
                figures = measure(bench, args.shapes, repeat=repeat, extras=extras)
            if args.hourly2000:
                say(f"{hourly.KEY}: one hourly run of {hourly.FILES:,} query files")
                hourly_figures = hourly.measure(Path(tmp), source, args.timeout)
        except BenchError as exc:
            print(f"benchmark failed: {exc}", file=sys.stderr)
            return 1
    print()
    document = as_json(figures, source, short=args.short) if figures else {}
    if figures:
        print(report(figures))
    if args.hourly2000:
        print(hourly_figures.line())
        document[hourly.KEY] = asdict(hourly_figures) | {"ok": hourly_figures.ok}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(document, indent=2) + "\n")
    print(f"\nwritten to {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
