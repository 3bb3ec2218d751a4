"""A 6th cron field is seconds, last; a seconds-first (Quartz) expression is refused."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from archiver.errors import ConfigError
from archiver.schedule.cron import parse_schedule

NOW = datetime(2026, 11, 29, 8, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("quartz", "meant"),
    [
        pytest.param("*/10 * * * * *", "* * * * * */10", id="every-10-seconds"),
        pytest.param("0 * * * * *", "* * * * * 0", id="every-minute"),
        pytest.param("0  0 * * *  *", "0 * * * * 0", id="hourly-odd-spacing"),
        pytest.param("30 15 2 * * *", "15 2 * * * 30", id="daily"),
    ],
)
def test_seconds_first_is_refused_with_the_documented_spelling(quartz, meant):
    with pytest.raises(ConfigError) as refused:
        parse_schedule(quartz, NOW)
    message = str(refused.value)
    assert "\n" not in message
    assert message.startswith(f"ARCHIVER_SCHEDULE {quartz!r} puts seconds first")
    assert message.endswith(f"write {meant!r}")
    assert parse_schedule(meant, NOW).expression == meant  # the suggestion is accepted


@pytest.mark.parametrize(
    ("cron", "first_ticks"),
    [
        pytest.param("* * * * * */10", ["08:00:10", "08:00:20"], id="seconds-last"),
        pytest.param("*/5 * * * * 0", ["08:05:00", "08:10:00"], id="minutes-and-second"),
        pytest.param("* * * * * *", ["08:00:01", "08:00:02"], id="every-second"),
        pytest.param("0 * * * *", ["09:00:00", "10:00:00"], id="five-fields"),
    ],
)
def test_the_documented_forms_keep_their_meaning(cron, first_ticks):
    schedule = parse_schedule(cron, NOW)
    first = schedule.next_after(NOW)
    second = schedule.next_after(first)
    assert [first.strftime("%H:%M:%S"), second.strftime("%H:%M:%S")] == first_ticks
