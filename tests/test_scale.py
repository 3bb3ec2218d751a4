"""Beyond one machine: workers that share one PostgreSQL state database.

Real `python -m archiver run` processes, each in its own UTS namespace with its own hostname
(as on separate machines, where a dead worker's lease is freed only by its expiry), against
one fake NerdGraph server, a real influxd and a real PostgreSQL (127.0.0.1:5432).

The fake's request log is the proof of "exactly once": per query, the windows that New Relic
answered tile [start, checkpoint) with no gap and no overlap. What landed in InfluxDB is
compared, point by point, with the contract's points computed from the fake's data model.
"""

from __future__ import annotations

import itertools
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from archiver.pipeline.job import FETCH_AHEAD, READ_AHEAD_WINDOWS
from archiver.state.store import State
from archiver.windows import iso
from fakes.nerdgraph import FakeNerdGraph
from tests.conftest import fresh_postgres_database
from tests.e2e import ACCOUNT, Cli, Item, Spec, actual_points, ago, cli_env, expected_points, floor
from tests.faults import wait_until
from tests.inprocess import InProcessCli

QUERY_COUNT = 200
WORKERS = 4
LEASE_SECONDS = 600  # outlasts every run here: a dead worker's leases hold until aged
NR_LATENCY = 0.1  # seconds per New Relic answer: jobs are caught mid-export
LAG = timedelta(minutes=5)
PROCESS_TIMEOUT = 180.0
ALIAS = re.compile(r"count\(\*\) AS '(q\d{3})'")

# (event type, FACET attributes, a SELECT item besides the count)
TEMPLATES = (
    ("Transaction", ("appName",), Item("average", "duration", "average.duration")),
    ("TransactionError", ("appName", "host"), Item("sum", "duration", "sum.duration")),
    ("PageView", ("countryCode", "deviceType"), Item("max", "duration", "max.duration")),
    ("Login", ("provider", "success"), Item("min", "duration", "min.duration")),
    ("ReplicationLag", ("cluster", "replica"), Item("max", "lagSeconds", "max.lagSeconds")),
    ("Transaction", ("host",), Item("percentile", "duration", "percentile.duration", ("95",))),
    ("Custom", ("region",), Item("average", "value", "average.value")),
)
INTERVALS = (("1 minute", 60), ("5 minutes", 300), ("30 seconds", 30), ("10 minutes", 600))


def nrql_of(item: Item) -> str:
    return f"{item.function}({', '.join([item.attribute or '*', *item.percentiles])})"


def scale_specs(database: str, start: datetime, count: int) -> list[Spec]:
    """`count` small FACET queries; a unique `count(*)` alias names each one's requests."""
    specs = []
    for i in range(count):
        event_type, facets, item = TEMPLATES[i % len(TEMPLATES)]
        if event_type == "Custom":
            event_type = f"Custom{i % 10}"
        interval, seconds = INTERVALS[i % len(INTERVALS)]
        name = f"q{i:03d}"
        specs.append(
            Spec(
                name=name,
                nrql=f"SELECT count(*) AS '{name}', {nrql_of(item)} FROM {event_type} "
                f"FACET {', '.join(facets)}",
                event_type=event_type,
                facets=facets,
                items=(Item("count", None, name), item),
                measurement=f"scale_{name}",
                interval=interval,
                interval_seconds=seconds,
                database=database,
                extra={"start": iso(start)},
            )
        )
    return specs


# -- fixtures ----------------------------------------------------------------------------------


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database (the workers migrate it themselves, all at once)."""
    with fresh_postgres_database("nr_archiver_scale") as url:
        yield url


@pytest.fixture
def state_db(pg_url) -> Iterator[sa.Engine]:
    engine = sa.create_engine(pg_url)
    yield engine
    engine.dispose()


@pytest.fixture
def fake_nr() -> Iterator[FakeNerdGraph]:
    with FakeNerdGraph(accounts={ACCOUNT}, latency=NR_LATENCY).start() as server:
        yield server


@dataclass
class Scale:
    specs: list[Spec]
    start: datetime
    cli: Cli
    logs: Path
    workers: list[Worker] = field(default_factory=list)

    def worker(self, host: str, *args: str) -> Worker:
        """`python -m archiver run` on a host of its own (its own hostname, same machine)."""
        log_path = self.logs / f"{host}.log"
        command = [sys.executable, "-m", "archiver", "run", *args]
        with log_path.open("w") as log:
            process = subprocess.Popen(
                ["unshare", "--uts", "sh", "-c", 'hostname "$0" && exec "$@"', host, *command],
                cwd=self.cli.cwd,
                env=self.cli.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        self.workers.append(Worker(host, process, log_path))
        return self.workers[-1]


@dataclass
class Worker:
    host: str
    process: subprocess.Popen
    log_path: Path

    def wait(self) -> int:
        return self.process.wait(timeout=PROCESS_TIMEOUT)

    @property
    def output(self) -> str:
        return self.log_path.read_text(errors="replace")


@pytest.fixture
def query_count() -> int:
    """How many query files `scale` writes (a test may parametrize it)."""
    return QUERY_COUNT


@pytest.fixture
def scale(tmp_path, fake_nr, influxd, influx_db, pg_url, query_count) -> Iterator[Scale]:
    if shutil.which("unshare") is None:
        pytest.fail("the scale tests need util-linux's `unshare` (apt-get install util-linux)")
    queries = tmp_path / "queries"
    queries.mkdir()
    start = floor(ago(hours=1), 600)
    specs = scale_specs(influx_db, start, query_count)
    for spec in specs:
        spec.write(queries)
    env = cli_env(
        nerdgraph_url=fake_nr.url,
        api_key=fake_nr.api_key,
        influx_url=influxd.url,
        db_url=pg_url,
        queries=queries,
        account=ACCOUNT,
    )
    env["ARCHIVER_LEASE_SECONDS"] = str(LEASE_SECONDS)
    logs = tmp_path / "logs"
    logs.mkdir()
    scale = Scale(specs, start, Cli(env, tmp_path), logs)
    yield scale
    for worker in scale.workers:  # a failed assertion must not leave workers running
        if worker.process.poll() is None:
            worker.process.kill()
            worker.process.wait()


def start_workers(scale: Scale, count: int) -> list[Worker]:
    return [scale.worker(f"worker-{i}") for i in range(count)]


# -- what the request log and the state database say ---------------------------------------------


def answered_windows(fake: FakeNerdGraph) -> dict[str, list[tuple[int, int]]]:
    """Per query name, the [since, until) of every request New Relic answered (epoch s)."""
    windows = defaultdict(list)
    for request in fake.requests:
        if request.outcome == "ok" and request.nrql and (match := ALIAS.search(request.nrql)):
            windows[match.group(1)].append((request.since_ms // 1000, request.until_ms // 1000))
    return windows


def overlaps(windows: list[tuple[int, int]]) -> int:
    ordered = sorted(windows)
    return sum(1 for a, b in itertools.pairwise(ordered) if b[0] < a[1])


def covered(windows: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The union of the windows as disjoint, sorted segments."""
    segments: list[list[int]] = []
    for since, until in sorted(windows):
        if segments and since <= segments[-1][1]:
            segments[-1][1] = max(segments[-1][1], until)
        else:
            segments.append([since, until])
    return [(since, until) for since, until in segments]


@dataclass(frozen=True)
class Lease:
    query: str
    host: str
    expires_at: int


def leases(engine: sa.Engine) -> list[Lease]:
    """The lease rows (none before the first worker migrated the database)."""
    if not sa.inspect(engine).has_table("leases"):
        return []
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT query, holder, expires_at FROM leases")).all()
    return [Lease(row.query, row.holder.partition(":")[0], row.expires_at) for row in rows]


def age_leases(engine: sa.Engine, seconds: int) -> None:
    """Every lease as it will be `seconds` from now: the workers read the time, not a clock
    the test could move, so the leases' expiry moves back instead."""
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE leases SET expires_at = expires_at - :s"), {"s": seconds})


def checkpoints(engine: sa.Engine) -> dict[str, int]:
    if not sa.inspect(engine).has_table("checkpoints"):
        return {}
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT query, exported_until FROM checkpoints")).all()
    return {row.query: row.exported_until for row in rows}


def unfinished(scale: Scale, engine: sa.Engine) -> set[str]:
    """The queries not yet exported up to now − lag."""
    done, at = checkpoints(engine), now()
    return {
        spec.name
        for spec in scale.specs
        if done.get(spec.name, 0) < floor(at - LAG, spec.interval_seconds).timestamp()
    }


def worker_mid_export(
    scale: Scale, fake: FakeNerdGraph, engine: sa.Engine, workers: list[Worker]
) -> Worker | None:
    """Mid-run (a quarter of the queries answered): the live worker with most unfinished jobs."""
    if len(answered_windows(fake)) < len(scale.specs) // 4:
        return None
    stranded = unfinished(scale, engine)
    hosts = [lease.host for lease in leases(engine) if lease.query in stranded]
    alive = [w for w in workers if w.host in hosts and w.process.poll() is None]
    return max(alive, key=lambda w: hosts.count(w.host), default=None)


def assert_exported_exactly(
    scale: Scale,
    fake: FakeNerdGraph,
    influxd,
    *,
    started: datetime,
    finished: datetime,
    may_repeat_windows_in_flight: set[str] = frozenset(),
) -> None:
    """Every planned window answered, none twice (but for the named queries), points exact."""
    status = scale.cli.status()
    answered = answered_windows(fake)
    for spec in scale.specs:
        row = status[(spec.name, f"{spec.database}.autogen")]
        assert row["exported_until"], f"{spec.name}: never exported ({row})"
        until = datetime.fromisoformat(row["exported_until"].replace("Z", "+00:00"))
        # Every window planned when the workers started was exported; none beyond "now − lag".
        assert floor(started - LAG, spec.interval_seconds) <= until
        assert until <= floor(finished - LAG, spec.interval_seconds)
        windows = answered[spec.name]
        # A killed worker's windows in flight (the one being written, those read ahead and
        # those asked ahead) were answered but never acknowledged: the worker that takes over
        # asks for them again.
        in_flight = 1 + READ_AHEAD_WINDOWS + FETCH_AHEAD
        expected_overlaps = (
            range(in_flight + 1) if spec.name in may_repeat_windows_in_flight else (0,)
        )
        assert overlaps(windows) in expected_overlaps, f"{spec.name}: {sorted(windows)}"
        start, end = int(scale.start.timestamp()), int(until.timestamp())
        assert covered(windows) == [(start, end)], f"{spec.name}: {sorted(windows)}"
        assert actual_points(influxd, spec) == expected_points(spec, scale.start, until), spec.name
    assert set(answered) == {spec.name for spec in scale.specs}


def now() -> datetime:
    return datetime.now(UTC)


# -- the tests -------------------------------------------------------------------------------------


def test_four_workers_export_every_window_exactly_once(scale, fake_nr, influxd):
    started = now()
    workers = start_workers(scale, WORKERS)
    exit_codes = [worker.wait() for worker in workers]
    finished = now()

    assert exit_codes == [0] * WORKERS, "\n".join(w.output[-3000:] for w in workers)
    assert_exported_exactly(scale, fake_nr, influxd, started=started, finished=finished)
    # The work was shared: every worker exported some of the queries.
    exported_by = [worker.output.count("New Relic request") for worker in workers]
    assert all(exported_by), exported_by
    assert sum(exported_by) >= len(scale.specs)
    # A job skipped because another worker held its lease does not hide how the export went.
    assert {row["last_status"] for row in scale.cli.status().values()} == {"ok"}


def start_workers_and_pick_one_mid_export(scale, fake_nr, state_db):
    workers = start_workers(scale, WORKERS)
    victim = wait_until(
        lambda: worker_mid_export(scale, fake_nr, state_db, workers),
        timeout=PROCESS_TIMEOUT,
        what="a worker mid-export",
    )
    return workers, victim


def test_a_killed_worker_leaves_nothing_unexported_once_its_leases_expire(
    scale, fake_nr, influxd, state_db
):
    started = now()
    workers, victim = start_workers_and_pick_one_mid_export(scale, fake_nr, state_db)
    victim.process.send_signal(signal.SIGKILL)
    victim.process.wait()
    held = {
        lease.query: lease.expires_at for lease in leases(state_db) if lease.host == victim.host
    }
    stranded = set(held) & unfinished(scale, state_db)
    assert stranded, f"the killed worker held no unfinished job: {held}"
    left_at = {query: until for query, until in checkpoints(state_db).items() if query in stranded}

    survivors = [worker for worker in workers if worker is not victim]
    exit_codes = [worker.wait() for worker in survivors]
    assert exit_codes == [0] * len(survivors), "\n".join(w.output[-3000:] for w in survivors)
    # The dead worker's leases still hold: nobody else touched its unfinished jobs.
    assert time.time() < min(held.values())
    assert {q: u for q, u in checkpoints(state_db).items() if q in stranded} == left_at
    assert {lease.host for lease in leases(state_db)} == {victim.host}

    age_leases(state_db, LEASE_SECONDS)  # their time is up, without waiting it out
    assert all(lease.expires_at <= time.time() for lease in leases(state_db))
    last = scale.worker("worker-after")
    assert last.wait() == 0, last.output[-3000:]
    assert "another run is exporting it" not in last.output
    finished = now()

    assert_exported_exactly(
        scale,
        fake_nr,
        influxd,
        started=started,
        finished=finished,
        may_repeat_windows_in_flight=held,
    )


def test_a_worker_stopped_by_sigterm_finishes_its_window_and_releases_its_leases(
    scale, fake_nr, influxd, state_db
):
    started = now()
    workers, victim = start_workers_and_pick_one_mid_export(scale, fake_nr, state_db)
    victim.process.send_signal(signal.SIGTERM)
    assert victim.wait() == 130  # interrupted: what it left is for the next run
    assert [lease for lease in leases(state_db) if lease.host == victim.host] == []
    # Only the jobs already begun (one per thread, --workers 4) went on; no new one started.
    after_stop = victim.output.partition("SIGTERM received")[2]
    assert len(re.findall(r" → .*: ", after_stop)) <= 4, after_stop

    survivors = [worker for worker in workers if worker is not victim]
    assert [worker.wait() for worker in survivors] == [0] * len(survivors)
    last = scale.worker("worker-after")  # right away: no lease is left to expire
    assert last.wait() == 0, last.output[-3000:]
    assert "another run is exporting it" not in last.output
    finished = now()

    # The window in flight was finished, not abandoned: no window was requested twice.
    assert_exported_exactly(scale, fake_nr, influxd, started=started, finished=finished)


# -- the lease itself, under contention on PostgreSQL ----------------------------------------


@pytest.fixture
def pg_state(pg_url) -> Iterator[State]:
    state = State.open(pg_url)
    yield state
    state.engine.dispose()


def race(count: int, attempt: Callable[[int], bool]) -> list[bool]:
    """Run `attempt(i)` in `count` threads released at the same instant."""
    barrier = threading.Barrier(count)
    results: list[bool | None] = [None] * count

    def run(i: int) -> None:
        barrier.wait()
        results[i] = attempt(i)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return results  # type: ignore[return-value]


@pytest.mark.parametrize("existing", ["none", "expired"])
def test_only_one_of_many_racing_workers_gets_a_lease(pg_state, existing):
    at = now()
    ttl = timedelta(seconds=LEASE_SECONDS)
    for key in range(20):
        if existing == "expired":
            assert pg_state.acquire_lease(f"q{key}", "db.rp", "dead-host:1:x", ttl, at - 2 * ttl)
        won = race(
            8, lambda i, key=key: pg_state.acquire_lease(f"q{key}", "db.rp", f"w{i}", ttl, at)
        )
        assert won.count(True) == 1, (key, won)
        assert won.count(False) == 7, (key, won)


def test_a_lease_row_locked_by_another_worker_is_skipped_not_waited_for(pg_state):
    at = now()
    ttl = timedelta(seconds=LEASE_SECONDS)
    assert pg_state.acquire_lease("q", "db.rp", "dead-host:1:x", ttl, at - 2 * ttl)  # expired
    other = pg_state.engine.connect()
    transaction = other.begin()
    other.execute(sa.text("SELECT 1 FROM leases WHERE query = 'q' FOR UPDATE"))
    try:
        outcome: list[bool] = []
        attempt = threading.Thread(
            target=lambda: outcome.append(pg_state.acquire_lease("q", "db.rp", "w", ttl, at))
        )
        attempt.start()
        attempt.join(timeout=5)
        waited = attempt.is_alive()
    finally:
        transaction.rollback()
        other.close()
        attempt.join(timeout=30)
    assert not waited, "acquire_lease waited for another worker's row lock"
    assert outcome == [False]
    assert pg_state.acquire_lease("q", "db.rp", "w", ttl, at)  # free again once unlocked


@pytest.fixture
def inprocess(scale, monkeypatch, capsys) -> InProcessCli:
    """The commands of one worker in this process: the workers' processes are tested above."""
    return InProcessCli(scale.cli.env, scale.cli.cwd, monkeypatch, capsys)


@pytest.mark.parametrize("query_count", [1])
def test_every_command_works_on_postgresql(scale, inprocess, pg_url):
    upgrade = inprocess("db", "upgrade")
    assert upgrade.returncode == 0, upgrade.stderr
    assert "latest schema" in upgrade.stdout
    with sa.create_engine(pg_url).connect() as conn:
        assert conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()
    one = scale.specs[0]
    run = inprocess("run", "--query", one.name)
    assert run.returncode == 0, run.stdout + run.stderr
    key = (one.name, f"{one.database}.autogen")
    assert inprocess.status()[key]["last_status"] == "ok"
    reset_to = floor(ago(minutes=30), one.interval_seconds)
    reset = inprocess("reset", "--query", one.name, "--to", iso(reset_to))
    assert reset.returncode == 0, reset.stderr
    assert inprocess.status()[key]["exported_until"] == iso(reset_to)
    backfill = inprocess("run", "--since", "50m", "--until", "40m")
    assert backfill.returncode == 0, backfill.stdout + backfill.stderr
    assert "backfilled" in backfill.stderr + backfill.stdout
    table = inprocess("status")
    assert table.returncode == 0 and one.name in table.stdout


@pytest.mark.parametrize("query_count", [1])
def test_an_unreachable_postgresql_is_one_line_and_exit_2(inprocess):
    url = "postgresql+psycopg://postgres:secret-pw@127.0.0.1:1/nowhere"
    for command in (["status"], ["db", "upgrade"]):
        result = inprocess(*command, ARCHIVER_DB_URL=url)
        assert result.returncode == 2, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert "secret-pw" not in result.stderr
