"""Talking to the fake NerdGraph server over real HTTP, for the fake's own tests."""

from __future__ import annotations

import requests

from fakes.nerdgraph import DEFAULT_API_KEY, FakeNerdGraph
from tests.e2e import ACCOUNT

KEY = DEFAULT_API_KEY
QUERY = (
    "query($accountId: Int!, $nrql: Nrql!) { actor { account(id: $accountId) {"
    " nrql(query: $nrql, timeout: 60) { results metadata { facets eventTypes messages"
    " timeWindow { begin end } } } } } }"
)
NOW = 1_795_003_200  # a whole hour, epoch seconds
UNTIL_MS = (NOW - 3600) * 1000
HOUR_MS = 3_600_000


def post(fake: FakeNerdGraph, nrql: str, *, account: int = ACCOUNT, key: str = KEY, **kw):
    body = {"query": kw.pop("query", QUERY), "variables": {"accountId": account, "nrql": nrql}}
    return requests.post(fake.url, json=body, headers={"API-Key": key}, timeout=10, **kw)


def nrql_result(fake: FakeNerdGraph, nrql: str) -> tuple[list[dict], dict]:
    response = post(fake, nrql)
    assert response.status_code == 200, response.text
    document = response.json()
    assert "errors" not in document, document
    result = document["data"]["actor"]["account"]["nrql"]
    return result["results"], result["metadata"]
