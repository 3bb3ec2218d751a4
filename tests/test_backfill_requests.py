"""A backfill's progress belongs to the backfill asked for (issue 10, item 2).

In process: `archiver.cli.main` against the fake NerdGraph server and a real influxd; what
landed is read back with InfluxQL.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from archiver.cli import main
from archiver.state.store import State
from archiver.windows import iso
from tests.e2e import Spec, actual_points, ago, expected_points, floor
from tests.inprocess import env, tx  # noqa: F401 (env: the fixture below)

pytestmark = pytest.mark.usefixtures("env")


# A FACET query's first window before its facet count is known, at LIMIT MAX (5,000 facets):
# ROWS_PER_REQUEST (20,000) rows at most, 4 buckets of a minute.
FIRST_WINDOW = timedelta(minutes=4)


def ms(moment: datetime) -> str:
    return f"SINCE {int(moment.timestamp() * 1000)} "


def drop(influxd, spec: Spec) -> None:
    influxd.query(f'DROP MEASUREMENT "{spec.measurement}"', db=spec.database)
    assert actual_points(influxd, spec) == {}


def test_same_range_after_a_resumed_backfill_exports_the_whole_range_again(
    fake_nr, influxd, influx_db, queries_dir, state_path
):
    spec = tx(influx_db)
    spec.write(queries_dir)
    since = floor(ago(hours=30), 3600)
    until = since + timedelta(hours=6)
    args = ["run", "--since", iso(since), "--until", iso(until)]
    # The first window is 4 buckets (before the facet count is known, LIMIT MAX: 20,000 rows
    # at most): fail the next.
    first = since + FIRST_WINDOW
    fake_nr.reject_nrql(ms(first), "NRQL Syntax Error: stop here")
    assert main(args) == 1
    assert actual_points(influxd, spec) == expected_points(spec, since, first)

    fake_nr.allow_nrql(ms(first))
    fake_nr.reset_log()
    assert main(args) == 0  # resumes: the window already written is not asked again
    assert min(r.since_ms for r in fake_nr.requests) == first.timestamp() * 1000
    assert actual_points(influxd, spec) == expected_points(spec, since, until)

    drop(influxd, spec)
    assert main(args) == 0  # the same command again: a new backfill of the whole range
    assert actual_points(influxd, spec) == expected_points(spec, since, until)
    assert State.open(f"sqlite:///{state_path}").checkpoint("tx", f"{influx_db}.autogen") is None


def test_relative_since_resumed_then_asked_again_exports_everything(
    fake_nr, influxd, influx_db, queries_dir
):
    spec = tx(influx_db)
    spec.write(queries_dir)
    first = floor(ago(hours=6), 60)
    # The run's "now" may be a minute later than ours: fail the second window in either case.
    stops = [ms(first + FIRST_WINDOW + timedelta(minutes=m)) for m in (0, 1)]
    for stop in stops:
        fake_nr.reject_nrql(stop, "NRQL Syntax Error: stop here")
    assert main(["run", "--since", "6h"]) == 1
    for stop in stops:
        fake_nr.allow_nrql(stop)
    assert main(["run", "--since", "6h"]) == 0  # resumed and completed

    drop(influxd, spec)
    before = ago()
    assert main(["run", "--since", "6h"]) == 0  # asked again: the whole range, not a minute
    after = ago()

    def expected_at(now: datetime) -> dict:
        return expected_points(
            spec, floor(now - timedelta(hours=6), 60), floor(now - timedelta(minutes=5), 60)
        )

    assert actual_points(influxd, spec) in (expected_at(before), expected_at(after))
