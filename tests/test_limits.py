"""New Relic's limits kept by a whole job: the fake NerdGraph server refuses a text repeated
over 120 times a minute as New Relic does, and the archiver never gets that refusal.

The fake server, the limiter and the client's retries share one fake clock: the limiter's waits
move it, so a minute of waiting takes no real time.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from archiver.newrelic.limiter import WINDOW_SECONDS, Limiter
from archiver.newrelic.nerdgraph import NerdGraphClient
from archiver.pipeline.run import Runner
from archiver.queries.load import load_file
from archiver.sinks.influx_v1 import InfluxV1Sink
from archiver.state.store import State
from archiver.windows import floor
from fakes.nerdgraph import FakeNerdGraph
from tests.clocks import FakeClock
from tests.e2e import ACCOUNT, actual_points, expected_points
from tests.faults import LAG_SECONDS, small_spec

NOW = floor(datetime.now(UTC), timedelta(minutes=5))
START = NOW - timedelta(hours=1)  # one window of 12 five-minute buckets per account
NEW_RELIC_SAME_TEXT_PER_MINUTE = 120
ACCOUNTS = [ACCOUNT, *range(5000001, 5000130)]  # 130 accounts asking the same text


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(time.time())


@pytest.fixture
def strict_nr(clock: FakeClock) -> Iterator[FakeNerdGraph]:
    fake = FakeNerdGraph(accounts=set(ACCOUNTS), now=clock)
    fake.limit_same_text(NEW_RELIC_SAME_TEXT_PER_MINUTE)
    with fake.start():
        yield fake


def test_a_file_for_130_accounts_never_sends_one_text_over_120_times_a_minute(
    strict_nr: FakeNerdGraph, clock: FakeClock, influxd, influx_db: str, tmp_path: Path
) -> None:
    spec = small_spec("logins", influx_db, START)
    spec = replace(spec, extra={**spec.extra, "account_ids": ACCOUNTS})
    query, problems = load_file(spec.write(tmp_path), now=NOW)
    assert query is not None, problems
    limiter = Limiter(clock=clock, sleep=clock.sleep)
    runner = Runner(
        state=State.scratch(),
        sink=InfluxV1Sink(influxd.url),
        # One attempt: a 429 from the same-text rule would fail the account's job.
        client_factory=lambda: NerdGraphClient(
            strict_nr.url,
            strict_nr.api_key,
            limiter=limiter,
            max_attempts=1,
            sleep=clock.sleep,
            clock=clock,
        ),
        default_account=ACCOUNT,
        workers=1,
        now=lambda: NOW,
        self_metrics=False,
    )
    started = clock.now

    report = runner.run([query])

    requests = strict_nr.requests
    assert {r.outcome for r in requests} == {"ok"}, "New Relic's same-text rule was tripped"
    assert len(requests) == len(ACCOUNTS) and len({r.nrql for r in requests}) == 1
    assert clock.now - started >= WINDOW_SECONDS, "the 101st ask waited for its minute"
    assert report.exit_code == 0, [(j.query, j.error) for j in report.jobs if j.failed]
    until = floor(NOW - timedelta(seconds=LAG_SECONDS), timedelta(minutes=5))  # complete ones
    expected: dict = {}
    for account in ACCOUNTS:
        expected |= expected_points(replace(spec, tags={"account_id": str(account)}), START, until)
    assert actual_points(influxd, spec) == expected
