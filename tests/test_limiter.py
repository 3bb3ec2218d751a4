from __future__ import annotations

import json
import threading
from typing import Any

import pytest
import responses

from archiver.newrelic.limiter import WINDOW_SECONDS, Limiter, SlidingWindows
from archiver.newrelic.nerdgraph import NerdGraphClient
from tests.clocks import FakeClock

WAIT = 60.0  # upper bound for a thread handoff that should be immediate


def test_at_most_max_concurrent_requests_are_inside_at_once() -> None:
    limiter = Limiter(max_concurrent=2, per_minute=1000)
    inside = [threading.Event() for _ in range(3)]
    leave = [threading.Event() for _ in range(3)]

    def request(i: int) -> None:
        with limiter:
            inside[i].set()
            leave[i].wait(WAIT)

    threads = [threading.Thread(target=request, args=(i,)) for i in range(3)]
    for thread in threads[:2]:
        thread.start()
    assert inside[0].wait(WAIT) and inside[1].wait(WAIT)

    threads[2].start()
    # Both slots are held, so the third request must still be waiting at the door.
    assert not inside[2].wait(0.2)

    leave[0].set()
    assert inside[2].wait(WAIT), "a freed slot lets the waiting request in"
    for event in leave:
        event.set()
    for thread in threads:
        thread.join(WAIT)


def test_a_request_that_raises_gives_its_slot_back() -> None:
    limiter = Limiter(max_concurrent=1, per_minute=1000)
    with pytest.raises(RuntimeError), limiter:
        raise RuntimeError("request failed")

    entered = threading.Event()

    def next_request() -> None:
        with limiter:
            entered.set()

    thread = threading.Thread(target=next_request)
    thread.start()
    assert entered.wait(WAIT)
    thread.join(WAIT)


def test_per_minute_cap_waits_until_the_oldest_request_leaves_the_window() -> None:
    clock = FakeClock()
    limiter = Limiter(max_concurrent=5, per_minute=3, clock=clock, sleep=clock.sleep)

    for _ in range(3):
        with limiter:
            clock.now += 10.0
    assert clock.sleeps == []  # 3 starts at t=0, 10, 20: under the cap

    with limiter:  # at t=30, the 4th start must wait until the first (t=0) is 60 s old
        pass
    assert clock.sleeps == [30.0]
    assert clock.now == 1060.0

    with limiter:  # the 2nd start (t=10) is the oldest now: wait 10 s more
        pass
    assert clock.sleeps == [30.0, 10.0]


def test_per_minute_cap_does_not_wait_once_the_window_has_passed() -> None:
    clock = FakeClock()
    limiter = Limiter(max_concurrent=5, per_minute=2, clock=clock, sleep=clock.sleep)
    for _ in range(2):
        with limiter:
            pass
    clock.now += 60.0
    for _ in range(2):
        with limiter:
            pass
    assert clock.sleeps == []


@pytest.mark.parametrize(("max_concurrent", "per_minute"), [(0, 10), (5, 0)])
def test_caps_below_one_are_refused(max_concurrent: int, per_minute: int) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        Limiter(max_concurrent, per_minute)


def test_caps_below_one_are_refused_for_the_same_text_cap_too() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        Limiter(5, 10, same_text_per_minute=0)


def test_each_account_has_its_own_per_minute_budget() -> None:
    clock = FakeClock()
    limiter = Limiter(max_concurrent=5, per_minute=2, clock=clock, sleep=clock.sleep)
    for account in (1, 2, 1, 2):
        with limiter.request(account, f"SELECT count(*) FROM T{clock.now}"):
            clock.now += 1.0
    assert clock.sleeps == [], "two accounts, two requests each: both under their own cap"

    with limiter.request(1, "SELECT 3"):  # account 1's 3rd start waits for its first (t=1000)
        pass
    assert clock.sleeps == [56.0]
    with limiter.request(3, "SELECT 4"):  # a third account never waited for the others
        pass
    assert clock.sleeps == [56.0]


def test_one_text_waits_beyond_its_cap_while_other_texts_go_on() -> None:
    clock = FakeClock()
    limiter = Limiter(
        max_concurrent=5, per_minute=1000, same_text_per_minute=3, clock=clock, sleep=clock.sleep
    )
    for _ in range(3):
        with limiter.request(1, "SELECT count(*) FROM T SINCE 1 UNTIL 2"):
            clock.now += 5.0
    with limiter.request(1, "SELECT count(*) FROM T SINCE 2 UNTIL 3"):  # another window's text
        pass
    with limiter.request(2, "SELECT count(*) FROM T SINCE 2 UNTIL 3"):
        pass
    assert clock.sleeps == []

    # The 4th start of the first text (at t=1015) waits until its 1st (t=1000) is 60 s old,
    # whatever the account: New Relic counts the text, not the account.
    with limiter.request(2, "SELECT count(*) FROM T SINCE 1 UNTIL 2"):
        pass
    assert clock.sleeps == [45.0]


def test_a_request_waiting_for_its_minute_does_not_hold_a_concurrency_slot() -> None:
    clock = FakeClock()
    others_got_in: list[bool] = []

    def sleep(seconds: float) -> None:
        # Another thread's request for another text must find the only slot free meanwhile.
        def other() -> None:
            with limiter.request(1, "SELECT other"):
                others_got_in.append(True)

        thread = threading.Thread(target=other)
        thread.start()
        thread.join(WAIT)
        clock.sleep(seconds)

    limiter = Limiter(
        max_concurrent=1, per_minute=1000, same_text_per_minute=1, clock=clock, sleep=sleep
    )
    with limiter.request(1, "SELECT same"):
        pass
    with limiter.request(1, "SELECT same"):
        pass
    assert clock.sleeps == [60.0]
    assert others_got_in == [True]


def test_the_same_text_windows_forget_old_texts() -> None:
    clock = FakeClock()
    limiter = Limiter(clock=clock, sleep=clock.sleep)
    for window in range(500):
        with limiter.request(1, f"SELECT count(*) FROM T SINCE {window}"):
            clock.now += 1.0
    # Only the texts of the last 60 s are remembered, and only by a digest.
    assert len(limiter._per_text) == 60


# --- the caps around real clients: New Relic's same-text rule (120 a minute) ---------------

URL = "https://api.newrelic.com/graphql"
KEY = "NRAK-TEST0123456789ABCDEFGHIJKLM"
NRQL = "SELECT count(*) FROM Transaction FACET appName SINCE 1700000000 UNTIL 1700003600"
NEW_RELIC_SAME_TEXT_PER_MINUTE = 120


def most_in_a_minute(times: list[float]) -> int:
    """The most of `times` (sorted) that fall in any 60 s (a start exactly 60 s, to a float's
    rounding, before another is out of its minute)."""
    first, most = 0, 0
    for last, time in enumerate(times):
        while times[first] <= time - WINDOW_SECONDS + 1e-9:
            first += 1
        most = max(most, last - first + 1)
    return most


def test_one_window_asked_again_and_retried_never_repeats_its_text_120_times_a_minute(
    fake_time: FakeClock,
) -> None:
    """130 asks of one window (a verify, several targets or accounts), each retried once after
    a 503: 260 requests of one text, at most 100 of them in any minute."""
    sent: list[float] = []
    replies = iter([503, 200] * 130)

    def reply(request: Any) -> tuple[int, dict[str, str], str]:
        sent.append(fake_time.now)
        body = json.loads(request.body)
        assert body["variables"]["nrql"] == NRQL
        status = next(replies)
        results = {"results": [{"count": 1}], "metadata": {"facets": None, "messages": []}}
        answer = {"data": {"actor": {"account": {"nrql": results}}}}
        return status, {}, json.dumps(answer) if status == 200 else ""

    limiter = Limiter(clock=fake_time, sleep=fake_time.sleep)
    client = NerdGraphClient(
        URL, KEY, limiter=limiter, sleep=fake_time.sleep, clock=fake_time, backoff_base=0.01
    )
    with responses.RequestsMock() as mock:
        mock.add_callback(responses.POST, URL, callback=reply)
        for account in (1, 2) * 65:
            assert client.query(account, NRQL).results == [{"count": 1}]

    assert len(sent) == 260
    assert most_in_a_minute(sent) <= limiter.same_text_per_minute < NEW_RELIC_SAME_TEXT_PER_MINUTE
    assert sent[-1] - sent[0] >= 2 * WINDOW_SECONDS  # it waited rather than failed


def test_a_start_the_window_lets_go_of_is_never_still_counted():
    """Found by jittered retries (1 run in 75): `wait` said 0.0 for a start exactly a minute
    old to a float's rounding, while the window still counted it, so a 101st request of one
    text started within the minute. The floats are the ones of that run."""
    windows = SlidingWindows(1)
    windows.record("text", 1000.7554879215128)
    now = 1060.7554879215127  # the start + 60 s, as the retries' sleeps added up to it

    delay = windows.wait("text", now)

    assert delay > 0 or len(windows) == 0  # either it waits, or the start is gone
