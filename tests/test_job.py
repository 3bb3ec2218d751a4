"""One job in-process: the checkpoint never passes what the sink did not acknowledge.

The state is real SQLite and New Relic the fake NerdGraph server over HTTP; the sink is a
double that keeps what it acknowledged (the database is not under test here) and fails in the
middle of its third write, after half of the window's lines, as InfluxDB going away mid-batch.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from archiver.errors import ExitCode, TransientError
from archiver.newrelic.limiter import Limiter
from archiver.newrelic.nerdgraph import NerdGraphClient
from archiver.pipeline import job as job_module
from archiver.pipeline.job import FETCH_AHEAD, Job, JobResult
from archiver.pipeline.plan import PlannedJob
from archiver.pipeline.report import RunReport
from archiver.pipeline.run import Runner
from archiver.queries import QueryDef
from archiver.queries.load import load_file
from archiver.sinks.base import RetentionPolicy, WriteResult
from archiver.state.store import State
from archiver.verify.compare import parse_line
from archiver.windows import Window, floor
from fakes.nerdgraph import TOO_BIG_MESSAGE, FakeNerdGraph, GraphqlRequest, Reply, _graphql_error
from tests.e2e import ACCOUNT, expected_points
from tests.faults import small_spec

NOW = floor(datetime.now(UTC), timedelta(minutes=1))  # the fake answers nothing in the future
START = NOW - timedelta(days=2)
# 3 series at 1 minute over 2 days: a first window of 4 buckets (LIMIT MAX: 20,000 rows), then
# 366 (sized by the answers)
SPEC = small_spec("logins", "db", START, minutes=1)
TARGET = "db.autogen"


class RecordingSink:
    """Acknowledges writes and keeps their lines; write number `fail_on` fails half-way."""

    def __init__(self, fail_on: int | None = None) -> None:
        self.fail_on = fail_on
        self.calls = 0
        self.acknowledged: list[list[str]] = []
        self.unacknowledged: list[str] = []  # what reached the database before the failure

    def ping(self) -> str:
        return "1.8"

    def ensure_target(
        self, database: str, retention_policy: str | None, retention_duration: str | None
    ) -> RetentionPolicy:
        return RetentionPolicy(retention_policy or "autogen", None, True)

    def write(
        self, database: str, retention_policy: str | None, lines: Sequence[str], precision="s"
    ) -> WriteResult:
        self.calls += 1
        if self.calls == self.fail_on:
            self.unacknowledged = list(lines[: len(lines) // 2])
            raise TransientError("InfluxDB went away half-way through the window")
        self.acknowledged.append(list(lines))
        return WriteResult(len(lines), 0, 1, 0)

    def close(self) -> None:
        pass


class GatedSink(RecordingSink):
    """Holds its first write until `ready()`, checked whenever `changed` is notified."""

    def __init__(self, changed: threading.Condition, ready) -> None:
        super().__init__()
        self.changed, self.ready = changed, ready

    def write(self, database, retention_policy, lines, precision="s") -> WriteResult:
        if not self.acknowledged:
            with self.changed:
                assert self.changed.wait_for(self.ready, WAIT_SECONDS), "never ready"
        return super().write(database, retention_policy, lines, precision)


@pytest.fixture
def query(tmp_path: Path) -> QueryDef:
    path = SPEC.write(tmp_path)
    loaded, problems = load_file(path, now=NOW)
    assert loaded is not None, problems
    return loaded


def run_once(fake_nr, state: State, query: QueryDef, sink: RecordingSink) -> RunReport:
    def client() -> NerdGraphClient:
        return NerdGraphClient(fake_nr.url, fake_nr.api_key, limiter=Limiter(), max_attempts=1)

    runner = Runner(
        state=state,
        sink=sink,
        client_factory=client,
        default_account=ACCOUNT,
        workers=1,
        now=lambda: NOW,
        self_metrics=False,
    )
    return runner.run([query])


def keys(lines: list[str]) -> list[tuple]:
    return [parse_line(line).key for line in lines]


def instants(lines: list[str]) -> set[datetime]:
    return {datetime.fromtimestamp(time_ns / 1e9, UTC) for _, time_ns in keys(lines)}


def test_a_sink_failing_mid_window_leaves_the_checkpoint_at_the_last_acknowledged_window(
    fake_nr, tmp_path, query, monkeypatch
):
    monkeypatch.setattr(job_module, "COALESCE_LINES", 1)  # one write per window,
    monkeypatch.setattr(job_module, "WRITES_AHEAD", 0)  # recorded before the next is written
    state = State.open(f"sqlite:///{tmp_path / 'state.db'}")
    # Meanwhile the read-ahead thread asks New Relic for the next windows: it must not move
    # the checkpoint, nor be named as the window that failed.
    failing = RecordingSink(fail_on=3)

    first = run_once(fake_nr, state, query, failing)

    [job] = first.jobs
    assert (job.status, first.exit_code) == ("failed", ExitCode.QUERY_FAILED)
    assert "InfluxDB went away" in job.error
    written = [Window(*w) for w in state.windows_written("logins", TARGET)]
    assert [w.buckets(timedelta(minutes=1)) for w in written] == [4, 366]
    assert written[0].since == START and written[0].until == written[1].since
    checkpoint = state.checkpoint("logins", TARGET)
    assert checkpoint == written[-1].until  # the end of the last acknowledged window
    assert job.exported_until == checkpoint and (job.windows, job.window.since) == (2, checkpoint)
    # Everything acknowledged is before the checkpoint; the half-written window after it.
    acknowledged = [line for lines in failing.acknowledged for line in lines]
    assert max(instants(acknowledged)) < checkpoint
    assert failing.unacknowledged and min(instants(failing.unacknowledged)) == checkpoint
    assert job.points == len(acknowledged)

    # Run again: exactly the missing windows, from the checkpoint to the end, each point once.
    sink = RecordingSink()
    again = run_once(fake_nr, state, query, sink)

    assert [j.status for j in again.jobs] == ["ok"] and again.exit_code == ExitCode.OK
    rerun = [line for lines in sink.acknowledged for line in lines]
    assert min(instants(rerun)) == checkpoint
    windows = [Window(*w) for w in state.windows_written("logins", TARGET)]
    assert windows[:2] == written and windows[2].since == checkpoint
    assert all(a.until == b.since for a, b in itertools.pairwise(windows))
    end = NOW - query.lag  # NOW is on a bucket boundary, and so is the lag
    assert state.checkpoint("logins", TARGET) == windows[-1].until == end
    everything = keys(acknowledged) + keys(rerun)
    assert len(everything) == len(set(everything)), "a point was exported twice"
    expected = expected_points(SPEC, START, end)
    assert set(everything) == {(tags, seconds * 10**9) for tags, seconds in expected}


def test_windows_ready_together_are_written_together_and_each_is_recorded(
    fake_nr, tmp_path, query, monkeypatch
):
    state = State.open(f"sqlite:///{tmp_path / 'state.db'}")
    monkeypatch.setattr(job_module, "WRITES_AHEAD", 0)  # the first group alone is handed over
    answered = threading.Condition()
    answers = []
    answer = fake_nr._answer

    def counted(*args, **kwargs):
        reply = answer(*args, **kwargs)
        with answered:
            answers.append(reply)
            answered.notify_all()
        return reply

    monkeypatch.setattr(fake_nr, "_answer", counted)
    # The first write waits until New Relic answered all 9 windows. Window 9 is asked once
    # window 5 is taken (FETCH_AHEAD asked beyond it), so windows 2-4 (1,098 lines each: 3
    # series x 366 buckets; 4 fit below COALESCE_LINES) are then ready together.
    assert job_module.FETCH_AHEAD >= 4
    sink = GatedSink(answered, lambda: len(answers) >= 9)

    report = run_once(fake_nr, state, query, sink)

    [job] = report.jobs
    windows = [Window(*w) for w in state.windows_written("logins", TARGET)]
    assert job.status == "ok" and job.windows == len(windows) == 9
    assert len(sink.acknowledged) < len(windows)  # several windows in one write
    assert len(sink.acknowledged[1]) >= 3 * 1098  # windows 2 to 4 (at least) in one write
    assert all(len(lines) <= job_module.COALESCE_LINES for lines in sink.acknowledged[1:])
    assert all(a.until == b.since for a, b in itertools.pairwise(windows))
    assert state.checkpoint("logins", TARGET) == windows[-1].until == NOW - query.lag
    written = keys([line for lines in sink.acknowledged for line in lines])
    expected = expected_points(SPEC, START, NOW - query.lag)
    assert sorted(written) == sorted((tags, seconds * 10**9) for tags, seconds in expected)


def test_windows_that_come_while_a_group_is_written_wait_to_go_together(
    fake_nr, tmp_path, query, monkeypatch
):
    """With writers free (WRITES_AHEAD as it is), a small window must not go in a write of
    its own while the group before it is being written: the windows that come meanwhile wait
    and go together once it is recorded (`Hold`)."""
    state = State.open(f"sqlite:///{tmp_path / 'state.db'}")
    produced = threading.Condition()
    exhausted = []
    batches = Job.batches

    def every_window(self, *args, **kwargs):
        yield from batches(self, *args, **kwargs)
        with produced:
            exhausted.append(True)
            produced.notify_all()

    monkeypatch.setattr(Job, "batches", every_window)
    # The first write (the 4-bucket window) waits until every window was made into lines and
    # is ready; the 8 windows after it (366 buckets, 1,098 lines at most) fit in one group.
    assert job_module.COALESCE_LINES >= 8 * 1098 and job_module.WRITES_AHEAD >= 1
    sink = GatedSink(produced, lambda: bool(exhausted))

    report = run_once(fake_nr, state, query, sink)

    [job] = report.jobs
    assert job.status == "ok" and job.windows == 9
    # (written at once: the second group could grow no more, its windows being the last)
    assert sorted(len(lines) for lines in sink.acknowledged) == [12, job.points - 12]
    windows = [Window(*w) for w in state.windows_written("logins", TARGET)]
    assert len(windows) == 9 and state.checkpoint("logins", TARGET) == windows[-1].until
    written = keys([line for lines in sink.acknowledged for line in lines])
    expected = expected_points(SPEC, START, NOW - query.lag)
    assert sorted(written) == sorted((tags, seconds * 10**9) for tags, seconds in expected)


def test_a_failed_write_of_several_windows_records_none_of_them(fake_nr, tmp_path, query):
    state = State.open(f"sqlite:///{tmp_path / 'state.db'}")
    failing = RecordingSink(fail_on=2)

    report = run_once(fake_nr, state, query, failing)

    [job] = report.jobs
    assert job.status == "failed" and "InfluxDB went away" in job.error
    windows = [Window(*w) for w in state.windows_written("logins", TARGET)]
    assert job.windows == len(windows) >= 1
    assert state.checkpoint("logins", TARGET) == windows[-1].until == job.window.since
    # Everything before the checkpoint was acknowledged; the failed write starts there (a
    # later group handed to the writer meanwhile may be written too, and is asked again).
    acknowledged = [line for lines in failing.acknowledged for line in lines]
    checkpoint = windows[-1].until
    assert min(instants(failing.unacknowledged)) == checkpoint
    before = {key for key in keys(acknowledged) if key[1] < checkpoint.timestamp() * 10**9}
    expected = expected_points(SPEC, START, checkpoint)
    assert before == {(tags, seconds * 10**9) for tags, seconds in expected}


# -- windows asked ahead, several at once --------------------------------------------------

WAIT_SECONDS = 30  # a bound on waiting for the other threads, never reached when it works


class HeldNerdGraph(FakeNerdGraph):
    """Holds each answer until the test lets it go; records when each window was asked."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.changed = threading.Condition()
        self.asked: list[int] = []  # each request's SINCE, in the order they arrived
        self.taken_when_asked: list[int] = []  # batches the consumer had taken by then
        self.taken = 0
        self.released: set[int] = set()
        self.holding = True

    def _answer(self, api_key, request: GraphqlRequest):
        key = self.key(request)
        with self.changed:
            self.asked.append(key)
            self.taken_when_asked.append(self.taken)
            self.changed.notify_all()
            assert self.changed.wait_for(
                lambda: not self.holding or key in self.released, WAIT_SECONDS
            ), "never released"
        return super()._answer(api_key, request)

    def key(self, request: GraphqlRequest):
        """What a request is told apart by, recorded and released: its window's SINCE."""
        return request.since_ms

    def wait_asked(self, count: int) -> list[int]:
        with self.changed:
            assert self.changed.wait_for(lambda: len(self.asked) >= count, WAIT_SECONDS)
            return list(self.asked)

    def release(self, *since_ms: int) -> None:
        with self.changed:
            self.released.update(since_ms)
            self.changed.notify_all()

    def release_all(self) -> None:
        with self.changed:
            self.holding = False
            self.changed.notify_all()


def test_windows_are_asked_several_at_once_and_written_in_order_a_bounded_number_ahead(
    tmp_path, query
):
    state = State.open(f"sqlite:///{tmp_path / 'state.db'}")
    target = query.targets[0]
    planned = PlannedJob(query, target, ACCOUNT, [(START, START + timedelta(days=2))], [])
    with (
        HeldNerdGraph(accounts={ACCOUNT}).start() as fake,
        NerdGraphClient(fake.url, fake.api_key, limiter=Limiter(), max_attempts=1) as client,
        ThreadPoolExecutor(1) as consumer,
    ):
        try:
            job = Job(planned, JobResult(query.name, target.key), state, client, lambda: False)
            batches = job.batches()
            taken: list[Window] = []

            def take() -> Window:
                batch = next(batches)
                with fake.changed:
                    fake.taken += 1
                return batch.window

            # The first window is asked alone: its answer sizes the next ones.
            first = consumer.submit(take)
            [since] = fake.wait_asked(1)
            fake.release(since)
            taken.append(first.result(WAIT_SECONDS))
            # Then FETCH_AHEAD windows are asked at once, before any of them is answered ...
            second = consumer.submit(take)
            ahead = sorted(fake.wait_asked(1 + FETCH_AHEAD)[1:])  # on as many threads
            assert len(ahead) == FETCH_AHEAD and ahead[0] > since
            # ... and answered in reverse order, they still come out in order.
            fake.release(*ahead[1:])
            fake.release(ahead[0])
            taken.append(second.result(WAIT_SECONDS))
            fake.release_all()  # the rest: as soon as they are asked
            while True:
                step = consumer.submit(take)
                try:
                    taken.append(step.result(WAIT_SECONDS))
                except StopIteration:
                    break

        finally:
            fake.release_all()  # a failure above leaves no request held

    assert [w.since for w in taken[1:]] == [w.until for w in taken[:-1]]
    assert (taken[0].since, taken[-1].until) == (START, START + timedelta(days=2))
    assert [int(w.since.timestamp() * 1000) for w in taken] == sorted(fake.asked)
    assert len(fake.asked) == len(taken), "a window was asked twice"
    # Never more than FETCH_AHEAD windows asked and not yet taken by the consumer.
    for number, taken_then in enumerate(fake.taken_when_asked, start=1):
        assert number - taken_then <= FETCH_AHEAD, (number, fake.taken_when_asked)


class HeldEventsNerdGraph(HeldNerdGraph):
    """`HeldNerdGraph` for raw events: a window and its first half share their SINCE."""

    def key(self, request: GraphqlRequest):
        return (request.since_ms, request.until_ms)


def test_raw_event_parts_are_asked_several_at_once_and_taken_in_order(tmp_path):
    """~6,000 events a minute in 1-minute windows: the first window alone (capped), its halves
    at once, then FETCH_AHEAD halves of the next windows at once, before any is answered."""
    path = tmp_path / "busy.yaml"
    path.write_text(
        "nrql: SELECT duration, name, appName, host FROM Busy100Transaction\n"
        "mode: events\ntag_attributes: [appName, host]\ninterval: 1 minute\n"
        "measurement: nr_busy\ndatabase: db\n"
    )
    events_query, problems = load_file(path, now=NOW)
    assert events_query is not None, problems
    since = NOW - timedelta(hours=1)
    minutes = [(since + i * MINUTE, since + (i + 1) * MINUTE) for i in range(6)]
    state = State.open(f"sqlite:///{tmp_path / 'state.db'}")
    planned = PlannedJob(
        events_query, events_query.targets[0], ACCOUNT, [(since, minutes[-1][1])], []
    )

    def ms(moment: datetime) -> int:
        return int(moment.timestamp() * 1000)

    def halves(window: tuple[datetime, datetime]) -> list[tuple[int, int]]:
        middle = window[0] + (window[1] - window[0]) / 2
        return [(ms(window[0]), ms(middle)), (ms(middle), ms(window[1]))]

    with (
        HeldEventsNerdGraph(accounts={ACCOUNT}).start() as fake,
        NerdGraphClient(fake.url, fake.api_key, limiter=Limiter(), max_attempts=1) as client,
        ThreadPoolExecutor(1) as consumer,
    ):
        try:
            job = Job(planned, JobResult("busy", "db.autogen"), state, client, lambda: False)
            batches = job.batches()
            taken: list[Window] = []

            def take() -> Window:
                batch = next(batches)
                with fake.changed:
                    fake.taken += 1
                return batch.window

            first = consumer.submit(take)
            whole = (ms(minutes[0][0]), ms(minutes[0][1]))
            assert fake.wait_asked(1) == [whole]  # alone: nothing is known of the stream
            fake.release(whole)  # capped: 5,000 of its ~6,000 events
            # both halves asked before either is answered
            assert sorted(fake.wait_asked(3)[1:]) == halves(minutes[0])
            fake.release(*halves(minutes[0]))
            taken.append(first.result(WAIT_SECONDS))
            taken.append(consumer.submit(take).result(WAIT_SECONDS))  # its second half
            # The window is done: the next ones are asked in halves, FETCH_AHEAD at once.
            third = consumer.submit(take)
            ahead = sorted(fake.wait_asked(3 + FETCH_AHEAD)[3:])
            assert ahead == [p for window in minutes[1:3] for p in halves(window)][:FETCH_AHEAD]
            fake.release(*ahead[1:])  # answered out of order, taken in order
            fake.release(ahead[0])
            taken.append(third.result(WAIT_SECONDS))
            fake.release_all()
            while True:
                step = consumer.submit(take)
                try:
                    taken.append(step.result(WAIT_SECONDS))
                except StopIteration:
                    break
        finally:
            fake.release_all()

    expected = [p for window in minutes for p in halves(window)]
    assert [(ms(w.since), ms(w.until)) for w in taken] == expected
    assert sorted(fake.asked) == sorted([whole, *expected]), "a part was asked twice"
    # At most FETCH_AHEAD parts asked and not yet taken (one more while a capped part's
    # halves replace it).
    for number, taken_then in enumerate(fake.taken_when_asked, start=1):
        assert number - taken_then <= FETCH_AHEAD + 1, (number, fake.taken_when_asked)


# -- windows asked ahead: refused, failing, interrupted ------------------------------------

MINUTE = timedelta(minutes=1)
# The windows of SPEC's 2 days: 4 buckets first (LIMIT MAX, facets unknown), then 366 each.
SECOND, THIRD = START + 4 * MINUTE, START + (4 + 366) * MINUTE


def since_ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


class ScriptedNerdGraph(FakeNerdGraph):
    """Answers the first request for a window (by its SINCE) with a scripted reply; with
    `after_later`, only once a later window was asked too (so both are asked at once)."""

    def __init__(self, once: dict[int, Reply], *, after_later: bool = False, **kwargs) -> None:
        super().__init__(**kwargs)
        self.once = dict(once)
        self.after_later = after_later
        self.script_lock = threading.Condition()
        self.latest = -1  # the latest SINCE asked so far

    def _answer(self, api_key, request: GraphqlRequest):
        since = request.since_ms
        with self.script_lock:
            self.latest = max(self.latest, since)
            self.script_lock.notify_all()
            scripted = self.once.pop(since, None)
            if scripted is not None and self.after_later:
                self.script_lock.wait_for(lambda: self.latest > since, WAIT_SECONDS)
        return scripted or super()._answer(api_key, request)


def export(fake, state: State, query: QueryDef, sink: RecordingSink, stopping=lambda: False):
    target = query.targets[0]
    planned = PlannedJob(query, target, ACCOUNT, [(START, NOW - query.lag)], [])
    result = JobResult(query.name, target.key)
    with NerdGraphClient(fake.url, fake.api_key, limiter=Limiter(), max_attempts=2) as client:
        job = Job(planned, result, state, client, stopping)
        export_id = state.start_export(state.start_run("run", NOW), query.name, target.key, NOW)
        try:
            job.export(sink, export_id, None, "test:1:holder", timedelta(minutes=10))
        except Exception as exc:  # the runner's part: kept for the assertions
            result.status, result.error = "failed", str(exc)
    return result


def written_windows(state: State) -> list[Window]:
    return [Window(*w) for w in state.windows_written("logins", TARGET)]


class LeaseTakingSink(RecordingSink):
    """Before acknowledging its first write, lets another worker take the lease (as one would
    once this worker's lease expired)."""

    def __init__(self, state: State, clock: list[datetime]) -> None:
        super().__init__()
        self.state, self.clock = state, clock

    def write(self, database, retention_policy, lines, precision="s") -> WriteResult:
        if self.calls == 0:
            assert self.state.acquire_lease("logins", TARGET, "other:2", LEASE, self.clock[0])
        return super().write(database, retention_policy, lines, precision)


LEASE = timedelta(minutes=10)


def export_with_clock(fake, state: State, query: QueryDef, sink: RecordingSink, clock) -> JobResult:
    target = query.targets[0]
    planned = PlannedJob(query, target, ACCOUNT, [(START, NOW - query.lag)], [])
    result = JobResult(query.name, target.key)
    with NerdGraphClient(fake.url, fake.api_key, limiter=Limiter(), max_attempts=2) as client:
        job = Job(planned, result, state, client, lambda: False, now=lambda: clock[0])
        export_id = state.start_export(state.start_run("run", NOW), query.name, target.key, NOW)
        job.export(sink, export_id, None, "test:1:holder", LEASE)
    return result


def test_a_job_whose_lease_was_taken_stops_and_leaves_the_rest_to_the_new_holder(
    fake_nr, tmp_path, query
):
    state = State.open(f"sqlite:///{tmp_path / 'state.db'}")
    clock = [NOW]
    sink = LeaseTakingSink(state, clock)

    result = export_with_clock(fake_nr, state, query, sink, clock)

    assert result.status == "busy"
    assert state.lease_holder("logins", TARGET)[0] == "other:2"
    recorded = written_windows(state)
    assert recorded and recorded[0].since == START  # the group it wrote before it knew
    assert recorded[-1].until < NOW - query.lag  # and nothing after: the rest is other:2's


def test_the_lease_is_renewed_once_a_tenth_of_its_time_has_passed(fake_nr, tmp_path, query):
    state = State.open(f"sqlite:///{tmp_path / 'state.db'}")
    clock = [NOW]
    renewals: list[datetime] = []
    acquire = state.acquire_lease

    def counted(name, key, holder, ttl, now, **kwargs):
        renewals.append(now)
        clock[0] += timedelta(seconds=25)  # each renewal finds the clock 25 s later
        return acquire(name, key, holder, ttl, now, **kwargs)

    state.acquire_lease = counted  # type: ignore[method-assign]
    sink = RecordingSink()

    result = export_with_clock(fake_nr, state, query, sink, clock)

    assert result.status != "busy" and len(written_windows(state)) > 3
    # the first group renews it; after that, every other group at most (25 s < 60 s, 50 s not)
    assert renewals[0] == NOW
    assert all(b - a >= LEASE / 10 for a, b in itertools.pairwise(renewals))
    assert len(renewals) < len(sink.acknowledged)


def test_a_window_asked_ahead_and_refused_as_too_big_is_asked_again_in_halves(tmp_path, query):
    state = State.open(f"sqlite:///{tmp_path / 'state.db'}")
    too_big = _graphql_error(TOO_BIG_MESSAGE, "TIMEOUT", "too_big")
    with ScriptedNerdGraph({since_ms(THIRD): too_big}, accounts={ACCOUNT}).start() as fake:
        sink = RecordingSink()
        result = export(fake, state, query, sink)
        asked = [(r.since_ms, r.outcome) for r in fake.requests]

    assert result.status == "ok", result.error
    windows = written_windows(state)
    assert [w.since for w in windows[:3]] == [START, SECOND, THIRD]
    assert all(a.until == b.since for a, b in itertools.pairwise(windows))
    assert windows[-1].until == NOW - query.lag
    # Refused, the third window is asked again with half its buckets, alone; the windows asked
    # with it were answered but dropped, and asked again at the smaller size.
    assert windows[2].buckets(MINUTE) == 183 and all(w.buckets(MINUTE) <= 183 for w in windows[2:])
    refused = asked.index((since_ms(THIRD), "too_big"))
    assert asked[refused + 1 :].count((since_ms(THIRD), "ok")) == 1
    assert result.nr_requests == len(asked) and len(asked) > len(windows)
    lines = [line for batch in sink.acknowledged for line in batch]
    assert len(keys(lines)) == len(set(keys(lines))) == result.points
    expected = expected_points(SPEC, START, NOW - query.lag)
    assert set(keys(lines)) == {(tags, seconds * 10**9) for tags, seconds in expected}


def test_an_error_in_an_answer_asked_ahead_fails_the_job_at_that_window_in_order(tmp_path, query):
    state = State.open(f"sqlite:///{tmp_path / 'state.db'}")
    error = _graphql_error("NRQL Syntax Error: stop here", "INVALID_INPUT", "nrql_error")
    with ScriptedNerdGraph({since_ms(THIRD): error}, accounts={ACCOUNT}).start() as fake:
        sink = RecordingSink()
        result = export(fake, state, query, sink)

    assert result.status == "failed" and "NRQL Syntax Error: stop here" in result.error
    # The windows before it are written and recorded, none after it.
    assert [w.since for w in written_windows(state)] == [START, SECOND]
    assert result.window is not None and result.window.since == THIRD
    assert len(sink.acknowledged) == result.windows == 2


def test_a_transient_error_in_an_answer_asked_ahead_is_retried_in_place(tmp_path, query):
    state = State.open(f"sqlite:///{tmp_path / 'state.db'}")
    busy = _graphql_error("rate limited", "TOO_MANY_REQUESTS", "graphql_rate_limited")
    with ScriptedNerdGraph({since_ms(THIRD): busy}, accounts={ACCOUNT}).start() as fake:
        sink = RecordingSink()
        result = export(fake, state, query, sink)

    assert result.status == "ok" and result.retries == 1
    windows = written_windows(state)
    assert [w.since for w in windows[:3]] == [START, SECOND, THIRD]
    assert windows[-1].until == NOW - query.lag


class StoppingSink(RecordingSink):
    """Stops the run during its second write, once the windows asked with it were asked."""

    def __init__(self, fake: HeldNerdGraph) -> None:
        super().__init__()
        self.fake, self.stop = fake, threading.Event()

    def write(self, database, retention_policy, lines, precision="s") -> WriteResult:
        if self.calls == 1:
            self.fake.wait_asked(1 + FETCH_AHEAD)
            self.stop.set()
        return super().write(database, retention_policy, lines, precision)


def test_interrupted_while_answers_wait_their_turn_writes_nothing_more(
    tmp_path, query, monkeypatch
):
    # A group of one window (1,098 lines) at most: the windows asked ahead wait their turn
    # (with room for all of them, every window would be taken before the stop).
    monkeypatch.setattr(job_module, "COALESCE_LINES", 1098)
    state = State.open(f"sqlite:///{tmp_path / 'state.db'}")
    with HeldNerdGraph(accounts={ACCOUNT}).start() as fake:
        fake.release_all()  # answered at once; the fake only counts the windows asked
        sink = StoppingSink(fake)
        before = {t.ident for t in threading.enumerate()}
        result = export(fake, state, query, sink, stopping=sink.stop.is_set)
        asked = len(fake.asked)

    # The windows taken before the stop are written (those handed to the writers and read
    # ahead as well), the others asked with them are dropped, unparsed or as lines, and none
    # is recorded.
    assert result.status == "interrupted" and 2 <= result.windows < asked
    windows = written_windows(state)
    assert [w.since for w in windows[:2]] == [START, SECOND] and len(windows) == result.windows
    assert all(a.until == b.since for a, b in itertools.pairwise(windows))
    assert state.checkpoint("logins", TARGET) == windows[-1].until
    assert asked >= 1 + FETCH_AHEAD > result.windows
    left = [t for t in threading.enumerate() if t.ident not in before and "-ask" in t.name]
    assert left == [], "a thread asking New Relic outlived the job"


def test_rows_are_handed_to_the_transform_once_and_let_go_of():
    from archiver.pipeline import transform
    from archiver.pipeline.job import _consumed

    rows = [
        {"facet": name, "provider": name, "beginTimeSeconds": 60 * i, "count": i}
        for i in range(5)
        for name in ("a", "b")
    ]
    expected = transform.to_lines([dict(row) for row in rows], ("provider",), "m", {"x": "y"})
    held = [dict(row) for row in rows]
    assert transform.to_lines(_consumed(held), ("provider",), "m", {"x": "y"}) == expected
    assert held == []  # every row let go of


def test_a_raw_event_part_failing_while_later_ones_are_asked_fails_the_job_at_that_part(
    tmp_path,
):
    """The parts asked with it are dropped: none of them is written or recorded."""
    path = tmp_path / "busy.yaml"
    path.write_text(
        "nrql: SELECT duration, name, appName, host FROM Busy100Transaction\n"
        "mode: events\ntag_attributes: [appName, host]\ninterval: 1 minute\n"
        "measurement: nr_busy\ndatabase: db\n"
    )
    events_query, problems = load_file(path, now=NOW)
    assert events_query is not None, problems
    since = NOW - timedelta(hours=1)
    until = since + 6 * MINUTE
    failing = since + 2 * MINUTE + timedelta(seconds=30)  # minute 2's second half
    error = _graphql_error("NRQL Syntax Error: stop here", "INVALID_INPUT", "nrql_error")
    state = State.open(f"sqlite:///{tmp_path / 'state.db'}")
    target = events_query.targets[0]
    planned = PlannedJob(events_query, target, ACCOUNT, [(since, until)], [])
    result = JobResult(events_query.name, target.key)
    sink = RecordingSink()
    with (
        ScriptedNerdGraph(
            {since_ms(failing): error}, after_later=True, accounts={ACCOUNT}
        ).start() as fake,
        NerdGraphClient(fake.url, fake.api_key, limiter=Limiter(), max_attempts=2) as client,
    ):
        job = Job(planned, result, state, client, lambda: False)
        export_id = state.start_export(state.start_run("run", NOW), planned.name, target.key, NOW)
        with pytest.raises(Exception, match="NRQL Syntax Error: stop here"):
            job.export(sink, export_id, None, "test:1:holder", LEASE)
        asked = [r.since_ms for r in fake.requests]

    halves = [since + i * MINUTE / 2 for i in range(5)]  # minutes 0 and 1, minute 2's first
    written = [Window(*w) for w in state.windows_written(planned.name, target.key)]
    assert [w.since for w in written] == halves
    assert written[-1].until == failing and result.window.since == failing
    assert max(asked) > since_ms(failing)  # parts after it were asked at once ...
    lines = [line for batch in sink.acknowledged for line in batch]
    assert len(lines) == result.points  # ... and none of them was written
    stamps = [int(line.rpartition(" ")[2]) // 1_000_000 for line in lines]
    assert max(stamps) < since_ms(failing)


def test_a_raw_event_job_interrupted_stops_after_the_part_in_hand(tmp_path):
    """Stopping is checked after each part: what was written is recorded, nothing after."""
    path = tmp_path / "busy.yaml"
    path.write_text(
        "nrql: SELECT duration, name, appName, host FROM Busy100Transaction\n"
        "mode: events\ntag_attributes: [appName, host]\ninterval: 1 minute\n"
        "measurement: nr_busy\ndatabase: db\n"
    )
    events_query, problems = load_file(path, now=NOW)
    assert events_query is not None, problems
    since = NOW - timedelta(hours=1)
    state = State.open(f"sqlite:///{tmp_path / 'state.db'}")
    target = events_query.targets[0]
    planned = PlannedJob(events_query, target, ACCOUNT, [(since, since + 10 * MINUTE)], [])
    result = JobResult(events_query.name, target.key)
    sink = RecordingSink()
    with (
        FakeNerdGraph(accounts={ACCOUNT}).start() as fake,
        NerdGraphClient(fake.url, fake.api_key, limiter=Limiter(), max_attempts=2) as client,
    ):
        job = Job(planned, result, state, client, lambda: bool(sink.acknowledged))
        export_id = state.start_export(state.start_run("run", NOW), planned.name, target.key, NOW)
        job.export(sink, export_id, None, "test:1:holder", LEASE)

    assert result.status == "interrupted"
    written = [Window(*w) for w in state.windows_written(planned.name, target.key)]
    assert written and written[0].since == since and written[-1].until < since + 10 * MINUTE
    assert all(a.until == b.since for a, b in itertools.pairwise(written))
    lines = [line for batch in sink.acknowledged for line in batch]
    assert len(lines) == result.points and result.windows == len(written)
