"""The fake's data: deterministic numbers for any (event type, facet, bucket, aggregate).

Nothing is stored. Every number is a stable hash (blake2b for names, splitmix64 for numbers) of
what identifies it, so the same request always gets the same answer, whatever came before.
The model is described in `fakes.nerdgraph`'s docstring.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache

from fakes.nrql import Aggregate, NrqlError, Query, parse

DEFAULT_FACET_LIMIT = 10
MAX_FACET_LIMIT = 5000
MAX_BUCKETS = 366
DEFAULT_SINCE_SECONDS = 3600
NRDB_400 = "External Service 'NRDB' execution resulted in 400 - cause: "
START_AFTER_END = NRDB_400 + "Your query's start time must be before its end time."
STEP_TOO_LARGE = NRDB_400 + "TIMESERIES step size is larger than the current time window."
TOO_MANY_BUCKETS = f"TIMESERIES supports a maximum of {MAX_BUCKETS} buckets"

FacetValues = tuple[str | None, ...]
Number = int | float


def _transaction(app: str, host: str | None, name: str) -> dict[str, str]:
    entity = {"appName": app, "name": name, "transactionType": name.partition("Transaction")[0]}
    return entity if host is None else {**entity, "host": host}


_ENTITIES: dict[str, tuple[dict[str, str], ...]] = {
    "Transaction": (
        _transaction("Call Center API", "web-01", "WebTransaction/Go/calls"),
        _transaction("Call Center API", "web-02", "WebTransaction/Go/calls"),
        _transaction("billing,eu", "eu-1", "OtherTransaction/Job/invoice"),
        _transaction("a=b", "web-01", "WebTransaction/Uri/a=b"),
        _transaction('say "hi"', "web-02", ""),
        _transaction("C:\\tmp\\", "win-01", "WebTransaction/ASP/tmp"),
        _transaction("Zürich ☃ 東京", "zrh-01", "WebTransaction/Go/東京"),
        _transaction("checkout", "web-03", "WebTransaction/Checkout/pay"),
        _transaction("checkout", None, "OtherTransaction/Job/settle"),  # host is null
    ),
    "TransactionError": (
        {"appName": "Call Center API", "host": "web-01", "error.class": "TimeoutError"},
        {"appName": "checkout", "host": "web-03", "error.class": "ValueError"},
        {"appName": "billing,eu", "error.class": ""},
    ),
    "PageView": (
        {"appName": "storefront", "countryCode": "DE", "city": "Zürich", "deviceType": "Desktop"},
        {"appName": "storefront", "countryCode": "JP", "city": "東京", "deviceType": "Mobile"},
        {"appName": "storefront", "countryCode": "US", "city": "", "deviceType": "Mobile"},
    ),
    "Login": (
        {"provider": "Okta", "success": "true"},
        {"provider": "Okta", "success": "false"},
        {"provider": "Google Workspace", "success": "true"},
        {"provider": "saml=corp, inc", "success": "true"},
        {"provider": "saml=corp, inc", "success": "false"},
    ),
    "ReplicationLag": (
        {"cluster": "pg-main", "replica": "pg-main-r1"},
        {"cluster": "pg-main", "replica": "pg-main-r2"},
        {"cluster": "pg-eu", "replica": "pg-eu-r1"},
    ),
}
GENERIC_VALUES = ("value 1", "value 2", "value 3")
BENCH = re.compile(r"Bench(\d*)")
BENCH_DEFAULT_FACETS = 100
# `BenchEscaped<N>`: N facet values (100 by default) that need escaping in line protocol
BENCH_ESCAPED = re.compile(r"BenchEscaped(\d*)")

_MASK = (1 << 64) - 1
_UNIT = 1.0 / (1 << 53)


@dataclass(frozen=True)
class Answer:
    results: list[dict[str, object]]
    metadata: dict[str, object]
    # FACET only: the facets beyond LIMIT together, and every facet together; per bucket
    # with TIMESERIES (a list), else one object. Their count (and every counting aggregate
    # of a bucket) is the sum over those facets; the other aggregates are those of a series
    # of their own.
    other: list[dict[str, object]] | dict[str, object] | None = None
    total: list[dict[str, object]] | dict[str, object] | None = None


@dataclass(frozen=True)
class Window:
    since_ms: int
    until_ms: int
    step_seconds: int | None

    def buckets(self) -> list[tuple[int, int]]:
        """[begin_ms, end_ms) pairs; TIMESERIES buckets end at UNTIL, the first one is full."""
        if self.step_seconds is None:
            return [(self.since_ms, self.until_ms)]
        step_ms = self.step_seconds * 1000
        count = math.ceil((self.until_ms - self.since_ms) / step_ms)
        first = self.until_ms - count * step_ms
        return [(first + i * step_ms, first + (i + 1) * step_ms) for i in range(count)]


# -- facets -------------------------------------------------------------------------------------


def facet_values(event_type: str, attributes: Sequence[str]) -> list[FacetValues]:
    """Every facet tuple the event type has for these FACET attributes, before ordering/LIMIT.

    An attribute an entity lacks gives None (a null facet); no attributes give [()].
    """
    return list(_facet_values(event_type, tuple(attributes)))


@lru_cache(maxsize=1024)
def _facet_values(event_type: str, attributes: tuple[str, ...]) -> tuple[FacetValues, ...]:
    if not attributes:
        return ((),)
    if bench := BENCH.fullmatch(event_type):
        count = int(bench.group(1) or BENCH_DEFAULT_FACETS)
        return tuple((f"facet-{i:03d}",) * len(attributes) for i in range(count))
    if escaped := BENCH_ESCAPED.fullmatch(event_type):
        count = int(escaped.group(1) or BENCH_DEFAULT_FACETS)
        return tuple(
            tuple(f'{a} {i:03d}, a="b" Zürich ☃' for a in attributes) for i in range(count)
        )
    entities = _ENTITIES.get(event_type)
    if entities is None:
        return tuple((value,) * len(attributes) for value in GENERIC_VALUES)
    return tuple(dict.fromkeys(tuple(entity.get(a) for a in attributes) for entity in entities))


def entities(event_type: str) -> tuple[dict[str, str], ...]:
    """The attribute sets the type's events are drawn from (raw events, `fakes.events`)."""
    generic = tuple({"name": value} for value in GENERIC_VALUES)
    return _ENTITIES.get(event_type, generic)


# -- numbers ------------------------------------------------------------------------------------


def mix(x: int) -> int:
    """splitmix64's finaliser: a cheap, well-spread, stable 64-bit hash of an integer."""
    x = (x + 0x9E3779B97F4A7C15) & _MASK
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK
    return x ^ (x >> 31)


@lru_cache(maxsize=65536)
def name_seed(*parts: object) -> int:
    text = "\x1f".join("\x00" if part is None else str(part) for part in parts)
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


def _whole_if_integral(x: float) -> Number:
    return int(x) if float(x).is_integer() else x


def _epoch_seconds(ms: int) -> Number:
    return ms // 1000 if ms % 1000 == 0 else ms / 1000


class _Bucket:
    """What every aggregate of one (series, bucket) derives from."""

    __slots__ = ("count", "integral", "seconds", "seed", "stats")

    def __init__(self, seed: int, seconds: int, count: int) -> None:
        self.seed = seed
        self.seconds = seconds
        self.count = count
        self.integral = (seed >> 20) % 4 == 0  # about one bucket in 4 has integral numbers
        self.stats: dict[str | None, _Stats] = {}


def _bucket_salt(begin_seconds: int, seconds: int) -> int:
    return mix((begin_seconds << 24) ^ seconds)


def _bucket(series_seed: int, bucket_salt: int, seconds: int, has_data: bool = True) -> _Bucket:
    seed = mix(series_seed ^ bucket_salt)
    if not has_data or seed % 10 == 0:  # about one bucket in 10 saw no event
        return _Bucket(seed, seconds, 0)
    per_minute = 1 + series_seed % 40
    spread = 0.5 + ((seed >> 8) % 1000) / 1000
    return _Bucket(seed, seconds, max(1, round(per_minute * seconds / 60 * spread)))


_Stats = tuple[Number, Number, Number, Number]  # min, average, max, latest
_STAT_INDEX = {"min": 0, "average": 1, "max": 2, "latest": 3}
_COUNTING = {"count", "sum", "uniqueCount"}
_FILTER_SALT = name_seed("filter")
Evaluator = Callable[[_Bucket], object]


@lru_cache(maxsize=4096)
def _attribute_constants(attribute: str | None) -> tuple[int, float]:
    """(hash salt, typical size) of a numeric attribute."""
    return name_seed("attribute", attribute), 0.05 + name_seed("scale", attribute) % 1000 / 100


def _stats(bucket: _Bucket, attribute: str | None) -> _Stats:
    """The attribute's min <= average < max, and latest in between, from one 64-bit hash."""
    stats = bucket.stats.get(attribute)
    if stats is not None:
        return stats
    salt, scale = _attribute_constants(attribute)
    bits = mix(bucket.seed ^ salt)
    average: Number = scale * (0.5 + (bits & 0xFFFF) / 0x10000)
    if bucket.integral:
        average = max(1, round(average))
    low = average * (0.05 + 0.9 * ((bits >> 16) & 0xFFFF) / 0x10000)
    high = average * (1.05 + 3 * ((bits >> 32) & 0xFFFF) / 0x10000)
    latest = low + (high - low) * (bits >> 48) / 0x10000
    if bucket.integral:
        stats = (math.floor(low), average, math.ceil(high), round(latest))
    else:
        stats = (low, average, high, latest)
    bucket.stats[attribute] = stats
    return stats


def _zero(aggregate: Aggregate) -> object:
    """What New Relic answers for a period it no longer holds."""
    if aggregate.steps:
        return {"steps": [0] * len(aggregate.steps)}
    if aggregate.function == "uniques":
        return []
    return dict.fromkeys(aggregate.percentiles, 0) if aggregate.percentiles else 0


def _empty(aggregate: Aggregate) -> object:
    """The value when no event matched: 0 for counting functions, null for the others."""
    if aggregate.steps:
        return {"steps": [0] * len(aggregate.steps)}
    if aggregate.function == "uniques":
        return []
    if aggregate.inner is not None and aggregate.function != "percentage":
        return _empty(aggregate.inner)
    if aggregate.function in _COUNTING:
        return 0
    return dict.fromkeys(aggregate.percentiles) if aggregate.percentiles else None


def _innermost(aggregate: Aggregate) -> Aggregate:
    return aggregate if aggregate.inner is None else _innermost(aggregate.inner)


def _as_sent(value: object) -> object:
    """New Relic answers a percentile without samples with 0, not null (a filter()'s too)."""
    if isinstance(value, dict):
        return {p: 0 if v is None else v for p, v in value.items()}
    return value


def _compile(aggregate: Aggregate) -> Evaluator:
    """The aggregate as a function of a bucket in which at least one event matched."""
    function, attribute = aggregate.function, aggregate.attribute
    if function == "count":
        return lambda bucket: bucket.count
    if function in _STAT_INDEX:
        index = _STAT_INDEX[function]
        return lambda bucket: _stats(bucket, attribute)[index]
    if function == "sum":
        return lambda bucket: _stats(bucket, attribute)[1] * bucket.count
    if function == "uniqueCount":
        salt = name_seed("uniqueCount", attribute)
        return lambda bucket: 1 + mix(bucket.seed ^ salt) % bucket.count
    if function in ("percentile", "median"):
        return _compile_percentile(aggregate)
    if function == "funnel":
        return _compile_funnel(aggregate)
    if function == "uniques":  # a list: it has no line-protocol form
        salt = name_seed("uniques", attribute)
        return lambda bucket: [
            f"{attribute} {1 + (mix(bucket.seed ^ salt) + i) % 9}"
            for i in range(min(bucket.count, 3))
        ]
    return _compile_wrapping(aggregate)


def _compile_funnel(aggregate: Aggregate) -> Evaluator:
    """`{"steps": [n1, n2, ...]}` as New Relic answers funnel(): each step keeps a share of
    the previous one's distinct attribute values, so the counts never grow."""
    salt = name_seed("funnel", aggregate.attribute)

    def funnel(bucket: _Bucket) -> dict[str, list[int]]:
        steps = [1 + mix(bucket.seed ^ salt) % bucket.count]
        for position in range(1, len(aggregate.steps)):
            steps.append(steps[-1] * (1 + mix(bucket.seed ^ salt ^ position) % 4) // 4)
        return {"steps": steps}

    return funnel


def _compile_percentile(aggregate: Aggregate) -> Evaluator:
    shares = [(p, float(p) / 100) for p in aggregate.percentiles]

    def percentile(bucket: _Bucket) -> dict[str, Number]:
        low, _, high, _ = _stats(bucket, aggregate.attribute)
        if bucket.integral:
            return {p: _whole_if_integral(low + (high - low) * share) for p, share in shares}
        return {p: low + (high - low) * share for p, share in shares}

    return percentile


def _compile_wrapping(aggregate: Aggregate) -> Evaluator:
    assert aggregate.inner is not None
    inner, inner_empty = _compile(aggregate.inner), _empty(aggregate.inner)

    def matched(bucket: _Bucket) -> int:
        """How many of the bucket's events the WHERE of percentage()/filter() matched."""
        return math.floor(bucket.count * (mix(bucket.seed ^ _FILTER_SALT) >> 11) * _UNIT)

    def rate(bucket: _Bucket) -> object:
        value = inner(bucket)
        if not isinstance(value, int | float):
            return value
        return _whole_if_integral(value * aggregate.per_seconds / bucket.seconds)

    def percentage(bucket: _Bucket) -> Number:
        return _whole_if_integral(100 * matched(bucket) / bucket.count)

    def filtered(bucket: _Bucket) -> object:
        count = matched(bucket)
        if count == 0:
            return inner_empty
        return inner(_Bucket(mix(bucket.seed ^ _FILTER_SALT), bucket.seconds, count))

    return {"rate": rate, "percentage": percentage, "filter": filtered}[aggregate.function]


def value(
    event_type: str,
    facet_values: FacetValues,
    bucket_start: int,
    function: str,
    attribute: str | None,
    percentile: str | None = None,
    *,
    bucket_seconds: int,
    per_seconds: int = 60,
    steps: int = 0,
) -> Number | None:
    """The stored value of one aggregate in one bucket (ignores retention and the future).

    For percentage/filter/rate, `attribute` is the inner aggregate's key ("count",
    "average.duration") and `per_seconds` is rate()'s unit. For funnel, `steps` is the number
    of steps and `percentile` the 0-based step whose count is wanted.
    """
    percentiles = () if percentile is None or steps else (percentile,)
    aggregate = Aggregate(function, attribute, "", percentiles, steps=("",) * steps)
    if function in ("percentage", "filter", "rate"):
        inner_function, _, inner_attribute = (attribute or "count").partition(".")
        inner = Aggregate(inner_function, inner_attribute or None, attribute or "count")
        aggregate = Aggregate(function, inner.attribute, "", inner=inner, per_seconds=per_seconds)
    series_seed = name_seed(event_type, *facet_values)
    bucket = _bucket(series_seed, _bucket_salt(bucket_start, bucket_seconds), bucket_seconds)
    result = _compile(aggregate)(bucket) if bucket.count else _empty(aggregate)
    if steps:
        return result["steps"][int(percentile or 0)]  # type: ignore[index]
    return result[percentile] if isinstance(result, dict) else result  # type: ignore[return-value]


# -- whole answers ------------------------------------------------------------------------------


def window(query: Query, now: float) -> Window:
    """The query's time range in epoch ms, checked the way NRDB checks it."""
    now_ms = int(now * 1000)
    until_ms = now_ms if query.until_ms is None else query.until_ms
    if query.until_ago_seconds is not None:
        until_ms = now_ms - query.until_ago_seconds * 1000
    since_ms = until_ms - DEFAULT_SINCE_SECONDS * 1000 if query.since_ms is None else query.since_ms
    if query.since_ago_seconds is not None:
        since_ms = now_ms - query.since_ago_seconds * 1000
    if since_ms >= until_ms:
        raise NrqlError(START_AFTER_END)
    if query.step_seconds is not None:
        if query.step_seconds * 1000 > until_ms - since_ms:
            raise NrqlError(STEP_TOO_LARGE)
        if math.ceil((until_ms - since_ms) / (query.step_seconds * 1000)) > MAX_BUCKETS:
            raise NrqlError(TOO_MANY_BUCKETS)
    return Window(since_ms, until_ms, query.step_seconds)


def answer(nrql: str, *, now: float, retention_seconds: float) -> Answer:
    """New Relic's `results` and `metadata` for the query at time `now` (epoch seconds)."""
    query = parse(nrql)
    span = window(query, now)
    if query.is_raw:
        from fakes.events import answer_events  # fakes.events builds on this module

        return answer_events(query, span, now=now, retention_seconds=retention_seconds)
    buckets = [_TimeBucket(begin, end, now, retention_seconds) for begin, end in span.buckets()]
    series, rest = _ranked_series(query, buckets)
    results = [row for facet, filled in series for row in _rows(query, facet, buckets, filled)]
    metadata = {
        "facets": list(query.facets) or None,
        "eventTypes": [query.event_type],
        "messages": [],
        "timeWindow": {"begin": buckets[0].begin_ms, "end": span.until_ms},
    }
    if not query.facets:
        return Answer(results, metadata)
    other = _merged_rows(query, "other", buckets, [filled for _, filled in rest])
    total = _merged_rows(query, "total", buckets, [filled for _, filled in series + rest])
    return Answer(results, metadata, other, total)


def _merged_rows(
    query: Query, name: str, buckets: list[_TimeBucket], series: list[list[_Bucket]]
) -> list[dict[str, object]] | dict[str, object]:
    """otherResult / totalResult: one series whose bucket counts add up those of `series`."""
    seed = name_seed(query.event_type, f"\x00{name}")
    merged = []
    for index, time_bucket in enumerate(buckets):
        count = sum(filled[index].count for filled in series)
        merged.append(_Bucket(mix(seed ^ time_bucket.salt), time_bucket.seconds, count))
    rows = _rows(query, (), buckets, merged)
    return rows if query.step_seconds is not None else rows[0]


class _TimeBucket:
    """One TIMESERIES bucket (or the whole range), shared by every facet."""

    __slots__ = ("begin_ms", "end_ms", "expired", "has_data", "salt", "seconds")

    def __init__(self, begin_ms: int, end_ms: int, now: float, retention_seconds: float) -> None:
        self.begin_ms, self.end_ms = begin_ms, end_ms
        self.seconds = max(1, (end_ms - begin_ms) // 1000)
        self.salt = _bucket_salt(begin_ms // 1000, self.seconds)
        self.expired = begin_ms < (now - retention_seconds) * 1000
        self.has_data = not self.expired and end_ms <= now * 1000  # the future is empty


_Series = list[tuple[FacetValues, list[_Bucket]]]


def _ranked_series(query: Query, buckets: list[_TimeBucket]) -> tuple[_Series, _Series]:
    """Facets by total count (descending) then value, cut to the query's LIMIT; and the rest."""
    series = []
    for facet in _facet_values(query.event_type, query.facets):
        seed = name_seed(query.event_type, *facet)
        series.append((facet, [_bucket(seed, b.salt, b.seconds, b.has_data) for b in buckets]))
    if not query.facets:
        return series, []
    series.sort(key=lambda item: (-sum(b.count for b in item[1]), _sort_key(item[0])))
    limit = DEFAULT_FACET_LIMIT if query.limit is None else min(query.limit, MAX_FACET_LIMIT)
    return series[:limit], series[limit:]


def _sort_key(facet: FacetValues) -> tuple[tuple[bool, str], ...]:
    return tuple((value is not None, value or "") for value in facet)


def _rows(
    query: Query, facet: FacetValues, buckets: list[_TimeBucket], filled: list[_Bucket]
) -> list[dict[str, object]]:
    evaluators = [(aggregate.key, _compile(aggregate)) for aggregate in query.aggregates]
    zero_row = {aggregate.key: _zero(aggregate) for aggregate in query.aggregates}
    empty_row = {aggregate.key: _empty(aggregate) for aggregate in query.aggregates}
    percentile_keys = [a.key for a in query.aggregates if _innermost(a).percentiles]
    labels: dict[str, object] = {}
    if facet:  # otherResult and totalResult rows have none
        labels["facet"] = facet[0] if len(facet) == 1 else list(facet)
        labels.update(zip(query.facets, facet, strict=True))
    timeseries = query.step_seconds is not None
    rows = []
    for time_bucket, bucket in zip(buckets, filled, strict=True):
        if time_bucket.expired:
            row = dict(zero_row)
        elif bucket.count == 0:
            row = dict(empty_row)
        else:
            row = {key: evaluate(bucket) for key, evaluate in evaluators}
        for key in percentile_keys:
            row[key] = _as_sent(row[key])
        if timeseries:
            row["beginTimeSeconds"] = _epoch_seconds(time_bucket.begin_ms)
            row["endTimeSeconds"] = _epoch_seconds(time_bucket.end_ms)
        row.update(labels)
        rows.append(row)
    return rows
