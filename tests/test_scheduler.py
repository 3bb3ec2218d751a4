"""The cron loop: ticks, skipped ticks, failures, stopping, signals and the heartbeat.

Time is fake: `FakeTimeEvent.wait(timeout)` lets `timeout` seconds of fake time pass at once, so
the loop runs hours of schedule in microseconds and no test sleeps.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import queue
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from archiver import settings
from archiver.errors import ConfigError
from archiver.schedule import cron, health
from tests.clocks import FakeClock, FakeTimeEvent
from tests.e2e import ACCOUNT
from tests.faults import wait_until

REPO = Path(__file__).resolve().parent.parent
START = datetime(2026, 11, 25, 4, 30, tzinfo=UTC)
FAR_AWAY_TICK = "0 0 1 1 *"


class RecordingJob:
    """Records when it ran; stops the loop after `runs` runs; may take time or raise."""

    def __init__(
        self,
        clock: FakeClock,
        stop: threading.Event,
        runs: int,
        durations: dict[int, timedelta] | None = None,
        failures: dict[int, Exception] | None = None,
        exit_code: int = 0,
    ) -> None:
        self.clock, self.stop, self.runs = clock, stop, runs
        self.durations = durations or {}
        self.failures = failures or {}
        self.exit_code = exit_code
        self.started: list[datetime] = []
        self.finished = 0

    def __call__(self) -> int:
        run = len(self.started)
        self.started.append(self.clock())
        self.clock.advance(self.durations.get(run, timedelta(seconds=3)))
        if len(self.started) >= self.runs:
            self.stop.set()
        if run in self.failures:
            raise self.failures[run]
        self.finished += 1
        return self.exit_code


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(START)


@pytest.fixture
def stop(clock: FakeClock) -> FakeTimeEvent:
    return FakeTimeEvent(clock)


@pytest.fixture
def heartbeat_file(tmp_path: Path) -> Path:
    return tmp_path / "state" / "heartbeat.json"


def at(hour: int, minute: int = 0, second: int = 0) -> datetime:
    return START.replace(hour=hour, minute=minute, second=second)


def run(
    expression: str,
    job: Callable[[], int],
    stop: threading.Event,
    clock: FakeClock,
    heartbeat: Path,
) -> int:
    return cron.run_forever(expression, job, stop=stop, clock=clock, heartbeat_file=heartbeat)


def test_job_runs_once_per_tick(clock, stop, heartbeat_file, caplog):
    job = RecordingJob(clock, stop, runs=3)
    caplog.set_level(logging.INFO, logger="archiver.schedule.cron")

    assert run("0 * * * *", job, stop, clock, heartbeat_file) == 0

    assert job.started == [at(5), at(6), at(7)]
    assert "next run at 2026-11-25T05:00:00Z" in caplog.messages
    assert "run finished with exit code 0 in 3.0 s" in caplog.messages
    assert "next run at 2026-11-25T08:00:00Z" not in caplog.messages


def test_six_fields_means_seconds_last(clock, stop, heartbeat_file):
    job = RecordingJob(clock, stop, runs=3)

    run("* * * * * */20", job, stop, clock, heartbeat_file)

    assert job.started == [at(4, 30, 20), at(4, 30, 40), at(4, 31, 0)]


def test_run_at_start_runs_once_before_the_first_tick(clock, stop, heartbeat_file):
    job = RecordingJob(clock, stop, runs=2)
    heartbeats: list[str] = []

    def job_reading_the_heartbeat() -> int:
        heartbeats.append(json.loads(heartbeat_file.read_text())["next_run"])
        return job()

    cron.run_forever(
        "0 * * * *",
        job_reading_the_heartbeat,
        stop=stop,
        clock=clock,
        run_at_start=True,
        heartbeat_file=heartbeat_file,
    )

    assert job.started == [START, at(5)]
    assert heartbeats == ["2026-11-25T04:30:00Z", "2026-11-25T05:00:00Z"]


def test_a_failing_job_is_logged_in_one_line_and_the_loop_goes_on(
    clock, stop, heartbeat_file, caplog
):
    job = RecordingJob(clock, stop, runs=3, failures={0: RuntimeError("influxd went away")})
    caplog.set_level(logging.INFO, logger="archiver.schedule.cron")

    assert run("0 * * * *", job, stop, clock, heartbeat_file) == 0

    assert job.started == [at(5), at(6), at(7)]
    failures = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert [r.getMessage() for r in failures] == [
        "run failed after 3.0 s: RuntimeError: influxd went away"
    ]
    assert failures[0].exc_info is None


def test_a_nonzero_exit_code_is_logged_as_a_warning(clock, stop, heartbeat_file, caplog):
    job = RecordingJob(clock, stop, runs=1, exit_code=1)
    caplog.set_level(logging.INFO, logger="archiver.schedule.cron")

    run("0 * * * *", job, stop, clock, heartbeat_file)

    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == ["run finished with exit code 1 in 3.0 s"]


def test_ticks_missed_during_a_long_run_are_skipped_not_caught_up(
    clock, stop, heartbeat_file, caplog
):
    job = RecordingJob(clock, stop, runs=2, durations={0: timedelta(hours=2, minutes=30)})
    caplog.set_level(logging.INFO, logger="archiver.schedule.cron")

    run("0 * * * *", job, stop, clock, heartbeat_file)

    assert job.started == [at(5), at(8)]
    assert any(m.startswith("skipped 2 missed tick(s)") for m in caplog.messages)


def test_a_run_ending_before_the_next_tick_skips_nothing(clock, stop, heartbeat_file, caplog):
    job = RecordingJob(clock, stop, runs=2, durations={0: timedelta(minutes=59, seconds=59)})
    caplog.set_level(logging.INFO, logger="archiver.schedule.cron")

    run("0 * * * *", job, stop, clock, heartbeat_file)

    assert job.started == [at(5), at(6)]
    assert not any("skipped" in m for m in caplog.messages)


def test_stop_during_a_run_lets_it_finish_and_returns_without_waiting(
    clock, stop, heartbeat_file, caplog
):
    job = RecordingJob(clock, stop, runs=1)
    caplog.set_level(logging.INFO, logger="archiver.schedule.cron")

    assert run("0 * * * *", job, stop, clock, heartbeat_file) == 0

    assert job.finished == 1
    assert clock() == at(5, 0, 3), "no fake time may pass after the run"
    assert caplog.messages[-1] == "scheduler stopped"
    assert [m for m in caplog.messages if m.startswith("next run")] == [
        "next run at 2026-11-25T05:00:00Z"
    ]


def test_stop_before_start_returns_at_once(clock, stop, heartbeat_file):
    stop.set()
    job = RecordingJob(clock, stop, runs=1)

    result = cron.run_forever(
        "0 * * * *", job, stop=stop, clock=clock, run_at_start=True, heartbeat_file=heartbeat_file
    )

    assert result == 0
    assert job.started == []


class ObservedEvent(threading.Event):
    """A real event that tells the test when the scheduler starts waiting on it."""

    def __init__(self) -> None:
        super().__init__()
        self.waiting = threading.Event()

    def wait(self, timeout: float | None = None) -> bool:
        self.waiting.set()
        return super().wait(timeout)


def test_stop_during_the_real_wait_returns_promptly(heartbeat_file):
    stop = ObservedEvent()
    jobs_run: list[int] = []
    result: list[int] = []

    def loop() -> None:
        result.append(
            cron.run_forever(
                FAR_AWAY_TICK,
                lambda: jobs_run.append(1) or 0,
                stop=stop,
                heartbeat_file=heartbeat_file,
            )
        )

    worker = threading.Thread(target=loop, daemon=True)
    worker.start()
    assert stop.waiting.wait(60), "the scheduler never started waiting"
    stop.set()
    worker.join(60)

    assert not worker.is_alive(), "run_forever did not return after stop was set"
    assert result == [0]
    assert jobs_run == []


@pytest.mark.parametrize(
    "cron",
    [
        pytest.param("every hour", id="words"),
        pytest.param("61 * * * *", id="minute-out-of-range"),
        pytest.param("0 * * *", id="four-fields"),
        pytest.param("0 0 * * * * 2027", id="seven-fields"),
        pytest.param("0 0 30 2 *", id="never-matches"),
        pytest.param("", id="empty"),
    ],
)
def test_an_invalid_cron_is_a_config_error_naming_the_variable(cron, clock, stop, heartbeat_file):
    job = RecordingJob(clock, stop, runs=1)

    with pytest.raises(ConfigError, match=r"^ARCHIVER_SCHEDULE '.*' is not a cron expression: "):
        run(cron, job, stop, clock, heartbeat_file)

    assert job.started == []


def test_the_heartbeat_names_the_last_completed_and_the_next_run(clock, stop, heartbeat_file):
    seen: list[dict] = []

    def job() -> int:
        seen.append(json.loads(heartbeat_file.read_text()))
        clock.advance(timedelta(seconds=30))
        if len(seen) == 2:
            stop.set()
        return 0

    run("0 * * * *", job, stop, clock, heartbeat_file)

    assert seen == [
        {
            "schedule": "0 * * * *",
            "updated": "2026-11-25T04:30:00Z",
            "last_completed": None,
            "next_run": "2026-11-25T05:00:00Z",
            "last_pass": None,
            "last_ok": None,
        },
        {
            "schedule": "0 * * * *",
            "updated": "2026-11-25T05:00:30Z",
            "last_completed": "2026-11-25T05:00:30Z",
            "next_run": "2026-11-25T06:00:00Z",
            "last_pass": {
                "exit_code": 0,
                "targets_ok": None,
                "targets_failed": 0,
                "query_file_problems": 0,
                "points": 0,
                "reason": None,
                "nothing_to_do": False,
            },
            "last_ok": "2026-11-25T05:00:30Z",
        },
    ]
    assert [p.name for p in heartbeat_file.parent.iterdir()] == [heartbeat_file.name]


def test_an_unwritable_heartbeat_is_a_warning_not_a_failure(clock, stop, tmp_path, caplog):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    job = RecordingJob(clock, stop, runs=2)

    run("0 * * * *", job, stop, clock, blocker / "heartbeat.json")

    assert job.started == [at(5), at(6)]
    assert any(m.startswith("cannot write the heartbeat file") for m in caplog.messages)


def write_heartbeat(path: Path, next_run: datetime, schedule: str = "0 * * * *") -> None:
    beat = health.Heartbeat(path, schedule)
    beat.write(health.History(next_run - timedelta(hours=1)), next_run=next_run, now=START)


@pytest.mark.parametrize(
    ("now", "healthy"),
    [
        pytest.param(at(4, 59), True, id="waiting-for-the-next-run"),
        pytest.param(at(5, 30), True, id="run-in-progress"),
        pytest.param(at(6, 5), True, id="overdue-by-period-plus-margin"),
        pytest.param(at(6, 5, 1), False, id="overdue-beyond-the-limit"),
    ],
)
def test_health_allows_one_period_plus_a_margin_after_the_due_run(heartbeat_file, now, healthy):
    write_heartbeat(heartbeat_file, next_run=at(5))

    ok, message = health.check_health(heartbeat_file, now)

    assert ok is healthy
    if healthy:
        assert message == (
            "ok: last completed run 2026-11-25T04:00:00Z, next run at 2026-11-25T05:00:00Z"
        )
    else:
        assert message.startswith("the run due at 2026-11-25T05:00:00Z has not completed")
        assert "limit 65.0 min" in message


def test_health_uses_the_period_of_the_heartbeat_schedule(heartbeat_file):
    write_heartbeat(heartbeat_file, next_run=at(5), schedule="*/10 * * * *")

    assert health.check_health(heartbeat_file, at(5, 15))[0] is True
    assert health.check_health(heartbeat_file, at(5, 16))[0] is False


def test_health_takes_an_explicit_max_age(heartbeat_file):
    write_heartbeat(heartbeat_file, next_run=at(5))

    assert health.check_health(heartbeat_file, at(5, 1), timedelta(minutes=2))[0] is True
    assert health.check_health(heartbeat_file, at(5, 3), timedelta(minutes=2))[0] is False


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        pytest.param(None, "no heartbeat file", id="missing"),
        pytest.param("{not json", "is not valid: JSONDecodeError", id="not-json"),
        pytest.param('{"schedule": "0 * * * *"}', "is not valid: KeyError", id="no-next-run"),
        pytest.param(
            '{"schedule": "0 * * * *", "next_run": "soon"}',
            "is not valid: ValueError",
            id="bad-time",
        ),
    ],
)
def test_a_missing_or_broken_heartbeat_is_unhealthy(heartbeat_file, content, expected):
    if content is not None:
        heartbeat_file.parent.mkdir(parents=True)
        heartbeat_file.write_text(content)

    ok, message = health.check_health(heartbeat_file, START)

    assert ok is False
    assert str(heartbeat_file) in message
    assert expected in message


def test_health_reads_the_file_named_by_the_environment(heartbeat_file):
    write_heartbeat(heartbeat_file, next_run=at(5))
    env = {"ARCHIVER_HEARTBEAT_FILE": str(heartbeat_file)}
    heartbeat = settings.load(env).heartbeat_file

    assert heartbeat == heartbeat_file
    assert settings.load({}).heartbeat_file == Path("/tmp/nr-archiver.heartbeat")
    assert health.health(heartbeat, now=at(5, 30))[0] is True
    assert health.health(heartbeat, now=at(7))[0] is False


@pytest.fixture
def restore_signal_handlers() -> Iterator[None]:
    saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    yield
    for signum, handler in saved.items():
        signal.signal(signum, handler)


@pytest.mark.usefixtures("restore_signal_handlers")
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_sets_the_stop_event_and_restores_the_previous_handlers(signum):
    previous = signal.getsignal(signum)
    stop = threading.Event()
    cron.install_signal_handlers(stop)

    os.kill(os.getpid(), signum)

    assert stop.wait(60)
    assert signal.getsignal(signum) is previous


# A real process: the signal reaches a real wait and a real job.
SCHEDULE_SCRIPT = textwrap.dedent(
    """
    import sys, threading
    from pathlib import Path
    from archiver import logs
    from archiver.schedule import cron

    logs.setup("INFO")
    stop = threading.Event()
    cron.install_signal_handlers(stop)

    def job() -> int:
        print("job started", flush=True)
        stopped = stop.wait(60)
        print(f"job finished, stop seen: {stopped}", flush=True)
        return 0

    sys.exit(cron.run_forever(
        sys.argv[1], job, stop=stop, run_at_start=sys.argv[2] == "now",
        heartbeat_file=Path(sys.argv[3]),
    ))
    """
)


class OutputLines:
    """The lines a process prints, read on a thread so that waiting for one is bounded."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.lines: queue.Queue[str | None] = queue.Queue()  # None: the output ended
        self.seen: list[str] = []
        threading.Thread(target=self._read, args=(process,), daemon=True).start()

    def _read(self, process: subprocess.Popen[str]) -> None:
        assert process.stdout is not None
        for line in process.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def wait_for(self, text: str, timeout: float = 120) -> str:
        deadline = time.monotonic() + timeout
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                line = self.lines.get(timeout=remaining)
            except queue.Empty:
                break
            if line is None:
                raise AssertionError(f"the output ended without {text!r}: {self.seen}")
            self.seen.append(line)
            if text in line:
                return line
        raise AssertionError(f"no line with {text!r} within {timeout} s; got {self.seen}")

    def rest(self) -> list[str]:
        while not self.lines.empty():
            if (line := self.lines.get()) is not None:
                self.seen.append(line)
        return self.seen


@pytest.fixture
def start_process(tmp_path: Path) -> Iterator[Callable[..., subprocess.Popen[str]]]:
    processes: list[subprocess.Popen[str]] = []

    def start(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
        process = subprocess.Popen(
            [sys.executable, *args],
            cwd=tmp_path,
            env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        processes.append(process)
        return process

    yield start
    for process in processes:
        if process.poll() is None:
            process.kill()
            process.wait(120)


def test_sigterm_while_waiting_exits_0(start_process, heartbeat_file):
    process = start_process("-c", SCHEDULE_SCRIPT, FAR_AWAY_TICK, "later", str(heartbeat_file))
    output = OutputLines(process)
    output.wait_for("next run at ")

    process.send_signal(signal.SIGTERM)

    assert process.wait(120) == 0
    output.wait_for("scheduler stopped")
    assert not any("job started" in line for line in output.rest())


def test_sigterm_during_a_run_lets_the_job_see_it_and_finish(start_process, heartbeat_file):
    process = start_process("-c", SCHEDULE_SCRIPT, FAR_AWAY_TICK, "now", str(heartbeat_file))
    output = OutputLines(process)
    output.wait_for("job started")

    process.send_signal(signal.SIGTERM)

    assert process.wait(120) == 0
    output.wait_for("job finished, stop seen: True")
    output.wait_for("scheduler stopped")
    assert not any("next run at" in line for line in output.rest())


def cli_importable() -> bool:
    try:
        importlib.import_module("archiver.cli")
    except ImportError:
        return False
    return True


cli_missing = pytest.mark.skipif(not cli_importable(), reason="archiver.cli is not ready yet")


def cli_env(tmp_path: Path, heartbeat_file: Path) -> dict[str, str]:
    queries = tmp_path / "queries"
    queries.mkdir(exist_ok=True)
    return {
        "ARCHIVER_SCHEDULE": FAR_AWAY_TICK,
        "ARCHIVER_HEARTBEAT_FILE": str(heartbeat_file),
        "ARCHIVER_DB_URL": f"sqlite:///{tmp_path / 'archiver.db'}",
        "ARCHIVER_QUERIES_DIR": str(queries),
        "NEW_RELIC_API_KEY": "NRAK-TESTKEYNOTREAL",
        "NEW_RELIC_ACCOUNT_ID": "1",
        "NEW_RELIC_NERDGRAPH_URL": "http://127.0.0.1:9/graphql",
        "INFLUX_URL": "http://127.0.0.1:9",
    }


@cli_missing
def test_cli_schedule_exits_0_on_sigterm_while_waiting(start_process, tmp_path, heartbeat_file):
    process = start_process("-m", "archiver", "schedule", env=cli_env(tmp_path, heartbeat_file))
    output = OutputLines(process)
    output.wait_for("next run at ")

    process.send_signal(signal.SIGTERM)

    assert process.wait(120) == 0


@cli_missing
def test_cli_health_follows_the_running_scheduler(start_process, tmp_path, heartbeat_file):
    env = cli_env(tmp_path, heartbeat_file)
    process = start_process("-m", "archiver", "schedule", env=env)
    output = OutputLines(process)
    output.wait_for("nothing to do: queries folder")  # the pass at start, on an empty folder
    output.wait_for("next run at ")

    verdict = subprocess.run(
        [sys.executable, "-m", "archiver", "health"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO), **env},
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert verdict.returncode == 0, verdict.stdout + verdict.stderr
    assert verdict.stdout.startswith("ok, but nothing to do: queries folder ")
    process.send_signal(signal.SIGTERM)
    assert process.wait(120) == 0


@cli_missing
def test_cli_schedule_survives_a_refused_key_until_the_secret_is_rotated(
    start_process, tmp_path, heartbeat_file, fake_nr, influxd, influx_db
):
    env = cli_env(tmp_path, heartbeat_file)
    del env["NEW_RELIC_API_KEY"]
    key_file = tmp_path / "new_relic_api_key"
    key_file.write_text("NRAK-REVOKED-0000\n")
    (tmp_path / "queries" / "requests.yaml").write_text(
        "nrql: SELECT count(*) AS requests FROM Transaction\n"
        f"measurement: nr_requests\ndatabase: {influx_db}\ninterval: 1 hour\n"
    )
    env.update(
        ARCHIVER_SCHEDULE="* * * * * *",  # a tick every second
        NEW_RELIC_API_KEY_FILE=str(key_file),
        NEW_RELIC_ACCOUNT_ID=str(ACCOUNT),
        NEW_RELIC_NERDGRAPH_URL=fake_nr.url,
        INFLUX_URL=influxd.url,
    )
    process = start_process("-m", "archiver", "schedule", env=env)
    output = OutputLines(process)

    def outcomes() -> list[str]:
        assert process.poll() is None, f"schedule ended: {output.rest()}"
        return [r.outcome for r in fake_nr.requests]

    wait_until(lambda: outcomes().count("bad_api_key") >= 3, 60, "three refused passes")
    verdict = cli_health(tmp_path, env)
    assert verdict.returncode == 1, verdict.stdout + verdict.stderr
    assert "exported nothing: New Relic rejected the API key (HTTP 401)" in verdict.stdout

    key_file.write_text(fake_nr.api_key + "\n")
    wait_until(
        lambda: any(r.outcome == "ok" for r in fake_nr.requests),
        60,
        "a request with the rotated key",
    )
    wait_until(lambda: health.check_health(heartbeat_file, datetime.now(UTC))[0], 60, "a good pass")
    verdict = cli_health(tmp_path, env)
    assert verdict.returncode == 0, verdict.stdout + verdict.stderr
    assert influxd.query("SELECT count(requests) FROM nr_requests", db=influx_db)

    process.send_signal(signal.SIGTERM)
    assert process.wait(120) == 0
    lines = output.rest()
    assert "scheduler stopped" in lines[-1]
    assert not any("NRAK-REVOKED-0000" in line for line in lines)


def healthy(heartbeat_file: Path) -> bool:
    return health.check_health(heartbeat_file, datetime.now(UTC))[0]


def cli_health(cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "archiver", "health"],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(REPO), **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
