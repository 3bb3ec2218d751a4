"""Sample counts: telling a percentile of an empty bucket from a real 0.

New Relic answers percentile() (and median()) of a bucket without samples with 0, not null.
To know which zeros are real, the NRQL sent also asks for the matching sample count, in the
same query, under the same WHERE/filter(): `percentile(duration, 95)` brings
`count(duration) AS '__nr_archiver_n_0'`, `filter(percentile(duration, 75), WHERE x)` brings
`filter(count(duration), WHERE x) AS '__nr_archiver_n_1'`. Where that count is 0 the
percentile fields are dropped (archiver/pipeline/completeness.py); the helper fields are never
written.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from archiver.queries.nrql import (
    ALIAS,
    CLAUSE_START,
    KEYWORD_FLAGS,
    QUOTES,
    SELECT,
    Texts,
    comma_separated,
    matching_parenthesis,
    scan,
)

SAMPLE_COUNT_PREFIX = "__nr_archiver_n_"
_PERCENTILE_FUNCTIONS = {"percentile": "percentile", "median": "median"}
_SINGLE_CALL = re.compile(r"\s*([A-Za-z_][A-Za-z0-9_]*)\s*\(x*\)\s*", KEYWORD_FLAGS)
_PERCENTILE_CALL = re.compile(r"\b(percentile|median)\s*\(", KEYWORD_FLAGS)
_FILTER_CALL = re.compile(r"\bfilter\s*\(", KEYWORD_FLAGS)
# An attribute name, bare or in backticks: count() of it is the percentile's sample count.
_ATTRIBUTE = re.compile(r"`[^`]+`|[A-Za-z_$][\w.:$-]*")


@dataclass(frozen=True)
class SampleGuard:
    """`helper` is the result key of a sample count; where it is 0, `guarded` keys are dropped."""

    helper: str
    guarded: tuple[str, ...]


@dataclass(frozen=True)
class SampleCounts:
    nrql: str  # the NRQL with the helper counts added to its SELECT list
    guards: tuple[SampleGuard, ...]


@dataclass(frozen=True)
class _Guarded:
    key: str  # the result key of the SELECT item
    count: str  # the NRQL of its sample count


@lru_cache(maxsize=1024)
def sample_counts(sendable: str) -> SampleCounts:
    """`sendable` with one sample count per distinct (attribute, filter) of its percentiles.

    A SELECT item is guarded when it is `percentile(a, ...)` or `median(a)`, a `filter()` of
    one of them, or any aliased expression whose percentiles all read one attribute outside
    any filter() (`percentile(duration, 95) * 1000 AS 'p95'`). Its result key is its alias,
    else `percentile.a` / `median.a` / `filter.<key of the inner item>` as New Relic names them.
    """
    try:
        texts, _ = scan(sendable)
    except ValueError:
        return SampleCounts(sendable, ())
    span = _select_span(texts)
    if span is None:
        return SampleCounts(sendable, ())
    start, stop = span
    helpers: dict[str, list[str]] = {}  # count NRQL -> guarded keys
    for item_start, item_end in comma_separated(texts.flat, start, stop):
        if (guarded := _guarded_item(texts, item_start, item_end)) is not None:
            keys = helpers.setdefault(guarded.count, [])
            if guarded.key not in keys:
                keys.append(guarded.key)
    if not helpers:
        return SampleCounts(sendable, ())
    guards = tuple(
        SampleGuard(f"{SAMPLE_COUNT_PREFIX}{index}", tuple(keys))
        for index, keys in enumerate(helpers.values())
    )
    added = ", ".join(
        f"{count} AS '{guard.helper}'" for count, guard in zip(helpers, guards, strict=True)
    )
    head, tail = sendable[:stop].rstrip(), sendable[stop:].lstrip()
    return SampleCounts(f"{head}, {added}" + (f" {tail}" if tail else ""), guards)


def _select_span(texts: Texts) -> tuple[int, int] | None:
    """Where the SELECT list is (depth 0: a nested query's SELECT is not looked at)."""
    match = SELECT.search(texts.flat)
    if match is None:
        return None
    end = CLAUSE_START.search(texts.flat, match.end())
    return match.end(), end.start() if end else len(texts.flat)


def _guarded_item(texts: Texts, start: int, end: int) -> _Guarded | None:
    aliases = list(ALIAS.finditer(texts.flat, start, end))
    alias = None
    if aliases:
        alias = " ".join(texts.code[aliases[-1].end() : end].split()).strip(QUOTES)
        end = aliases[-1].start()
    call = _single_call(texts, start, end)
    if call is not None:
        guarded = _guarded_call(*call)
        if guarded is not None:
            return _Guarded(alias or guarded.key, guarded.count)
    if alias is None:
        return None  # an unnamed expression: its result key cannot be told in advance
    return _guarded_expression(texts, start, end, alias)


def _single_call(texts: Texts, start: int, end: int) -> tuple[str, list[str]] | None:
    """(function, argument texts) when the text is exactly one call `f(...)`."""
    if not _SINGLE_CALL.fullmatch(texts.flat, start, end):
        return None
    opening = texts.flat.index("(", start, end)
    closing = texts.flat.rindex(")", start, end)
    name = texts.code[start:opening].strip().lower()
    return name, _arguments(texts.code[opening + 1 : closing])


def _arguments(code: str) -> list[str]:
    inner, _ = scan(code)
    return [code[a:b].strip() for a, b in comma_separated(inner.flat, 0, len(code))]


def _guarded_call(function: str, arguments: list[str]) -> _Guarded | None:
    if function in _PERCENTILE_FUNCTIONS and arguments and _ATTRIBUTE.fullmatch(arguments[0]):
        attribute = arguments[0]
        name = attribute.replace("`", "")
        return _Guarded(f"{_PERCENTILE_FUNCTIONS[function]}.{name}", f"count({attribute})")
    if function == "filter" and len(arguments) >= 2:
        condition = ", ".join(arguments[1:])
        inner_texts, _ = scan(arguments[0])
        inner_span = len(arguments[0])
        inner_aliases = list(ALIAS.finditer(inner_texts.flat, 0, inner_span))
        if inner_aliases:
            return None
        call = _single_call(inner_texts, 0, inner_span)
        inner = _guarded_call(*call) if call else None
        if inner is None:
            return None
        return _Guarded(f"filter.{inner.key}", f"filter({inner.count}, {condition})")
    return None


def _guarded_expression(texts: Texts, start: int, end: int, alias: str) -> _Guarded | None:
    """An aliased expression over percentiles of a single attribute, outside any filter()."""
    if _FILTER_CALL.search(texts.masked, start, end):
        return None
    attributes = set()
    for match in _PERCENTILE_CALL.finditer(texts.masked, start, end):
        closing = matching_parenthesis(texts.masked, match.end() - 1)
        arguments = _arguments(texts.code[match.end() : closing])
        if not arguments or not _ATTRIBUTE.fullmatch(arguments[0]):
            return None
        attributes.add(arguments[0])
    if len(attributes) != 1:
        return None
    return _Guarded(alias, f"count({attributes.pop()})")
