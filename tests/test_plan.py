"""Planning is pure: a job's range and windows from `now` and the state's facts, nothing asked."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from archiver.pipeline.plan import Backfill, Facts, WindowSizer, plan, windows_of
from archiver.queries import QueryDef
from archiver.queries.load import load_file
from archiver.sinks.base import RetentionPolicy
from archiver.windows import Window
from tests.faults import small_spec

NOW = datetime(2026, 11, 20, 12, 0, 30, tzinfo=UTC)
H = timedelta(hours=1)
M = timedelta(minutes=1)


def at(hours: float) -> datetime:
    """`hours` after 2026-11-20T00:00Z."""
    return datetime(2026, 11, 20, tzinfo=UTC) + hours * H


@pytest.fixture(scope="module")
def query(tmp_path_factory) -> QueryDef:
    folder: Path = tmp_path_factory.mktemp("queries")
    spec = small_spec("logins", "db", at(6), minutes=1)
    spec = replace(spec, extra={**spec.extra, "lag": "30m"})
    loaded, problems = load_file(spec.write(folder), now=NOW)
    assert loaded is not None, problems
    return loaded


@pytest.mark.parametrize(
    ("backfill", "facts", "rp_days", "segments"),
    [
        pytest.param(None, Facts(), None, [(at(6), at(11.5))], id="no-checkpoint-starts-at-start"),
        pytest.param(None, Facts(checkpoint=at(10)), None, [(at(10), at(11.5))], id="checkpoint"),
        pytest.param(None, Facts(checkpoint=at(11.5)), None, [], id="up-to-date"),
        pytest.param(None, Facts(), 0.125, [(at(9) + M, at(11.5))], id="rp-keeps-3h-of-them"),
        pytest.param(
            Backfill(at(1), at(3)), Facts(checkpoint=at(11)), None, [(at(1), at(3))],
            id="backfill-ignores-the-checkpoint",
        ),
        pytest.param(
            Backfill(at(1), at(3)), Facts(backfilled=[(at(1), at(2))]), None, [(at(2), at(3))],
            id="backfill-resumes-after-its-done-part",
        ),
        pytest.param(
            Backfill(at(1)), Facts(), None, [(at(1), at(11.5))], id="backfill-until-now-minus-lag"
        ),
    ],
)  # fmt: skip
def test_a_job_is_planned_from_now_and_the_facts(query, backfill, facts, rp_days, segments):
    rp = RetentionPolicy("autogen", int(rp_days * 86400), True) if rp_days else None
    job = plan(query, query.targets[0], 42, backfill, rp, now=NOW, facts=facts)
    assert job.segments == segments
    assert bool(job.skipped) == (rp is not None)  # the older part is skipped, with a warning
    assert job.name == "logins" and job.account_id == 42
    assert (job.range is not None) == (backfill is not None)


def test_windows_follow_what_the_sizer_learned(query):
    job = plan(query, query.targets[0], 42, None, None, now=NOW, facts=Facts())
    sizer = WindowSizer(timedelta(minutes=1))
    sizes = []
    for window in windows_of(job, sizer):
        sizes.append(window.buckets(sizer.interval))
        sizer.learn(window, 3 * sizes[-1])  # 3 series
    # a first guess for FACET (LIMIT MAX: 20,000 rows in 4 buckets), then up to the end (330)
    assert sizes == [4, 326]
    sizer.shrink(Window(at(6), at(6) + 100 * timedelta(minutes=1)))
    assert sizer.buckets(has_facets=True) == 50
