"""`schedule` with real passes, and what `health` says about them.

The loop runs in-process on the fake clock of tests/test_scheduler.py (hours of ticks in
milliseconds, no sleeps); every pass is the one `nr-archiver schedule` runs
(`cli.scheduled_pass`), against the fake NerdGraph server, a real influxd and a SQLite state.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from archiver import cli
from archiver.arguments import build_parser
from archiver.schedule import cron, health
from archiver.state.store import State
from archiver.status import collect
from tests.clocks import FakeClock, FakeTimeEvent
from tests.e2e import Spec, cli_env
from tests.test_scheduler import START

HOURLY = "0 * * * *"
REVOKED_KEY = "NRAK-REVOKED-KEY-0000"


def spec(name: str, database: str, nrql: str = "SELECT count(*) AS requests FROM Transaction"):
    return Spec(
        name=name,
        nrql=nrql,
        event_type="Transaction",
        facets=(),
        items=(),
        measurement=f"nr_{name}",
        interval="1 hour",
        interval_seconds=3600,
        database=database,
    )


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    return tmp_path / "secrets" / "new_relic_api_key"


@pytest.fixture
def heartbeat(tmp_path: Path) -> Path:
    return tmp_path / "heartbeat.json"


@pytest.fixture
def env(tmp_path, fake_nr, influxd, queries_dir, state_path, key_file, heartbeat) -> dict:
    """The container's environment: the key comes from a mounted secret file."""
    key_file.parent.mkdir()
    key_file.write_text(fake_nr.api_key + "\n")
    variables = cli_env(
        nerdgraph_url=fake_nr.url,
        api_key="",
        influx_url=influxd.url,
        db_url=f"sqlite:///{state_path}",
        queries=queries_dir,
    )
    del variables["NEW_RELIC_API_KEY"]
    return {
        **variables,
        "NEW_RELIC_API_KEY_FILE": str(key_file),
        "ARCHIVER_HEARTBEAT_FILE": str(heartbeat),
    }


class Ticks:
    """Runs the real scheduled pass at each tick and records what `health` says between passes.

    `before[n]` runs before pass n (to rotate a key, fix a file); pass 0 runs at start, and the
    loop stops after `passes` passes. `healths[n]` is what health says before pass n, and the
    last one what it says after the last pass.
    """

    def __init__(
        self,
        env: dict,
        heartbeat: Path,
        passes: int,
        before: dict[int, Callable[[], object]] | None = None,
    ) -> None:
        self.clock = FakeClock(START)
        self.stop = FakeTimeEvent(self.clock)
        self.heartbeat, self.passes, self.before = heartbeat, passes, before or {}
        args = build_parser().parse_args(["schedule"])
        self.job = cli.scheduled_pass(args, self.stop, env)
        self.healths: list[tuple[bool, str]] = []

    def __call__(self) -> health.PassOutcome | int:
        n = len(self.healths)
        self.healths.append(self.health())
        if n in self.before:
            self.before[n]()
        outcome = self.job()
        if n + 1 == self.passes:
            self.stop.set()
        return outcome

    def health(self) -> tuple[bool, str]:
        return health.check_health(self.heartbeat, self.clock())

    def run(self) -> int:
        exit_code = cron.run_forever(
            HOURLY,
            self,
            stop=self.stop,
            clock=self.clock,
            run_at_start=True,
            heartbeat_file=self.heartbeat,
        )
        self.healths.append(self.health())
        return exit_code


def test_a_refused_key_keeps_the_scheduler_ticking_and_health_failing_until_it_is_rotated(
    env, heartbeat, key_file, fake_nr, influxd, influx_db, queries_dir, caplog
):
    spec("requests", influx_db).write(queries_dir)
    key_file.write_text(REVOKED_KEY + "\n")
    caplog.set_level(logging.INFO)
    rotate = {3: lambda: key_file.write_text(fake_nr.api_key)}
    ticks = Ticks(env, heartbeat, passes=5, before=rotate)

    assert ticks.run() == 0

    assert len(ticks.healths) == 6, "the loop must go on after a refused key"
    # healths[n] is what pass n-1 left: three refused passes, then the rotated key works
    assert [ok for ok, _ in ticks.healths] == [True, False, False, False, True, True]
    for _, message in ticks.healths[1:4]:
        assert message.startswith("the last pass (ended ")
        assert "exit 2) exported nothing: New Relic rejected the API key (HTTP 401)" in message
        assert "last good pass: never" in message
        assert "\n" not in message
    assert ticks.healths[4][1].startswith("ok: last completed run ")
    assert re.search(r"\(exit 0: 1 targets? ok, 0 failed\)", ticks.healths[4][1])
    # the key file is read at every pass: three refusals, then the rotated key works
    outcomes = [r.outcome for r in fake_nr.requests]
    assert outcomes[:3] == ["bad_api_key"] * 3
    assert outcomes[3:] and set(outcomes[3:]) == {"ok"}
    causes = [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.ERROR and "rejected the API key" in r.getMessage()
    ]
    assert len(causes) == 3, "one line with the cause at every refused tick"
    assert all(c.startswith("run finished with exit code 2 in ") for c in causes)
    assert influxd.query("SELECT count(requests) FROM nr_requests", db=influx_db)
    self_metrics = influxd.query(
        'SELECT failed FROM nr_archiver WHERE "query" = \'requests\' GROUP BY "status"',
        db=influx_db,
    )
    assert {row["status"] for row in self_metrics} == {"failed", "ok"}
    record = json.loads(heartbeat.read_text())
    assert record["last_pass"]["exit_code"] == 0
    assert REVOKED_KEY not in caplog.text + heartbeat.read_text()


@pytest.mark.parametrize(
    ("broken", "expected"),
    [
        pytest.param(
            {
                "queries/broken.yaml": "nrql: SELECT count(*) FROM Transaction\n"
                "measurement: nr_count\ndatabase: newrelic\nintervall: 1h\n"
            },
            "exit 1) exported nothing: ",
            id="only-query-file-broken",
        ),
        pytest.param(
            {"NEW_RELIC_API_KEY_FILE": "/run/secrets/unmounted"},
            "exit 2) exported nothing: NEW_RELIC_API_KEY_FILE: cannot read /run/secrets/unmounted",
            id="secret-file-gone",
        ),
        pytest.param(
            {"ARCHIVER_DB_URL": "sqlite:////nonexistent/folder/state.db"},
            "exit 2) exported nothing: ",
            id="unusable-state-database",
        ),
    ],
)
def test_health_fails_while_every_pass_fails(
    env, heartbeat, influx_db, queries_dir, broken, expected
):
    if "queries/broken.yaml" not in broken:
        spec("requests", influx_db).write(queries_dir)
    for name, value in broken.items():
        if name.startswith("queries/"):
            (queries_dir / Path(name).name).write_text(value)
        else:
            env[name] = value
    ticks = Ticks(env, heartbeat, passes=3)

    ticks.run()

    assert [ok for ok, _ in ticks.healths] == [True, False, False, False]
    message = ticks.healths[-1][1]
    assert expected in message
    if "queries/broken.yaml" in broken:
        assert "broken.yaml: key 'intervall'" in message


def test_a_pass_where_some_targets_fail_keeps_health_ok_and_shows_the_failure(
    env, heartbeat, fake_nr, influxd, influx_db, queries_dir, state_path
):
    spec("requests", influx_db).write(queries_dir)
    spec("rejected", influx_db, "SELECT count(*) FROM Transaction WHERE oops").write(queries_dir)
    fake_nr.reject_nrql("WHERE oops", "NRQL Syntax Error: unexpected 'oops'")
    ticks = Ticks(env, heartbeat, passes=2)

    ticks.run()

    assert [ok for ok, _ in ticks.healths] == [True, True, True]
    message = ticks.healths[-1][1]
    assert re.search(r"\(exit 1: 1 targets? ok, 1 failed; first failure: rejected → ", message)
    assert "NRQL Syntax Error: unexpected 'oops'" in message
    state = State.open(f"sqlite:///{state_path}")
    status = {row.query: row for row in collect(state, [], datetime.now(UTC))}
    assert status["requests"].last_status == "ok"
    assert status["rejected"].last_status == "failed"
    assert "NRQL Syntax Error" in status["rejected"].last_error
    self_metrics = influxd.query(
        'SELECT last(failed) FROM nr_archiver GROUP BY "query", "status"', db=influx_db
    )
    by_query = {(row["query"], row["status"]): row["last"] for row in self_metrics}
    assert by_query == {("requests", "ok"): 0, ("rejected", "failed"): 1}


def test_an_empty_queries_folder_is_nothing_to_do_said_at_every_tick(
    env, heartbeat, queries_dir, fake_nr, caplog
):
    caplog.set_level(logging.INFO)
    ticks = Ticks(env, heartbeat, passes=3)

    ticks.run()

    assert [ok for ok, _ in ticks.healths] == [True, True, True, True]
    assert ticks.healths[-1][1].startswith(
        f"ok, but nothing to do: queries folder '{queries_dir}' has no *.yaml files; "
        "add query files to it; last completed run "
    )
    said = [m for m in caplog.messages if "nothing to do" in m]
    assert len(said) == 3
    assert all(m.startswith("run finished with exit code 2 in ") for m in said)
    assert fake_nr.requests == []


def test_a_scheduled_pass_logs_one_run_finished_line(
    env, heartbeat, influx_db, queries_dir, caplog
):
    spec("requests", influx_db).write(queries_dir)
    caplog.set_level(logging.INFO)

    Ticks(env, heartbeat, passes=2).run()

    finished = [m for m in caplog.messages if m.startswith("run finished")]
    assert len(finished) == 2, finished
    assert re.fullmatch(
        r"run finished with exit code 0 in \d+\.\d s: 1 targets? ok, 0 failed, "
        r"0 query file problems?, [1-9]\d* points? written",
        finished[0],
    )


def test_health_reads_a_heartbeat_of_the_previous_release(heartbeat):
    heartbeat.write_text(
        json.dumps(
            {
                "schedule": HOURLY,
                "updated": "2026-11-25T04:30:00Z",
                "last_completed": "2026-11-25T04:00:03Z",
                "next_run": "2026-11-25T05:00:00Z",
            }
        )
    )
    clock = FakeClock(START)

    assert health.check_health(heartbeat, clock()) == (
        True,
        "ok: last completed run 2026-11-25T04:00:03Z, next run at 2026-11-25T05:00:00Z",
    )


@pytest.mark.parametrize(
    ("argv", "run_at_start"),
    [
        pytest.param([], True, id="default"),
        pytest.param(["--run-at-start"], True, id="explicit"),
        pytest.param(["--no-run-at-start"], False, id="no"),
    ],
)
def test_schedule_runs_a_pass_at_start_by_default(monkeypatch, argv, run_at_start):
    seen: dict = {}
    monkeypatch.setattr(cron, "install_signal_handlers", lambda stop: None)
    monkeypatch.setattr(cron, "run_forever", lambda cron, job, **kw: seen.update(kw) or 0)

    assert cli.main(["schedule", *argv]) == 0

    assert seen["run_at_start"] is run_at_start


@pytest.mark.parametrize(
    ("outcome", "healthy"),
    [
        pytest.param(health.PassOutcome(0, targets_ok=3), True, id="all-ok"),
        pytest.param(health.PassOutcome(0, targets_ok=0), True, id="all-busy"),
        pytest.param(health.PassOutcome(1, 2, 1, reason="q → t: boom"), True, id="partial"),
        pytest.param(health.PassOutcome(1, 0, 3, reason="q → t: boom"), False, id="all-failed"),
        pytest.param(
            health.PassOutcome(1, 0, 0, 1, reason="q.yaml: bad"), False, id="only-file-broken"
        ),
        pytest.param(
            health.PassOutcome.failure(1, "InfluxDB is unreachable, nothing was exported: …"),
            False,
            id="influxdb-unreachable",
        ),
        pytest.param(health.PassOutcome.failure(2, "refused key"), False, id="exit-2"),
        pytest.param(health.PassOutcome(1), True, id="exit-code-only"),
        pytest.param(health.PassOutcome(130, targets_ok=1), True, id="interrupted"),
        pytest.param(
            health.PassOutcome(2, reason="empty folder", nothing_to_do=True),
            True,
            id="nothing-to-do",
        ),
    ],
)
def test_health_fails_only_when_the_last_pass_failed_as_a_whole(heartbeat, outcome, healthy):
    clock = FakeClock(START)
    history = health.History().after(clock(), outcome)
    health.Heartbeat(heartbeat, HOURLY).write(history, next_run=clock(), now=clock())

    ok, message = health.check_health(heartbeat, clock())

    assert ok is healthy, message
    if outcome.reason:
        assert outcome.reason in message


def test_the_pass_summary_counts_in_words():
    one = health.PassOutcome(0, targets_ok=1, targets_failed=0, query_file_problems=1, points=1)
    assert one.summary == "1 target ok, 0 failed, 1 query file problem, 1 point written"
    many = health.PassOutcome(1, targets_ok=2, targets_failed=1, query_file_problems=0, points=0)
    assert many.summary == "2 targets ok, 1 failed, 0 query file problems, 0 points written"
