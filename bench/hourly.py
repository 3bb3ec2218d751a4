"""The `hourly2000` row of `make bench`: one hourly run of 2,000 query files (issue 12 item 6).

The seed's team archived 2,000 measurements from one account. Here 2,000 query files, each one
FACET query with its own NRQL text over the last hour at 1 minute, are exported by one
`nr-archiver run` (one process at the default limits: `--max-concurrent 5`,
`--requests-per-minute 1000`) against the fake NerdGraph server answering every request after
300 ms, as New Relic would, and refusing one NRQL text over 120 times a minute with HTTP 429
as New Relic does. The target: under 3 minutes, and New Relic requests per minute (the most
that arrived in any 60 s) never above the budget.

`python bench/run.py --rows hourly2000` runs it alone; the full `make bench` runs it too.
"""

from __future__ import annotations

import bisect
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from archiver import windows
from bench.harness import (
    ACCOUNT,
    archiver_command,
    archiver_env,
    require_success,
    run_measured,
    write_query,
)
from fakes.nerdgraph import FakeNerdGraph, Reply
from tests.influxd import running_influxd

KEY = "hourly2000"
FILES = 2000
LATENCY_SECONDS = 0.3
WORKERS = 8  # query threads: enough that the limiter (5 in flight), not the threads, is the cap
MAX_CONCURRENT = 5  # the archiver's defaults
REQUESTS_PER_MINUTE = 1000
NEW_RELIC_SAME_TEXT_PER_MINUTE = 120
TARGET_SECONDS = 180.0
LAG = timedelta(minutes=5)
INTERVAL = timedelta(minutes=1)
HEADROOM = timedelta(minutes=3)


class TimedNerdGraph(FakeNerdGraph):
    """The fake server, noting when each request arrived (monotonic seconds)."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.arrivals: list[float] = []
        self._arrivals_lock = threading.Lock()

    def handle_graphql(self, api_key: str | None, body: bytes) -> Reply:
        with self._arrivals_lock:
            self.arrivals.append(time.monotonic())
        return super().handle_graphql(api_key, body)


@dataclass(frozen=True)
class Hourly:
    files: int
    seconds: float
    requests: int
    peak_per_minute: int  # the most requests that arrived in any 60 s
    average_per_minute: float
    refused: int  # answers other than "ok" (a 429 of the same-text rule among them)
    points: int
    workers: int = WORKERS
    budget_per_minute: int = REQUESTS_PER_MINUTE
    latency_seconds: float = LATENCY_SECONDS

    @property
    def ok(self) -> bool:
        return (
            self.seconds < TARGET_SECONDS
            and self.peak_per_minute <= self.budget_per_minute
            and self.refused == 0
        )

    def line(self) -> str:
        verdict = "ok" if self.ok else "MISSED"
        return (
            f"hourly run of {self.files:,} query files ({self.latency_seconds * 1000:.0f} ms "
            f"per answer, {self.workers} workers, --max-concurrent {MAX_CONCURRENT}, "
            f"--requests-per-minute {self.budget_per_minute}): {self.seconds:.0f} s "
            f"(target < {TARGET_SECONDS:.0f} s), {self.requests:,} New Relic requests, "
            f"at most {self.peak_per_minute} in any minute ({self.average_per_minute:.0f}/min "
            f"on average), {self.refused} refused, {self.points:,} points: {verdict}"
        )


def peak_per_minute(arrivals: list[float]) -> int:
    """The most of `arrivals` that fall in any 60 s."""
    times = sorted(arrivals)
    return max(
        (bisect.bisect_left(times, start + 60.0) - index for index, start in enumerate(times)),
        default=0,
    )


def write_queries(folder: Path, database: str, files: int) -> None:
    """`files` query files over the last hour; each has its own NRQL text, as real files do.

    Their ranges start `HEADROOM` short of an hour: the files exported last, minutes later, still
    have at most 60 buckets to export, one request each (a FACET query's first window), as in a
    steady hourly schedule where each query's range is the hour since its previous export.
    """
    start = windows.floor(datetime.now(UTC) - LAG, INTERVAL) - timedelta(hours=1) + HEADROOM
    for index in range(files):
        write_query(
            folder,
            f"hourly_{index:04d}",
            {
                "nrql": (
                    f"SELECT average(duration) AS 'duration_{index:04d}', count(*) "
                    "FROM Bench10 FACET name"
                ),
                "measurement": f"hourly_{index:04d}",
                "interval": "1 minute",
                "database": database,
                "start": windows.iso(start),
            },
        )


def measure(tmp: Path, source: Path, timeout: float, *, files: int = FILES) -> Hourly:
    """One hourly run of `files` query files; raises BenchError if the archiver fails."""
    folder = tmp / "queries-hourly2000"
    database = "bench_hourly2000"
    fake = TimedNerdGraph(accounts={ACCOUNT}, latency=LATENCY_SECONDS)
    fake.limit_same_text(NEW_RELIC_SAME_TEXT_PER_MINUTE)
    influx_folder = tmp / "influxd-hourly2000"
    influx_folder.mkdir()
    with fake.start(), running_influxd(influx_folder) as influx:
        write_queries(folder, database, files)
        env = archiver_env(
            source=source,
            nerdgraph_url=fake.url,
            api_key=fake.api_key,
            influx_url=influx.url,
            state_db=tmp / "state-hourly2000.db",
            queries_dir=folder,
        )
        argv = archiver_command(
            "run",
            "--workers",
            str(WORKERS),
            "--max-concurrent",
            str(MAX_CONCURRENT),
            "--requests-per-minute",
            str(REQUESTS_PER_MINUTE),
            "--no-self-metrics",
        )
        run = require_success(
            "the hourly run of 2,000 query files",
            run_measured(argv, env, source, tmp / "hourly2000.log", timeout),
        )
        # One row per measurement; every point has the field `count` (the aliases differ).
        rows = influx.query('SELECT count("count") FROM /^hourly_/', database)
        points = sum(row["count"] for row in rows)
    requests = fake.requests
    minutes = max(run.seconds, 60.0) / 60.0
    return Hourly(
        files=files,
        seconds=run.seconds,
        requests=len(requests),
        peak_per_minute=peak_per_minute(fake.arrivals),
        average_per_minute=len(requests) / minutes,
        refused=sum(record.outcome != "ok" for record in requests),
        points=points,
    )
