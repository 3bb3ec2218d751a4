"""read_ahead: same items in order, bounded lead, errors in place, producer stopped on close;
read_ahead_groups: what is ready goes together, and waits for more while the consumer holds;
Turns: a window goes on once it is taken, and closed turns drop the waiting."""

import threading
from contextlib import closing

import pytest

from archiver.pipeline.readahead import Dropped, Hold, Turns, read_ahead, read_ahead_groups

WAIT_SECONDS = 30  # a bound on waiting for the other thread, never reached when it works


def test_items_arrive_in_order_from_another_thread():
    threads = []

    def items():
        for number in range(5):
            threads.append(threading.current_thread())
            yield number

    assert list(read_ahead(items())) == [0, 1, 2, 3, 4]
    assert threading.current_thread() not in threads


def test_the_producer_is_never_more_than_depth_items_ahead():
    produced = []

    def items():
        for number in range(10):
            produced.append(number)
            yield number

    ahead = read_ahead(items(), depth=2)
    with closing(ahead):
        for number in ahead:
            # in our hands, at most 2 in the queue, at most 1 being produced
            assert len(produced) <= number + 1 + 2 + 1


def test_an_error_is_raised_after_the_items_before_it():
    def items():
        yield 1
        yield 2
        raise ValueError("window 3 failed")

    received = []
    with pytest.raises(ValueError, match="window 3 failed"):
        for item in read_ahead(items()):
            received.append(item)
    assert received == [1, 2]


def test_closing_stops_the_producer_and_closes_its_iterator():
    closed = threading.Event()
    produced = []

    def items():
        try:
            for number in range(1000):
                produced.append(number)
                yield number
        finally:
            closed.set()

    ahead = read_ahead(items(), depth=1, name="test-read-ahead")
    with closing(ahead):
        assert next(ahead) == 0
    assert closed.is_set()  # close() returns only once the producer is done
    assert len(produced) <= 4
    assert not any(t.name == "test-read-ahead" for t in threading.enumerate())


# -- read_ahead_groups: what is ready, written together --------------------------------------


def test_groups_hold_what_is_ready_up_to_the_limit():
    produced = threading.Condition()
    count = [0]

    def items():
        for item in ["xxxx", "aa", "bb", "c", "dddd", "ee"]:
            with produced:
                count[0] += 1
                produced.notify_all()
            yield item

    groups = read_ahead_groups(items(), limit=4, size=len)
    with closing(groups):
        assert next(groups) == ["xxxx"]
        with produced:  # "c" produced: "aa" and "bb" (4 characters) wait, "c" waits for room
            assert produced.wait_for(lambda: count[0] >= 4, WAIT_SECONDS)
        assert list(groups) == [["aa", "bb"], ["c"], ["dddd"], ["ee"]]


def test_an_item_bigger_than_the_limit_is_a_group_of_its_own():
    groups = list(read_ahead_groups(iter(["x" * 10, "y", "z"]), limit=4, size=len))
    assert groups[0] == ["x" * 10] and [i for g in groups for i in g] == ["x" * 10, "y", "z"]


def test_a_slow_item_is_not_waited_for_to_fill_a_group():
    second = threading.Event()

    def items():
        yield "a"
        assert second.wait(WAIT_SECONDS)
        yield "b"

    groups = read_ahead_groups(items(), limit=100, size=len)
    with closing(groups):
        assert next(groups) == ["a"]  # "b" is not produced until the test has "a"
        second.set()
        assert next(groups) == ["b"]


def test_a_group_is_yielded_before_the_error_that_follows_it():
    def items():
        yield "a"
        yield "b"
        raise ValueError("window 3 failed")

    received = []
    with pytest.raises(ValueError, match="window 3 failed"):
        for group in read_ahead_groups(items(), limit=10, size=len):
            received.extend(group)
    assert received == ["a", "b"]


def test_a_held_group_waits_for_the_items_that_come_meanwhile():
    writing = [False]
    consulted = threading.Event()  # the consumer asked `holding` with "b" ready

    def holding() -> bool:
        if writing[0]:
            consulted.set()
        return writing[0]

    hold = Hold(holding)
    a_taken, c_go, c_offered, more = (threading.Event() for _ in range(4))

    def items():
        yield "a"
        assert a_taken.wait(WAIT_SECONDS)
        yield "b"
        assert c_go.wait(WAIT_SECONDS)
        yield "c"
        c_offered.set()  # the producer asks for the next item: "c" is ready
        assert more.wait(WAIT_SECONDS)
        yield "d"

    def write_done() -> None:
        assert consulted.wait(WAIT_SECONDS)  # "b" is held, not yielded alone
        c_go.set()
        assert c_offered.wait(WAIT_SECONDS)
        writing[0] = False
        hold.wake()

    groups = read_ahead_groups(items(), limit=100, size=len, hold=hold)
    with closing(groups):
        assert next(groups) == ["a"]  # nothing held: it goes at once
        writing[0] = True  # "a" is being written: "b" and "c" wait for it, then go together
        helper = threading.Thread(target=write_done, daemon=True)
        helper.start()
        a_taken.set()
        assert next(groups) == ["b", "c"]
        helper.join()
        more.set()
        assert next(groups) == ["d"]


def test_a_held_group_goes_once_no_more_items_fit_or_none_follow():
    hold = Hold(lambda: True)  # always writing: only a full group, or the last, may go
    groups = list(read_ahead_groups(iter(["aa", "bb", "cc"]), limit=4, size=len, hold=hold))
    assert groups == [["aa", "bb"], ["cc"]]


def test_a_held_group_already_at_the_limit_goes_without_waiting_for_the_next_item():
    released = threading.Event()
    produced_after = []

    def items():
        yield "xxxx"  # the limit: the group can take nothing more, whatever comes next
        released.wait(WAIT_SECONDS)  # the next item is on its way while the consumer asks
        produced_after.append("y")
        yield "y"

    groups = read_ahead_groups(items(), limit=4, size=len, hold=Hold(lambda: True))
    with closing(groups):
        assert next(groups) == ["xxxx"]
        assert produced_after == []  # not held until the next item came
        released.set()
        assert next(groups) == ["y"]


def test_a_held_group_goes_before_the_error_that_follows_it():
    def items():
        yield "a"
        raise ValueError("window 2 failed")

    received = []
    with pytest.raises(ValueError, match="window 2 failed"):
        for group in read_ahead_groups(items(), limit=10, size=len, hold=Hold(lambda: True)):
            received.extend(group)
    assert received == ["a"]


def test_closing_the_groups_stops_the_producer():
    produced = []

    def items():
        for number in range(1000):
            produced.append(number)
            yield "x"

    groups = read_ahead_groups(items(), limit=3, size=len)
    with closing(groups):
        assert next(groups)
    assert len(produced) <= 3 + 3 + 1  # in our hands, waiting, being produced


def test_turns_let_a_window_go_on_once_it_is_taken():
    turns = Turns()
    first, second = turns.next(), turns.next()
    turns.take()
    first()  # taken: at once
    went: list[int] = []
    waiting = threading.Thread(target=lambda: (second(), went.append(2)))
    waiting.start()
    waiting.join(timeout=0.05)
    assert waiting.is_alive() and went == []  # its turn comes when it is taken
    turns.take()
    waiting.join(timeout=10)
    assert not waiting.is_alive() and went == [2]


def test_closed_turns_drop_the_windows_waiting_for_theirs():
    turns = Turns()
    late = turns.next()
    raised: list[BaseException] = []

    def wait() -> None:
        try:
            late()
        except Dropped as exc:
            raised.append(exc)

    waiting = threading.Thread(target=wait)
    waiting.start()
    waiting.join(timeout=0.05)
    assert waiting.is_alive()
    turns.close()
    waiting.join(timeout=10)
    assert not waiting.is_alive() and len(raised) == 1
    with pytest.raises(Dropped):
        turns.next()()
