from __future__ import annotations

import threading

import pytest

from archiver.newrelic.limiter import Limiter
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
