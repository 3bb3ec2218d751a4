"""Query files (`queries/*.yaml`): load, validate and resolve them into `QueryDef`s.

Everything a query file can get wrong is found here, before any network call, and reported
as a `QueryFileProblem` naming the file and the key. A broken file never stops the good ones:
`load_files` returns both the queries and the problems.

Two layers: `_QueryFile`/`_TargetEntry` mirror the YAML and validate each key on its own
(pydantic, extra keys forbidden); `_resolve` applies the rules that span keys (target
defaults, duplicate targets, tags against facets) and builds the public `QueryDef`.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    ValidationError,
    ValidationInfo,
    computed_field,
    field_validator,
)

from archiver.errors import ConfigError
from archiver.pipeline.events import epoch_ms, events_nrql
from archiver.timeparse import (
    as_utc,
    format_duration,
    influx_duration,
    nrql_timeseries,
    parse_duration,
    parse_time,
)
from archiver.windows import MAX_BUCKETS

QUERY_FILE_PATTERNS = ("*.yaml", "*.yml")
DEFAULT_LAG = timedelta(minutes=5)
DEFAULT_NR_RETENTION = timedelta(days=8)
DEFAULT_MAX_SERIES = 10_000
EVENTS_WINDOW = timedelta(hours=1)
Mode = Literal["aggregate", "events"]
MAX_FACETS = 5  # New Relic's limit on FACET attributes
DAY = timedelta(days=1)
RESERVED_INFLUX_KEYS = frozenset({"time", "_field", "_measurement"})
NAME_PATTERN = re.compile(r"[A-Za-z0-9_.-]+")
_CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f]")
ACCOUNT_TAG = "account_id"  # the tag an `account_ids` file adds to every point


# ---------------------------------------------------------------------------------------------
# The public, fully resolved models
# ---------------------------------------------------------------------------------------------


class Target(BaseModel, frozen=True):
    """One retention policy a query feeds, at one TIMESERIES interval."""

    database: str
    retention_policy: str | None  # None: the database's default retention policy
    interval: timedelta
    retention_duration: str | None = None  # InfluxQL literal ("104w"): create the RP if missing

    @property
    def key(self) -> str:
        """Stable id of the target within its query, used for checkpoints: 'db.rp' or 'db'."""
        if self.retention_policy is None:
            return self.database
        return f"{self.database}.{self.retention_policy}"


class QueryDef(BaseModel, frozen=True):
    """One query file, validated, with every default applied."""

    name: str
    path: Path
    nrql: str  # as written, stripped
    measurement: str
    targets: tuple[Target, ...] = Field(min_length=1)
    lag: timedelta = DEFAULT_LAG
    lookback: timedelta = timedelta(0)  # re-exported before the checkpoint (late data)
    start: datetime | None = None  # UTC
    account_id: int | None = None
    account_ids: tuple[int, ...] = ()  # one job per account, each tagged account_id=<id>
    tags: dict[str, str] = Field(default_factory=dict)
    nr_retention: timedelta = DEFAULT_NR_RETENTION
    max_series: int = DEFAULT_MAX_SERIES
    description: str | None = None
    mode: Mode = "aggregate"
    tag_attributes: tuple[str, ...] = ()  # events mode: attributes that become tags
    other: bool = False  # archive otherResult (facets beyond LIMIT) under OTHER_TAG_VALUE

    def __hash__(self) -> int:  # tags is a dict: hash by identity of the file instead
        return hash((self.name, self.path))

    @cached_property
    def _shape(self) -> NrqlShape:
        return analyse_nrql(self.nrql)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def facets(self) -> tuple[str, ...]:
        """FACET attribute names in FACET order, backticks removed (the alias when given)."""
        return self._shape.facets

    @computed_field  # type: ignore[prop-decorator]
    @property
    def has_limit(self) -> bool:
        """The nrql has its own LIMIT clause."""
        return self._shape.has_limit

    @cached_property
    def _counted(self) -> SampleCounts:
        return sample_counts(self._shape.sendable)

    @property
    def sample_guards(self) -> tuple[SampleGuard, ...]:
        """The helper counts sent with the percentiles, and the fields each one vouches for."""
        return () if self.mode == "events" else self._counted.guards

    @property
    def facet_limit(self) -> int:
        """How many facets New Relic answers at most: the nrql's LIMIT, else LIMIT MAX."""
        return facet_limit(self._shape.sendable)

    def accounts(self, default: int | None) -> tuple[int | None, ...]:
        """The accounts this query runs against: `account_ids`, else `account_id` or `default`."""
        return self.account_ids or (self.account_id or default,)

    def job_name(self, account_id: int | None) -> str:
        """The name this query's checkpoints, backfill progress, leases and run log go by.

        The query name; for an `account_ids` file `<name>@<account id>`. A query name never
        holds '@', so a multi-account key can never be a single-account file's key.
        """
        return f"{self.name}@{account_id}" if self.account_ids else self.name

    def job_tags(self, account_id: int | None) -> dict[str, str]:
        """The static tags of every point; an `account_ids` file adds `account_id=<id>`."""
        if not self.account_ids:
            return self.tags
        return {**self.tags, ACCOUNT_TAG: str(account_id)}

    def nrql_for(self, since: datetime, until: datetime, interval: timedelta) -> str:
        """The exact NRQL sent for the half-open window [since, until) at this interval.

        The window must be aligned to the interval and hold 1 to 366 buckets: anything else
        is a bug in the caller, so it raises ValueError rather than sending a shifted query.
        """
        if self.mode == "events":  # raw events: any window, split while New Relic caps it
            return events_nrql(self._shape.sendable, since, until)
        since_ms, until_ms = epoch_ms(since), epoch_ms(until)
        step_ms = interval // timedelta(milliseconds=1)
        if step_ms <= 0 or since_ms % step_ms or until_ms % step_ms:
            raise ValueError(
                f"window {as_utc(since):%Y-%m-%dT%H:%M:%SZ}..{as_utc(until):%Y-%m-%dT%H:%M:%SZ}"
                f" is not aligned to the interval of {format_duration(interval)}"
            )
        buckets = (until_ms - since_ms) // step_ms
        if not 1 <= buckets <= MAX_BUCKETS:
            raise ValueError(f"a window must hold 1 to {MAX_BUCKETS} buckets, not {buckets}")
        limit = " LIMIT MAX" if self.facets and not self.has_limit else ""
        return (
            f"{self._counted.nrql}{limit} SINCE {since_ms} UNTIL {until_ms}"
            f" TIMESERIES {nrql_timeseries(interval)}"
        )


@dataclass(frozen=True)
class QueryFileProblem:
    path: Path
    key: str | None  # 'interval', 'targets[1].retention_duration', 'tags.env'; None: whole file
    message: str
    query: str | None = None

    def __str__(self) -> str:
        """One line. The query is named only when it differs from the file's stem."""
        where = str(self.path)
        if self.query and self.query != self.path.stem:
            where += f" (query '{self.query}')"
        if self.key:
            where += f": key '{self.key}'"
        return f"{where}: {self.message}"


@dataclass(frozen=True)
class LoadResult:
    queries: list[QueryDef] = field(default_factory=list)
    problems: list[QueryFileProblem] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------
# NRQL: just enough reading to check the clauses the archiver owns and find the facets
# ---------------------------------------------------------------------------------------------

_KEYWORD_FLAGS = re.IGNORECASE
# WITH TIMEZONE too: it would move day buckets off UTC midnight
_TIME_CLAUSES = re.compile(
    r"\b(?:SINCE|UNTIL|TIMESERIES|COMPARE\s+WITH|WITH\s+TIMEZONE)\b", _KEYWORD_FLAGS
)
_CLAUSE_START = re.compile(
    r"\b(?:SELECT|FROM|WHERE|FACET|LIMIT|SINCE|UNTIL|TIMESERIES|COMPARE\s+WITH|WITH|"
    r"ORDER\s+BY|EXTRAPOLATE|OFFSET|PREDICT|JOIN)\b",
    _KEYWORD_FLAGS,
)
_CLAUSE_OR_GROUP_END = re.compile(rf"{_CLAUSE_START.pattern}|\)", _KEYWORD_FLAGS)
_FACET = re.compile(r"\bFACET\b", _KEYWORD_FLAGS)
_LIMIT = re.compile(r"\bLIMIT\b", _KEYWORD_FLAGS)
_SELECT = re.compile(r"\bSELECT\b", _KEYWORD_FLAGS)
_FROM = re.compile(r"\bFROM\b", _KEYWORD_FLAGS)
_ALIAS = re.compile(r"\bAS\s+", _KEYWORD_FLAGS)
_QUOTES = "'\"`"
TIME_CLAUSE_PROBLEM = "the archiver owns time"


@dataclass(frozen=True)
class NrqlShape:
    sendable: str  # comments removed, whitespace outside quotes collapsed
    facets: tuple[str, ...]
    has_limit: bool
    problems: tuple[str, ...]


@dataclass(frozen=True)
class _Texts:
    """Three views of one NRQL string, all the same length so positions carry over."""

    code: str  # comments blanked
    masked: str  # and the inside of quotes replaced by 'x'
    flat: str  # and the inside of parentheses replaced by 'x': what is left is depth 0


@lru_cache(maxsize=1024)  # validation rules and QueryDef all ask about the same few strings
def analyse_nrql(nrql: str) -> NrqlShape:
    """The facets and LIMIT of a query, and what is wrong with it for archiving."""
    try:
        texts, sendable = _scan(nrql)
    except ValueError as exc:
        return NrqlShape(nrql.strip(), (), False, (str(exc),))
    facets = _facets(texts)
    problems = [*_time_clause_problems(texts), *_shape_problems(texts, facets)]
    has_limit = bool(_LIMIT.search(texts.flat))
    return NrqlShape(sendable, facets, has_limit, tuple(problems))


def _scan(nrql: str) -> tuple[_Texts, str]:
    """Split into code, quoted text and comments; comments follow NRQL (`--`, `//`, `/* */`).

    Also returns the NRQL to send: comments removed, whitespace outside quotes collapsed.
    """
    code: list[str] = []
    masked: list[str] = []
    sendable: list[str] = []
    i = 0
    while i < len(nrql):
        char, pair = nrql[i], nrql[i : i + 2]
        if char in _QUOTES:
            end = _closing_quote(nrql, i) + 1
            code.append(nrql[i:end])
            masked.append(char + "x" * (end - i - 2) + char)
            sendable.append(nrql[i:end])
        elif pair in ("--", "//", "/*") or char.isspace():
            end = _comment_end(nrql, i) if pair in ("--", "//", "/*") else i + 1
            code.append(nrql[i:end] if char.isspace() else " " * (end - i))
            masked.append(code[-1])
            if sendable and sendable[-1] != " ":
                sendable.append(" ")
        else:
            end = i + 1
            code.append(char)
            masked.append(char)
            sendable.append(char)
        i = end
    masked_text = "".join(masked)
    texts = _Texts("".join(code), masked_text, _flatten(masked_text))
    return texts, "".join(sendable).strip()


def _closing_quote(nrql: str, start: int) -> int:
    quote, i = nrql[start], start + 1
    while i < len(nrql):
        if nrql[i] == "\\":
            i += 2
            continue
        if nrql[i] == quote:
            return i
        i += 1
    raise ValueError(f"nrql has an unterminated {quote} quote")


def _comment_end(nrql: str, start: int) -> int:
    if nrql.startswith("/*", start):
        end = nrql.find("*/", start + 2)
        if end < 0:
            raise ValueError("nrql has an unterminated /* comment")
        return end + 2
    end = nrql.find("\n", start)
    return len(nrql) if end < 0 else end


def _flatten(masked: str) -> str:
    depth = 0
    flat: list[str] = []
    for char in masked:
        if char == ")":
            depth -= 1
            if depth < 0:
                raise ValueError("nrql has a ')' without its '('")
        flat.append(char if depth == 0 else "x")
        if char == "(":
            depth += 1
    if depth:
        raise ValueError("nrql has a '(' without its ')'")
    return "".join(flat)


def _clause_end(texts: _Texts, after: int) -> int:
    match = _CLAUSE_OR_GROUP_END.search(texts.masked, after)
    return match.start() if match else len(texts.masked)


def _time_clause_problems(texts: _Texts) -> list[str]:
    clauses = [
        " ".join(texts.code[match.start() : _clause_end(texts, match.end())].split())
        for match in _TIME_CLAUSES.finditer(texts.masked)
    ]
    if not clauses:
        return []
    listed = " and ".join(f"'{clause}'" for clause in clauses)
    return [f"{TIME_CLAUSE_PROBLEM}: remove {listed}"]


def _facets(texts: _Texts) -> tuple[str, ...]:
    match = _FACET.search(texts.flat)
    if not match:
        return ()
    start = match.end()
    end = _CLAUSE_START.search(texts.flat, start)
    stop = end.start() if end else len(texts.flat)
    names = []
    for item_start, item_end in _comma_separated(texts.flat, start, stop):
        if name := _facet_name(texts, item_start, item_end):
            names.append(name)
    return tuple(names)


def _comma_separated(flat: str, start: int, stop: int) -> Iterable[tuple[int, int]]:
    while (comma := flat.find(",", start, stop)) >= 0:
        yield start, comma
        start = comma + 1
    yield start, stop


def _facet_name(texts: _Texts, start: int, end: int) -> str:
    aliases = list(_ALIAS.finditer(texts.flat, start, end))
    if aliases:
        start = aliases[-1].end()
    name = " ".join(texts.code[start:end].split())
    if aliases:
        return name.strip(_QUOTES)
    return name.replace("`", "")


def _shape_problems(texts: _Texts, facets: tuple[str, ...]) -> list[str]:
    problems = []
    if not _SELECT.search(texts.flat) or not _FROM.search(texts.flat):
        problems.append("nrql must be a query of the form SELECT ... FROM ...")
    if _FACET.search(texts.flat) and not facets:
        problems.append("nrql has FACET without an attribute")
    if len(facets) > MAX_FACETS:
        problems.append(
            f"nrql has {len(facets)} FACET attributes; New Relic allows at most {MAX_FACETS}"
        )
    for facet in facets:
        if problem := _name_problem(facet):
            problems.append(f"FACET attribute '{facet}' cannot be an InfluxDB tag: {problem}")
    return problems


@dataclass(frozen=True)
class Clause:
    """One top-level clause of an NRQL query, as positions in the text that was analysed."""

    keyword: str  # upper case, one space between words: 'SINCE', 'COMPARE WITH', 'WITH TIMEZONE'
    start: int
    end: int  # where the next top-level clause starts (or the end of the text)
    text: str  # the clause as written, whitespace collapsed


@dataclass(frozen=True)
class SelectItem:
    """One item of the SELECT list: `count(*)`, `percentile(duration, 95) AS 'p'`, `name`."""

    text: str  # whitespace collapsed, alias included
    function: str | None  # 'average' when the item is exactly one call, else None
    arguments: tuple[str, ...]  # of that call, split at top-level commas
    alias: str | None  # quotes and backticks removed


_WITH_WHAT = re.compile(r"WITH\s+(\w+)", _KEYWORD_FLAGS)
_CALL = re.compile(r"\s*([A-Za-z_]\w*)\s*\(")


def top_level_clauses(nrql: str) -> tuple[Clause, ...]:
    """The clauses outside parentheses and quotes, in order; ValueError for broken quoting.

    Each clause runs from its keyword to the next one: `SINCE 1 day ago`, `TIMESERIES 5
    minutes`, `LIMIT 10`. Subqueries and function arguments stay inside their clause.
    """
    texts, _ = _scan(nrql)
    starts = list(_CLAUSE_START.finditer(texts.flat))
    clauses = []
    for index, match in enumerate(starts):
        keyword = " ".join(match.group(0).upper().split())
        if keyword == "WITH" and (what := _WITH_WHAT.match(texts.flat, match.start())):
            keyword = f"WITH {what.group(1).upper()}"
        end = starts[index + 1].start() if index + 1 < len(starts) else len(texts.flat)
        text = " ".join(texts.code[match.start() : end].split())
        clauses.append(Clause(keyword, match.start(), end, text))
    return tuple(clauses)


def without_clauses(nrql: str, keywords: Iterable[str]) -> str:
    """The query with its top-level clauses of these keywords cut out, comments removed."""
    texts, _ = _scan(nrql)
    wanted = {keyword.upper() for keyword in keywords}
    kept, position = [], 0
    for clause in top_level_clauses(nrql):
        if clause.keyword in wanted:
            kept.append(texts.code[position : clause.start])
            position = clause.end
    kept.append(texts.code[position:])
    return _scan("".join(kept))[1]


def select_items(nrql: str) -> tuple[SelectItem, ...]:
    """The SELECT list, item by item; empty when there is no SELECT clause."""
    texts, _ = _scan(nrql)
    select = next((c for c in top_level_clauses(nrql) if c.keyword == "SELECT"), None)
    if select is None:
        return ()
    start = select.start + len("SELECT")
    return tuple(
        _select_item(texts, item_start, item_end)
        for item_start, item_end in _comma_separated(texts.flat, start, select.end)
    )


def _select_item(texts: _Texts, start: int, end: int) -> SelectItem:
    text = " ".join(texts.code[start:end].split())
    alias = None
    if aliases := list(_ALIAS.finditer(texts.flat, start, end)):
        alias = " ".join(texts.code[aliases[-1].end() : end].split()).strip(_QUOTES)
        end = aliases[-1].start()
    function, arguments = None, ()
    call = _CALL.match(texts.flat, start, end)
    close = _matching_parenthesis(texts.masked, call.end() - 1) if call else end
    if call and close < end and not texts.flat[close + 1 : end].strip():
        inside = _flatten(texts.masked[call.end() : close])  # depth 0 = the call's own commas
        arguments = tuple(
            " ".join(texts.code[call.end() + a : call.end() + b].split())
            for a, b in _comma_separated(inside, 0, len(inside))
        )
        function = call.group(1)
    return SelectItem(text, function, arguments, alias)


def _matching_parenthesis(masked: str, opening: int) -> int:
    depth = 0
    for position in range(opening, len(masked)):
        depth += {"(": 1, ")": -1}.get(masked[position], 0)
        if depth == 0:
            return position
    return len(masked)


# ---------------------------------------------------------------------------------------------
# Sample counts: telling a percentile of an empty bucket from a real 0
#
# New Relic answers percentile() (and median()) of a bucket without samples with 0, not null.
# To know which zeros are real, the NRQL sent also asks for the matching sample count, in the
# same query, under the same WHERE/filter(): `percentile(duration, 95)` brings
# `count(duration) AS '__nr_archiver_n_0'`, `filter(percentile(duration, 75), WHERE x)` brings
# `filter(count(duration), WHERE x) AS '__nr_archiver_n_1'`. Where that count is 0 the
# percentile fields are dropped (archiver/samples.py); the helper fields are never written.
# ---------------------------------------------------------------------------------------------

SAMPLE_COUNT_PREFIX = "__nr_archiver_n_"
OTHER_TAG_VALUE = "__other__"  # the facet tags of otherResult's points (`other: true`)
MAX_FACET_LIMIT = 5000  # LIMIT MAX
_PERCENTILE_FUNCTIONS = {"percentile": "percentile", "median": "median"}
_SINGLE_CALL = re.compile(r"\s*([A-Za-z_][A-Za-z0-9_]*)\s*\(x*\)\s*", _KEYWORD_FLAGS)
_PERCENTILE_CALL = re.compile(r"\b(percentile|median)\s*\(", _KEYWORD_FLAGS)
_FILTER_CALL = re.compile(r"\bfilter\s*\(", _KEYWORD_FLAGS)
# An attribute name, bare or in backticks: count() of it is the percentile's sample count.
_ATTRIBUTE = re.compile(r"`[^`]+`|[A-Za-z_$][\w.:$-]*")
_LIMIT_VALUE = re.compile(r"\bLIMIT\s+(MAX|\d+)\b", _KEYWORD_FLAGS)


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
        texts, _ = _scan(sendable)
    except ValueError:
        return SampleCounts(sendable, ())
    span = _select_span(texts)
    if span is None:
        return SampleCounts(sendable, ())
    start, stop = span
    helpers: dict[str, list[str]] = {}  # count NRQL -> guarded keys
    for item_start, item_end in _comma_separated(texts.flat, start, stop):
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


def facet_limit(sendable: str) -> int:
    """The most facets New Relic answers for this query as sent (LIMIT n, else LIMIT MAX)."""
    try:
        texts, _ = _scan(sendable)
    except ValueError:
        return MAX_FACET_LIMIT
    match = _LIMIT_VALUE.search(texts.flat)
    if match is None or match.group(1).upper() == "MAX":
        return MAX_FACET_LIMIT
    return min(int(match.group(1)), MAX_FACET_LIMIT)


def _select_span(texts: _Texts) -> tuple[int, int] | None:
    """Where the SELECT list is (depth 0: a nested query's SELECT is not looked at)."""
    match = _SELECT.search(texts.flat)
    if match is None:
        return None
    end = _CLAUSE_START.search(texts.flat, match.end())
    return match.end(), end.start() if end else len(texts.flat)


def _guarded_item(texts: _Texts, start: int, end: int) -> _Guarded | None:
    aliases = list(_ALIAS.finditer(texts.flat, start, end))
    alias = None
    if aliases:
        alias = " ".join(texts.code[aliases[-1].end() : end].split()).strip(_QUOTES)
        end = aliases[-1].start()
    call = _single_call(texts, start, end)
    if call is not None:
        guarded = _guarded_call(*call)
        if guarded is not None:
            return _Guarded(alias or guarded.key, guarded.count)
    if alias is None:
        return None  # an unnamed expression: its result key cannot be told in advance
    return _guarded_expression(texts, start, end, alias)


def _single_call(texts: _Texts, start: int, end: int) -> tuple[str, list[str]] | None:
    """(function, argument texts) when the text is exactly one call `f(...)`."""
    if not _SINGLE_CALL.fullmatch(texts.flat, start, end):
        return None
    opening = texts.flat.index("(", start, end)
    closing = texts.flat.rindex(")", start, end)
    name = texts.code[start:opening].strip().lower()
    return name, _arguments(texts.code[opening + 1 : closing])


def _arguments(code: str) -> list[str]:
    inner, _ = _scan(code)
    return [code[a:b].strip() for a, b in _comma_separated(inner.flat, 0, len(code))]


def _guarded_call(function: str, arguments: list[str]) -> _Guarded | None:
    if function in _PERCENTILE_FUNCTIONS and arguments and _ATTRIBUTE.fullmatch(arguments[0]):
        attribute = arguments[0]
        name = attribute.replace("`", "")
        return _Guarded(f"{_PERCENTILE_FUNCTIONS[function]}.{name}", f"count({attribute})")
    if function == "filter" and len(arguments) >= 2:
        condition = ", ".join(arguments[1:])
        inner_texts, _ = _scan(arguments[0])
        inner_span = len(arguments[0])
        inner_aliases = list(_ALIAS.finditer(inner_texts.flat, 0, inner_span))
        if inner_aliases:
            return None
        call = _single_call(inner_texts, 0, inner_span)
        inner = _guarded_call(*call) if call else None
        if inner is None:
            return None
        return _Guarded(f"filter.{inner.key}", f"filter({inner.count}, {condition})")
    return None


def _guarded_expression(texts: _Texts, start: int, end: int, alias: str) -> _Guarded | None:
    """An aliased expression over percentiles of a single attribute, outside any filter()."""
    if _FILTER_CALL.search(texts.masked, start, end):
        return None
    attributes = set()
    for match in _PERCENTILE_CALL.finditer(texts.masked, start, end):
        closing = _closing_parenthesis(texts.masked, match.end() - 1)
        arguments = _arguments(texts.code[match.end() : closing])
        if not arguments or not _ATTRIBUTE.fullmatch(arguments[0]):
            return None
        attributes.add(arguments[0])
    if len(attributes) != 1:
        return None
    return _Guarded(alias, f"count({attributes.pop()})")


def _closing_parenthesis(masked: str, opening: int) -> int:
    depth = 0
    for index in range(opening, len(masked)):
        depth += {"(": 1, ")": -1}.get(masked[index], 0)
        if depth == 0:
            return index
    return len(masked)


# ---------------------------------------------------------------------------------------------
# Per-key validation (each raises ValueError with the message the user sees)
# ---------------------------------------------------------------------------------------------


def _check_nrql(nrql: str) -> str:
    nrql = nrql.strip()
    if not nrql:
        raise ValueError("nrql is empty")
    if problems := analyse_nrql(nrql).problems:
        raise ValueError("; ".join(problems))
    return nrql


def _check_name(name: str) -> str:
    if not NAME_PATTERN.fullmatch(name):
        raise ValueError(
            f"{name!r} is not a valid query name: use letters, digits, '_', '.' and '-' only"
        )
    return name


def _name_problem(name: str) -> str | None:
    if not name:
        return "must not be empty"
    if _CONTROL_CHARACTERS.search(name):
        return "must not contain newlines or other control characters"
    if name in RESERVED_INFLUX_KEYS:
        return f"'{name}' is reserved by InfluxDB"
    if name.endswith("\\"):  # it would escape the separator after it in line protocol
        return "must not end with a backslash (InfluxDB cannot store it)"
    return None


def _check_measurement(measurement: str) -> str:
    if problem := _name_problem(measurement):
        raise ValueError(f"measurement {problem}")
    if measurement.startswith("_"):
        raise ValueError(f"{measurement!r}: InfluxDB reserves measurement names starting with '_'")
    return measurement


def _check_influx_name(name: str) -> str:
    if not name or _CONTROL_CHARACTERS.search(name):
        raise ValueError(f"{name!r} must be a non-empty name without control characters")
    return name


def _check_tag_key(key: str) -> str:
    if problem := _name_problem(key):
        raise ValueError(f"tag name {problem}")
    return key


def _tag_value(value: Any) -> str:
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, str | int | float | date):
        text = value.isoformat() if isinstance(value, date) else str(value)
    else:
        raise ValueError(f"a tag value must be a single text or number, not {value!r}")
    if not text or _CONTROL_CHARACTERS.search(text):
        raise ValueError(f"{text!r}: a tag value must be non-empty text without control characters")
    return text


def _interval(value: Any) -> timedelta:
    interval = parse_duration(value)
    if interval > DAY:
        raise ValueError(f"{value!r} is longer than the longest interval, 1 day")
    if DAY % interval:
        raise ValueError(
            f"{value!r} does not divide a day evenly, so its buckets would not line up in UTC; "
            "use e.g. 1, 5, 10, 15 or 30 minutes, or 1, 2, 3, 4, 6, 8, 12 or 24 hours"
        )
    return interval


def _non_negative_duration(value: Any) -> timedelta:
    return parse_duration(value, allow_zero=True)


def _check_targets(targets: list[_TargetEntry]) -> list[_TargetEntry]:
    if not targets:
        raise ValueError("lists no target: list at least one, or leave out `targets`")
    return targets


Name = Annotated[str, AfterValidator(_check_influx_name)]
Interval = Annotated[timedelta, BeforeValidator(_interval)]
RetentionDuration = Annotated[str, BeforeValidator(influx_duration)]
PositiveDuration = Annotated[timedelta, BeforeValidator(parse_duration)]
NonNegativeDuration = Annotated[timedelta, BeforeValidator(_non_negative_duration)]
TagKey = Annotated[str, AfterValidator(_check_tag_key)]
TagValue = Annotated[str, BeforeValidator(_tag_value)]


class _TargetEntry(BaseModel):
    """One entry of `targets:`; what it leaves out comes from the top level."""

    model_config = ConfigDict(extra="forbid")

    database: Name | None = None
    retention_policy: Name | None = None
    interval: Interval | None = None
    retention_duration: RetentionDuration | None = None


class _QueryFile(BaseModel):
    """A query file as written: each key checked on its own."""

    model_config = ConfigDict(extra="forbid")

    name: Annotated[str, AfterValidator(_check_name)] | None = None
    description: str | None = None
    nrql: Annotated[str, AfterValidator(_check_nrql)]
    measurement: Annotated[str, AfterValidator(_check_measurement)]
    database: Name | None = None
    retention_policy: Name | None = None
    interval: Interval | None = None
    retention_duration: RetentionDuration | None = None
    targets: Annotated[list[_TargetEntry], AfterValidator(_check_targets)] | None = None
    lag: NonNegativeDuration = DEFAULT_LAG
    lookback: NonNegativeDuration = timedelta(0)
    start: datetime | None = None
    account_id: Annotated[int, Field(strict=True, gt=0)] | None = None
    account_ids: (
        Annotated[list[Annotated[int, Field(strict=True, gt=0)]], Field(min_length=1)] | None
    ) = None
    tags: dict[TagKey, TagValue] = Field(default_factory=dict)
    nr_retention: PositiveDuration = DEFAULT_NR_RETENTION
    max_series: Annotated[int, Field(strict=True, ge=1)] = DEFAULT_MAX_SERIES
    mode: Mode = "aggregate"
    tag_attributes: list[TagKey] | None = None
    other: StrictBool = False

    @field_validator("start", mode="before")
    @classmethod
    def _parse_start(cls, value: Any, info: ValidationInfo) -> datetime | None:
        if value is None:
            return None
        now = info.context["now"] if info.context else datetime.now(UTC)
        return parse_time(value, now)


QUERY_KEYS = tuple(_QueryFile.model_fields)
TARGET_KEYS = tuple(_TargetEntry.model_fields)


# ---------------------------------------------------------------------------------------------
# Rules across keys
# ---------------------------------------------------------------------------------------------

_Problem = tuple[str | None, str]  # (key, message)


def _resolve(raw: _QueryFile, path: Path) -> tuple[QueryDef | None, list[_Problem]]:
    problems: list[_Problem] = []
    name = raw.name or path.stem
    if raw.name is None and not NAME_PATTERN.fullmatch(name):
        problems.append(("name", f"the file name {name!r} is not a valid query name; set `name:`"))
    targets, target_problems = _resolve_targets(raw)
    problems += target_problems
    problems += _tag_facet_collisions(raw)
    problems += _account_problems(raw)
    problems += _mode_problems(raw)
    problems += _answer_gap_problems(raw)
    if problems:
        return None, problems
    settings = raw.model_dump(include=_QUERY_SETTINGS)
    settings["account_ids"] = tuple(raw.account_ids or ())
    tag_attributes = tuple(raw.tag_attributes or ())
    return QueryDef(
        name=name, path=path, targets=targets, tag_attributes=tag_attributes, **settings
    ), []


def _account_problems(raw: _QueryFile) -> list[_Problem]:
    if raw.account_ids is None:
        return []
    problems: list[_Problem] = []
    if raw.account_id is not None:
        problems.append(("account_ids", "give either account_id or account_ids, not both"))
    if duplicates := sorted({a for a in raw.account_ids if raw.account_ids.count(a) > 1}):
        problems.append(("account_ids", f"lists {', '.join(map(str, duplicates))} twice"))
    if ACCOUNT_TAG in raw.tags:
        problems.append(
            (f"tags.{ACCOUNT_TAG}", "account_ids adds the account_id tag itself: remove this tag")
        )
    if ACCOUNT_TAG in analyse_nrql(raw.nrql).facets:
        problems.append(
            ("nrql", "FACET account_id would collide with the account_id tag of account_ids")
        )
    if ACCOUNT_TAG in (raw.tag_attributes or ()):
        problems.append(
            ("tag_attributes", "account_ids adds the account_id tag itself: remove account_id")
        )
    return problems


def _mode_problems(raw: _QueryFile) -> list[_Problem]:
    shape = analyse_nrql(raw.nrql)
    if raw.mode == "aggregate":
        if raw.tag_attributes is not None:
            return [("tag_attributes", "only for `mode: events`; FACET attributes become tags")]
        return []
    problems: list[_Problem] = []
    if shape.facets:
        problems.append(("nrql", "a `mode: events` query has no FACET: use tag_attributes"))
    if shape.has_limit:
        problems.append(("nrql", "remove LIMIT: events queries are sent with LIMIT MAX and split"))
    for key in set(raw.tags) & set(raw.tag_attributes or ()):
        problems.append((f"tags.{key}", f"'{key}' is also in tag_attributes"))
    return problems


def _answer_gap_problems(raw: _QueryFile) -> list[_Problem]:
    """`other: true` needs facets to fold; the helper-count names are the archiver's own."""
    problems: list[_Problem] = []
    if raw.other and (raw.mode == "events" or not analyse_nrql(raw.nrql).facets):
        problems.append(("other", "`other: true` needs an aggregate query with FACET"))
    if SAMPLE_COUNT_PREFIX in raw.nrql:
        problems.append(("nrql", f"names starting with {SAMPLE_COUNT_PREFIX} are reserved"))
    return problems


# keys of a query file that pass to QueryDef unchanged (the others make up the targets)
_QUERY_SETTINGS = {
    "description", "nrql", "measurement", "lag", "lookback", "start",
    "account_id", "account_ids", "tags", "nr_retention", "max_series", "mode", "other",
}  # fmt: skip


def _resolve_targets(raw: _QueryFile) -> tuple[tuple[Target, ...], list[_Problem]]:
    """Top-level database, retention_policy and interval are the defaults of every target.

    The top-level retention_duration belongs to the top-level retention policy: a target
    inherits it only when it writes to that same database and retention policy.
    """
    if not raw.targets:
        return _resolve_target(raw, _TargetEntry(), "")
    targets: list[Target] = []
    problems: list[_Problem] = []
    for index, entry in enumerate(raw.targets):
        resolved, entry_problems = _resolve_target(raw, entry, f"targets[{index}].")
        targets += resolved
        problems += entry_problems
    if raw.retention_duration and not any(_writes_to_top_level_policy(raw, t) for t in targets):
        problems.append(
            ("retention_duration", "no target writes to the top-level retention_policy: "
             "move retention_duration into the target that should create its policy")
        )  # fmt: skip
    if len(targets) == len(raw.targets):  # indexes in messages must match the file
        problems += _duplicate_targets(targets)
    return tuple(targets), problems


def _resolve_target(
    raw: _QueryFile, entry: _TargetEntry, here: str
) -> tuple[tuple[Target, ...], list[_Problem]]:
    database = entry.database or raw.database
    interval = entry.interval or raw.interval
    if interval is None and raw.mode == "events":
        interval = EVENTS_WINDOW  # events have no buckets: this is the first window's size
    missing = [key for key, value in (("database", database), ("interval", interval)) if not value]
    problems = [(f"{here}{key}", _missing_target_key(key, here)) for key in missing]
    if "retention_policy" in entry.model_fields_set:
        policy = entry.retention_policy
    else:
        policy = raw.retention_policy
    duration = entry.retention_duration
    if duration is None and (database, policy) == (raw.database, raw.retention_policy):
        duration = raw.retention_duration
    if duration is not None and policy is None:
        where = here if entry.retention_duration else ""
        problems.append((f"{where}retention_duration", "needs a retention_policy to create"))
    if problems or database is None or interval is None:
        return (), problems
    target = Target(
        database=database, retention_policy=policy, interval=interval, retention_duration=duration
    )
    return (target,), []


def _writes_to_top_level_policy(raw: _QueryFile, target: Target) -> bool:
    return (target.database, target.retention_policy) == (raw.database, raw.retention_policy)


def _missing_target_key(key: str, here: str) -> str:
    if here:
        return f"no {key}: give `{key}` in this target or at the top level"
    return "required key is missing"


def _duplicate_targets(targets: list[Target]) -> list[_Problem]:
    problems: list[_Problem] = []
    first_index: dict[str, int] = {}
    for index, target in enumerate(targets):
        if target.key in first_index:
            problems.append(
                (
                    f"targets[{index}]",
                    f"writes to {target.key} like targets[{first_index[target.key]}]; "
                    "each target needs its own retention policy",
                )
            )
        first_index.setdefault(target.key, index)
    return problems


def _tag_facet_collisions(raw: _QueryFile) -> list[_Problem]:
    facets = set(analyse_nrql(raw.nrql).facets)
    return [
        (f"tags.{key}", f"'{key}' is also a FACET attribute: a static tag would overwrite it")
        for key in raw.tags
        if key in facets
    ]


# ---------------------------------------------------------------------------------------------
# Reading files
# ---------------------------------------------------------------------------------------------


class _DuplicateKeyError(yaml.MarkedYAMLError):
    def __init__(self, key: str, mark: yaml.Mark) -> None:
        super().__init__(problem=f"the key '{key}' is given twice", problem_mark=mark)
        self.key = key


class _StrictLoader(yaml.SafeLoader):
    """PyYAML's safe loader, except that a key given twice is an error, not a silent overwrite."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: set[Hashable] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, Hashable):
                if key in seen:
                    raise _DuplicateKeyError(str(key), key_node.start_mark)
                seen.add(key)
        return super().construct_mapping(node, deep=deep)


class NoQueryFiles(ConfigError):
    """The queries folder holds no query file at all: nothing to do (not a broken file)."""


def load_dir(folder: Path, *, now: datetime | None = None) -> LoadResult:
    """Every `*.yaml` and `*.yml` file of `folder` (not hidden ones), in name order."""
    folder = Path(folder)
    if not folder.exists():
        raise ConfigError(f"queries folder '{folder}' does not exist")
    if not folder.is_dir():
        raise ConfigError(f"queries folder '{folder}' is not a folder")
    try:
        paths = sorted(
            path
            for pattern in QUERY_FILE_PATTERNS
            for path in folder.glob(pattern)
            if not path.name.startswith(".")
        )
    except OSError as exc:
        raise ConfigError(f"queries folder '{folder}' cannot be read: {exc.strerror}") from None
    if not paths:
        raise NoQueryFiles(f"queries folder '{folder}' has no *.yaml files")
    return load_files(paths, now=now)


def load_files(paths: Iterable[Path], *, now: datetime | None = None) -> LoadResult:
    """Load each file; problems are collected, never raised. `now` resolves ages in `start`."""
    now = now or datetime.now(UTC)
    queries: list[QueryDef] = []
    problems: list[QueryFileProblem] = []
    seen: set[Path] = set()
    for path in map(Path, paths):
        if path.resolve() in seen:
            continue
        seen.add(path.resolve())
        query, file_problems = load_file(path, now=now)
        problems += file_problems
        if query is not None:
            queries.append(query)
    duplicates = _duplicate_names(queries)
    problems += duplicates
    rejected = {problem.path for problem in duplicates}
    return LoadResult([query for query in queries if query.path not in rejected], problems)


def load_file(path: Path, *, now: datetime) -> tuple[QueryDef | None, list[QueryFileProblem]]:
    """One file: the query, or None and why not."""
    try:
        data = _read_yaml(path)
    except _FileProblem as exc:
        return None, [QueryFileProblem(path, exc.key, exc.message)]
    query_name = _name_in(data, path)
    try:
        raw = _QueryFile.model_validate(data, context={"now": now})
    except ValidationError as exc:
        return None, [
            QueryFileProblem(path, _key(error["loc"]), _message(error), query_name)
            for error in exc.errors()
        ]
    query, problems = _resolve(raw, path)
    return query, [QueryFileProblem(path, key, message, query_name) for key, message in problems]


class _FileProblem(Exception):
    def __init__(self, message: str, key: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.key = key


def _read_yaml(path: Path) -> dict:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise _FileProblem("the file is not UTF-8 text") from None
    except OSError as exc:
        raise _FileProblem(f"cannot read the file: {exc.strerror}") from None
    try:
        data = yaml.load(text, Loader=_StrictLoader)  # a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise _FileProblem(_yaml_message(exc), getattr(exc, "key", None)) from None
    if data is None:
        raise _FileProblem("the file is empty: a query file needs at least nrql and measurement")
    if not isinstance(data, dict):
        raise _FileProblem(
            f"the file holds a {type(data).__name__}, not a mapping of keys to values"
        )
    return data


def _yaml_message(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    if mark is None:
        return f"invalid YAML: {problem}"
    return f"invalid YAML at line {mark.line + 1}, column {mark.column + 1}: {problem}"


def _name_in(data: dict, path: Path) -> str:
    name = data.get("name")
    return name if isinstance(name, str) and NAME_PATTERN.fullmatch(name) else path.stem


def _key(loc: tuple[int | str, ...]) -> str | None:
    key = ""
    for part in loc:
        if isinstance(part, int):
            key += f"[{part}]"
        elif part != "[key]":
            name = str(part) or "''"
            key += f".{name}" if key else name
    return key or None


_TYPE_MESSAGES = {
    "string_type": "must be text",
    "int_type": "must be a whole number",
    "int_parsing": "must be a whole number",
    "bool_type": "must be true or false",
    "dict_type": "must be a mapping of keys to values",
    "model_type": "must be a mapping of keys to values",
    "list_type": "must be a list",
    "datetime_type": "must be a time",
}


def _message(error: Any) -> str:
    kind = error["type"]
    if kind == "missing":
        return "required key is missing"
    if kind == "extra_forbidden":
        return _unknown_key_message(error["loc"])
    if kind == "value_error":
        return str(error["ctx"]["error"])
    if kind == "greater_than":
        return f"must be greater than {error['ctx']['gt']} (got {_short(error['input'])})"
    if kind == "greater_than_equal":
        return f"must be at least {error['ctx']['ge']} (got {_short(error['input'])})"
    return f"{_TYPE_MESSAGES.get(kind, error['msg'])} (got {_short(error['input'])})"


def _unknown_key_message(loc: tuple[int | str, ...]) -> str:
    in_target = loc[0] == "targets" and len(loc) > 2
    known = TARGET_KEYS if in_target else QUERY_KEYS
    message = "unknown key"
    if close := difflib.get_close_matches(str(loc[-1]), known, n=1):
        return f"{message}; did you mean '{close[0]}'?"
    return f"{message}; a {'target' if in_target else 'query file'} takes {', '.join(known)}"


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _duplicate_names(queries: list[QueryDef]) -> list[QueryFileProblem]:
    paths_by_name: dict[str, list[Path]] = {}
    for query in queries:
        paths_by_name.setdefault(query.name, []).append(query.path)
    problems = []
    for name, paths in paths_by_name.items():
        for path in paths if len(paths) > 1 else ():
            others = ", ".join(str(other) for other in paths if other != path)
            message = f"the query name '{name}' is also used by {others}: names must be unique"
            problems.append(QueryFileProblem(path, "name", message, name))
    return problems


def select(queries: list[QueryDef], names: Iterable[str]) -> list[QueryDef]:
    """The queries named (all of them when no name is given), in their loading order."""
    wanted = set(names)
    if not wanted:
        return list(queries)
    known = {query.name for query in queries}
    if unknown := sorted(wanted - known):
        listed = ", ".join(sorted(known)) or "none"
        raise ConfigError(f"unknown query {', '.join(map(repr, unknown))}; known queries: {listed}")
    return [query for query in queries if query.name in wanted]
