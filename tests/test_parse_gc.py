"""Parsing an answer: its rows are exempt from garbage collection, within a bound.

A 20,000-row answer with multi-facet rows is 40,000 containers; scanned by every collection
while the window is in flight, they cost about a fifth of the archiver's CPU (bench/README.md).
"""

from __future__ import annotations

import gc
import weakref

import orjson
import pytest
import requests

from archiver.newrelic import transport


def response(payload: object) -> requests.Response:
    answer = requests.Response()
    answer.status_code = 200
    answer._content = orjson.dumps(payload)
    return answer


ROWS = [{"count": i, "facet": [f"app {i}", "host"]} for i in range(2000)]


@pytest.fixture(autouse=True)
def thawed():
    yield
    gc.unfreeze()
    gc.enable()


def test_parsed_rows_are_frozen_and_collection_stays_on():
    gc.unfreeze()
    body = transport.json_body(response({"results": ROWS}))
    assert body == {"results": ROWS}
    assert gc.isenabled()
    assert gc.get_freeze_count() >= len(ROWS)  # the rows' dicts and lists are never scanned


def test_collection_left_off_by_the_caller_stays_off():
    gc.disable()
    transport.json_body(response({"results": ROWS}))
    assert not gc.isenabled()


def test_frozen_rows_are_freed_when_dropped():
    gc.unfreeze()
    body = transport.json_body(response({"results": ROWS}))
    frozen = gc.get_freeze_count()
    del body
    assert gc.get_freeze_count() <= frozen - 2 * len(ROWS)


class Cycle:
    def __init__(self) -> None:
        self.me = self


def test_garbage_frozen_with_the_rows_is_collected_past_the_bound(monkeypatch):
    gc.unfreeze()
    garbage = Cycle()
    gone = weakref.ref(garbage)
    del garbage
    transport.json_body(response({"results": ROWS}))  # freezes the cycle with the rows
    gc.collect()
    assert gone() is not None  # frozen: a collection does not see it
    monkeypatch.setattr(transport, "ANSWERS_PER_FULL_COLLECTION", 1)
    transport.json_body(response({"results": []}))
    assert gone() is None
