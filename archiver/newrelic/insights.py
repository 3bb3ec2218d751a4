"""The legacy Insights query API, for accounts that only have a query key (NEW_RELIC_QUERY_KEY).

`InsightsClient` implements the same `client.NewRelicClient` interface as `NerdGraphClient`
(`query(account_id, nrql) -> NrqlResult`), with the same transport, limiter, retry policy and
error classes. It sends
`GET {base}/v1/accounts/{id}/query?nrql=<urlencoded>` with the `X-Query-Key` header, and
`to_nerdgraph_rows` turns the legacy answer into exactly the rows NerdGraph gives for the same
query, so `transform.to_lines` writes the same points whichever API was asked.

How a legacy answer becomes NerdGraph rows. Captures of real answers (New Relic's docs, the
fixtures of Grafana's New Relic data source) show the shapes; what no capture shows is marked
"assumed", and the code accepts the plausible variants:

- The aggregates in each `results` list are unnamed: entry i belongs to the i-th entry of the
  metadata's contents list. That list sits at `metadata.contents` (no FACET, no TIMESERIES),
  `metadata.timeSeries.contents`, `metadata.contents.contents` (FACET) or
  `metadata.contents.timeSeries.contents` (FACET + TIMESERIES); the shallowest `contents` list
  found under `metadata` is used.
- The Insights API spells functions in lower case (`"function": "uniquecount"`) where NerdGraph
  keys read `uniqueCount.<attribute>`: every NRQL aggregator function is mapped to NerdGraph's
  spelling (`NERDGRAPH_FUNCTION_NAMES`); a function not in that list is kept as sent.
- A content's NerdGraph key: `{"function": "alias", "alias": A, "contents": {...}}` gives `A`;
  `count` without an attribute (or with `*`) gives `count`; a wrapping function
  (`{"function": "filter", "contents": {...}}`) gives `filter.<key of the inner content>`, as
  the fake NerdGraph names it (assumed for real NerdGraph); anything else gives
  `function.attribute`. On a wrapping function `alias` holds the WHERE text and is ignored; on
  a plain content an `alias` key is taken as the alias (assumed; real answers use the wrapper).
- A result entry is a one-key object named after the innermost function (`{"count": 5}`,
  `{"average": null}`); its only value is the aggregate's value. Percentiles come as
  `{"percentiles": {"95": x}}` and become the nested `{"95": x}` object NerdGraph gives; a
  percentile key written as `95.0` is normalised to `95` (assumed never to happen, harmless).
- TIMESERIES: each `timeSeries` bucket becomes one row with its `beginTimeSeconds` and
  `endTimeSeconds`; `inspectedCount`, `total`, `totalResult`, `unknownGroup` and
  `performanceStats` are not data and are dropped.
- FACET: `metadata.facet` (or `facets`) names the attributes, a string for one, a list for
  several (assumed for several). Each `facets[i].name` (a string, or a list in FACET order)
  becomes `facet` plus one key per attribute, exactly as in NerdGraph rows; a facet group's
  `timeSeries` buckets are used when present, else its `results`.
- Raw events, `{"results": [{"events": [...]}]}`, give one row per event.
- `funnel()` entries are `{"steps": [n1, n2, ...]}` and stay that object, keyed
  `funnel.<attribute>` (or the alias); the transform names the steps from the NRQL.
- COMPARE WITH answers (`current`/`previous`) are refused: the archiver never sends one.
"""

from __future__ import annotations

import re
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

import requests

from archiver import logs
from archiver.errors import AuthError, NewRelicError, QueryTooBig, TransientError
from archiver.newrelic.client import (
    Digest,
    NewRelicClient,
    NrqlResult,
    Turn,
    digested,
    inspected_count,
    parsing,
    wait_turn,
)
from archiver.newrelic.limiter import Limiter
from archiver.newrelic.transport import (
    excerpt,
    json_body,
    limited,
    raise_for_status,
    retry_policy,
    with_retries,
)
from archiver.pipeline import completeness
from archiver.retry import retry_after_seconds
from archiver.settings import INSIGHTS_URLS

__all__ = ["INSIGHTS_URLS", "MAX_NRQL_BYTES", "InsightsClient", "to_nerdgraph_rows"]

MAX_NRQL_BYTES = 4000  # the API takes NRQL strictly under this size
MIN_READ_TIMEOUT_SECONDS = 5.0
BAD_KEY_HINT = "check NEW_RELIC_QUERY_KEY (an Insights query key of this account)"
# Error texts that New Relic sends for an overloaded service, not for a bad query.
TRANSIENT_ERROR = re.compile(r"timed out|heavy load|try again", re.IGNORECASE)
BUCKET_KEYS = ("beginTimeSeconds", "endTimeSeconds")
# NRQL's aggregator functions, spelled as NerdGraph keys spell them (New Relic's NRQL reference,
# "Aggregator functions"); the Insights API sends them in lower case.
NRQL_AGGREGATOR_FUNCTIONS = (
    "aggregationEndTime", "apdex", "average", "bucketPercentile", "cardinality",
    "cdfPercentage", "count", "derivative", "dimensions", "earliest", "filter", "funnel",
    "histogram", "keyset", "latest", "latestRate", "max", "median", "min",
    "percentage", "percentile", "predictLinear", "rate", "stddev", "stdvar", "sum",
    "uniqueCount", "uniques",
)  # fmt: skip
NERDGRAPH_FUNCTION_NAMES = {name.lower(): name for name in NRQL_AGGREGATOR_FUNCTIONS}
# The legacy answer has totalResult and unknownGroup (null facet values), but nothing for the
# facets beyond LIMIT: `other: true` needs NerdGraph.
OTHER_REFUSED = (
    "`other: true` needs NerdGraph's otherResult, which the Insights query API does not "
    "answer: set NEW_RELIC_API_KEY (a user key) or remove `other: true`"
)

Row = dict[str, Any]


class InsightsClient(NewRelicClient):
    """Runs NRQL through the Insights query API (a `client.NewRelicClient`); share one between
    threads so its limiter is shared. `timeout` bounds each HTTP request (connecting takes at
    most 10 s of it); the other arguments are NerdGraphClient's."""

    def __init__(
        self,
        url_base: str,
        query_key: str,
        *,
        timeout: float = 60.0,
        limiter: Limiter | None = None,
        max_attempts: int = 6,
        max_total_seconds: float = 300.0,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        session: requests.Session | None = None,
        backoff_base: float = 1.0,
    ) -> None:
        logs.register_secret(query_key)
        self._base = url_base.rstrip("/")
        headers = {"Accept": "application/json", "X-Query-Key": query_key}
        super().__init__(
            # No NRQL timeout travels with the request: the HTTP read timeout is `timeout` (≥ 5 s).
            limited(self._base, headers, timeout, MIN_READ_TIMEOUT_SECONDS, session, limiter),
            retry_policy(max_attempts, max_total_seconds, backoff_base, sleep, clock),
        )

    def query(
        self,
        account_id: int,
        nrql: str,
        *,
        other: bool = False,
        shrinkable: bool = False,
        digest: Digest | None = None,
        turn: Turn | None = None,
    ) -> NrqlResult:
        """Run one NRQL query, retrying transient failures; raise the last one if they persist.

        The arguments are `client.NewRelicClient.query`'s.
        """
        if other:  # `passes` refuses such query files before any request
            raise NewRelicError(OTHER_REFUSED)
        size = len(nrql.encode())
        if size >= MAX_NRQL_BYTES:
            raise NewRelicError(
                f"the NRQL is {size} bytes long, but the Insights query API takes less than "
                f"{MAX_NRQL_BYTES:,} bytes: shorten the query, or use NerdGraph (NEW_RELIC_API_KEY)"
            )
        url = f"{self._base}/v1/accounts/{account_id}/query"

        def attempt() -> NrqlResult:
            response = self._transport.request(
                "GET", url, account=account_id, nrql=nrql, params={"nrql": nrql}
            )
            _check_status(response, self.url)
            wait_turn(turn)  # unparsed: its JSON bytes are the least memory an answer takes
            size, held = len(response.content), [response]
            del response  # parsed, its JSON bytes need not wait for the digest

            def parse() -> NrqlResult:
                body = _body(held.pop())
                rows, facets = to_nerdgraph_rows(body)
                answer = NrqlResult(
                    results=rows,
                    facets=facets,
                    requests=0,
                    retries=0,
                    messages=completeness.messages(body.get("metadata")),
                    inspected=inspected_count(body),
                    size=size,
                )
                del body, rows  # the legacy answer goes before the digest runs
                return digested(answer, digest)

            return parsing(parse)

        answer, attempts = with_retries(
            self._retry, account_id, attempt, shrinkable=shrinkable, transport=self._transport
        )
        return replace(answer, requests=attempts, retries=attempts - 1)


def _check_status(response: requests.Response, url: str) -> None:
    """HTTP failures, classified (before the answer waits its turn to be parsed)."""
    status = response.status_code
    if status in (401, 403):
        raise AuthError(
            f"New Relic refused the query key (HTTP {status}): {_error_text(response)}: "
            f"{BAD_KEY_HINT}"
        )
    if status == 503:  # the Insights API's answer to a query over the inspected-data limit
        raise QueryTooBig(
            f"New Relic answered HTTP 503: {_error_text(response)}",
            retry_after=retry_after_seconds(response.headers.get("Retry-After")),
        )
    raise_for_status(response, _error_text, "NEW_RELIC_INSIGHTS_URL", url)


def _body(response: requests.Response) -> dict[str, Any]:
    """The JSON object of a successful answer; an `{"error": ...}` in it raised as its class."""
    body = json_body(response)
    if not isinstance(body, dict):
        raise NewRelicError(f"New Relic's answer is not a JSON object: {excerpt(response.text)!r}")
    if body.get("error"):
        message = _error_message(body["error"])
        raise TransientError(message) if TRANSIENT_ERROR.search(message) else NewRelicError(message)
    return body


def _error_text(response: requests.Response) -> str:
    """The answer's `{"error": ...}` text when it has one, else a short excerpt of the body."""
    try:
        error = response.json().get("error")
    except (ValueError, AttributeError):
        error = None
    if error:
        return _error_message(error)
    return repr(excerpt(response.text)) if response.text.strip() else "(empty body)"


def _error_message(error: object) -> str:
    if isinstance(error, dict):
        error = error.get("message") or error
    return logs.redact(str(error))


# -- legacy answer → NerdGraph rows -----------------------------------------------------------


def to_nerdgraph_rows(body: Mapping[str, Any]) -> tuple[list[Row], tuple[str, ...]]:
    """The rows and FACET attribute names NerdGraph gives for the query of this legacy answer.

    Raises NewRelicError when the answer cannot be read without guessing (see the module's
    docstring for the shapes read).
    """
    if "current" in body or "previous" in body:
        raise NewRelicError("New Relic sent a COMPARE WITH answer, which the archiver cannot store")
    metadata = body.get("metadata")
    metadata = metadata if isinstance(metadata, dict) else {}
    facets = _facet_names(metadata)
    contents = _find(metadata, "contents", lambda found: isinstance(found, list))
    if contents is None and not _is_events(body.get("results"), None):
        raise NewRelicError(
            "New Relic's Insights answer has no metadata.contents: cannot name its aggregates"
        )
    contents = contents or []
    groups = body.get("facets")
    if groups is None:
        return _series_rows(body, contents, {}), facets
    if not isinstance(groups, list) or not facets:
        raise NewRelicError(
            "New Relic's Insights answer has facets but no metadata.facet naming the attributes"
        )
    rows: list[Row] = []
    for group in groups:
        rows.extend(_series_rows(group, contents, _facet_labels(group.get("name"), facets)))
    return rows, facets


def _series_rows(series: Mapping[str, Any], contents: list[Any], labels: Row) -> list[Row]:
    """The rows of one series (the whole answer, or one facet): per bucket, or a single row."""
    buckets = series.get("timeSeries")
    if isinstance(buckets, list):
        rows = []
        for bucket in buckets:
            row = _aggregates(bucket.get("results"), contents)
            row.update((key, bucket[key]) for key in BUCKET_KEYS if key in bucket)
            row.update(labels)
            rows.append(row)
        return rows
    results = series.get("results")
    if _is_events(results, contents):
        return [dict(event) for event in results[0]["events"]]
    return [{**_aggregates(results, contents), **labels}]


def _is_events(results: Any, contents: list[Any] | None) -> bool:
    """A raw events answer: `{"results": [{"events": [...]}]}`."""
    if not (isinstance(results, list) and len(results) == 1 and isinstance(results[0], dict)):
        return False
    if not isinstance(results[0].get("events"), list):
        return False
    return not contents or (
        isinstance(contents[0], dict) and contents[0].get("function") == "events"
    )


def _aggregates(results: Any, contents: list[Any]) -> Row:
    if not isinstance(results, list) or len(results) != len(contents):
        count = len(results) if isinstance(results, list) else 0
        raise NewRelicError(
            f"New Relic's Insights answer has {count} results in a row, but its metadata "
            f"lists {len(contents)} aggregates"
        )
    return {
        _key(content): _value(result, content)
        for content, result in zip(contents, results, strict=True)
    }


def _key(content: Any) -> str:
    """The NerdGraph result key of one metadata content (see the module's docstring)."""
    if not isinstance(content, dict):
        raise NewRelicError(f"New Relic's Insights metadata has an unreadable content {content!r}")
    function = nerdgraph_function_name(str(content.get("function")))
    inner = content.get("contents")
    if function == "alias":
        return str(content.get("alias"))
    if isinstance(inner, dict):
        return f"{function}.{_key(inner)}"
    if content.get("alias"):
        return str(content["alias"])
    attribute = content.get("attribute")
    if function == "count" and attribute in (None, "*"):
        return "count"
    return f"{function}.{attribute}" if attribute is not None else function


def nerdgraph_function_name(function: str) -> str:
    """`uniquecount` → `uniqueCount`: NerdGraph's spelling of an Insights function name."""
    return NERDGRAPH_FUNCTION_NAMES.get(function.lower(), function)


def _value(result: Any, content: Mapping[str, Any]) -> Any:
    if not isinstance(result, dict) or not result:
        return None
    if isinstance(result.get("steps"), list):
        return {"steps": result["steps"]}  # funnel(): the transform names the steps
    if "percentiles" in result:
        return _percentiles(result["percentiles"])
    if len(result) == 1:
        [value] = result.values()
        return value
    function = _innermost_function(content)
    return result[function] if function in result else next(iter(result.values()))


def _percentiles(values: Any) -> Any:
    if not isinstance(values, dict):
        return values
    return {_percentile_key(key): value for key, value in values.items()}


def _percentile_key(key: str) -> str:
    """NerdGraph writes a percentile without a useless fraction: "95", "99.9"."""
    try:
        number = float(key)
    except ValueError:
        return key
    return str(int(number)) if number.is_integer() else key


def _innermost_function(content: Mapping[str, Any]) -> str:
    inner = content.get("contents")
    return _innermost_function(inner) if isinstance(inner, dict) else str(content.get("function"))


def _facet_names(metadata: Mapping[str, Any]) -> tuple[str, ...]:
    def is_names(found: Any) -> bool:
        return isinstance(found, str | list) and bool(found)

    names = _find(metadata, "facet", is_names) or _find(metadata, "facets", is_names)
    if names is None:
        return ()
    return (names,) if isinstance(names, str) else tuple(str(name) for name in names)


def _facet_labels(name: Any, facets: tuple[str, ...]) -> Row:
    """`facet` and the attribute keys of a NerdGraph row, from a legacy facet's `name`."""
    values = list(name) if isinstance(name, list) else [name]
    if len(values) != len(facets):
        raise NewRelicError(
            f"New Relic's Insights answer has facet {name!r} for the attributes {list(facets)}"
        )
    return {
        "facet": values[0] if len(values) == 1 else values,
        **dict(zip(facets, values, strict=True)),
    }


def _find(tree: Mapping[str, Any], key: str, accept: Callable[[Any], bool]) -> Any:
    """The shallowest value under `key` in nested objects (not lists) that `accept` takes."""
    pending: deque[Mapping[str, Any]] = deque([tree])
    while pending:
        node = pending.popleft()
        if key in node and accept(node[key]):
            return node[key]
        pending.extend(child for child in node.values() if isinstance(child, dict))
    return None
