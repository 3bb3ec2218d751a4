"""NRQL: just enough reading to check the clauses the archiver owns and find the facets.

The text is scanned, not parsed: quotes, comments (`--`, `//`, `/* */`) and parentheses are
followed so that a keyword inside a string or a subquery is never taken for a clause. Each
function works on three views of the text (`Texts`) of the same length, so positions carry over.
Used by the query-file rules (`schema.py`), the sample counts (`samples.py`), the funnels
(`funnels.py`) and the dashboard importer; nothing else reads NRQL.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache

from archiver.queries.names import name_problem

MAX_FACETS = 5  # New Relic's limit on FACET attributes
MAX_FACET_LIMIT = 5000  # LIMIT MAX
KEYWORD_FLAGS = re.IGNORECASE
# WITH TIMEZONE too: it would move day buckets off UTC midnight
_TIME_CLAUSES = re.compile(
    r"\b(?:SINCE|UNTIL|TIMESERIES|COMPARE\s+WITH|WITH\s+TIMEZONE)\b", KEYWORD_FLAGS
)
CLAUSE_START = re.compile(
    r"\b(?:SELECT|FROM|WHERE|FACET|LIMIT|SINCE|UNTIL|TIMESERIES|COMPARE\s+WITH|WITH|"
    r"ORDER\s+BY|EXTRAPOLATE|OFFSET|PREDICT|JOIN)\b",
    KEYWORD_FLAGS,
)
_CLAUSE_OR_GROUP_END = re.compile(rf"{CLAUSE_START.pattern}|\)", KEYWORD_FLAGS)
_FACET = re.compile(r"\bFACET\b", KEYWORD_FLAGS)
_LIMIT = re.compile(r"\bLIMIT\b", KEYWORD_FLAGS)
SELECT = re.compile(r"\bSELECT\b", KEYWORD_FLAGS)
_FROM = re.compile(r"\bFROM\b", KEYWORD_FLAGS)
ALIAS = re.compile(r"\bAS\s+", KEYWORD_FLAGS)
QUOTES = "'\"`"
TIME_CLAUSE_PROBLEM = "the archiver owns time"


@dataclass(frozen=True)
class NrqlShape:
    sendable: str  # comments removed, whitespace outside quotes collapsed
    facets: tuple[str, ...]
    has_limit: bool
    problems: tuple[str, ...]


@dataclass(frozen=True)
class Texts:
    """Three views of one NRQL string, all the same length so positions carry over."""

    code: str  # comments blanked
    masked: str  # and the inside of quotes replaced by 'x'
    flat: str  # and the inside of parentheses replaced by 'x': what is left is depth 0


@lru_cache(maxsize=1024)  # validation rules and QueryDef all ask about the same few strings
def analyse_nrql(nrql: str) -> NrqlShape:
    """The facets and LIMIT of a query, and what is wrong with it for archiving."""
    try:
        texts, sendable = scan(nrql)
    except ValueError as exc:
        return NrqlShape(nrql.strip(), (), False, (str(exc),))
    facets = _facets(texts)
    problems = [*_time_clause_problems(texts), *_shape_problems(texts, facets)]
    has_limit = bool(_LIMIT.search(texts.flat))
    return NrqlShape(sendable, facets, has_limit, tuple(problems))


def scan(nrql: str) -> tuple[Texts, str]:
    """Split into code, quoted text and comments; comments follow NRQL (`--`, `//`, `/* */`).

    Also returns the NRQL to send: comments removed, whitespace outside quotes collapsed.
    """
    code: list[str] = []
    masked: list[str] = []
    sendable: list[str] = []
    i = 0
    while i < len(nrql):
        char, pair = nrql[i], nrql[i : i + 2]
        if char in QUOTES:
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
    texts = Texts("".join(code), masked_text, flatten(masked_text))
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


def flatten(masked: str) -> str:
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


def _clause_end(texts: Texts, after: int) -> int:
    match = _CLAUSE_OR_GROUP_END.search(texts.masked, after)
    return match.start() if match else len(texts.masked)


def _time_clause_problems(texts: Texts) -> list[str]:
    clauses = [
        " ".join(texts.code[match.start() : _clause_end(texts, match.end())].split())
        for match in _TIME_CLAUSES.finditer(texts.masked)
    ]
    if not clauses:
        return []
    listed = " and ".join(f"'{clause}'" for clause in clauses)
    return [f"{TIME_CLAUSE_PROBLEM}: remove {listed}"]


def _facets(texts: Texts) -> tuple[str, ...]:
    match = _FACET.search(texts.flat)
    if not match:
        return ()
    start = match.end()
    end = CLAUSE_START.search(texts.flat, start)
    stop = end.start() if end else len(texts.flat)
    names = []
    for item_start, item_end in comma_separated(texts.flat, start, stop):
        if name := _facet_name(texts, item_start, item_end):
            names.append(name)
    return tuple(names)


def comma_separated(flat: str, start: int, stop: int) -> Iterable[tuple[int, int]]:
    while (comma := flat.find(",", start, stop)) >= 0:
        yield start, comma
        start = comma + 1
    yield start, stop


def _facet_name(texts: Texts, start: int, end: int) -> str:
    aliases = list(ALIAS.finditer(texts.flat, start, end))
    if aliases:
        start = aliases[-1].end()
    name = " ".join(texts.code[start:end].split())
    if aliases:
        return name.strip(QUOTES)
    return name.replace("`", "")


def _shape_problems(texts: Texts, facets: tuple[str, ...]) -> list[str]:
    problems = []
    if not SELECT.search(texts.flat) or not _FROM.search(texts.flat):
        problems.append("nrql must be a query of the form SELECT ... FROM ...")
    if _FACET.search(texts.flat) and not facets:
        problems.append("nrql has FACET without an attribute")
    if len(facets) > MAX_FACETS:
        problems.append(
            f"nrql has {len(facets)} FACET attributes; New Relic allows at most {MAX_FACETS}"
        )
    for facet in facets:
        if problem := name_problem(facet):
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


_WITH_WHAT = re.compile(r"WITH\s+(\w+)", KEYWORD_FLAGS)
_CALL = re.compile(r"\s*([A-Za-z_]\w*)\s*\(")


def top_level_clauses(nrql: str) -> tuple[Clause, ...]:
    """The clauses outside parentheses and quotes, in order; ValueError for broken quoting.

    Each clause runs from its keyword to the next one: `SINCE 1 day ago`, `TIMESERIES 5
    minutes`, `LIMIT 10`. Subqueries and function arguments stay inside their clause.
    """
    texts, _ = scan(nrql)
    starts = list(CLAUSE_START.finditer(texts.flat))
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
    texts, _ = scan(nrql)
    wanted = {keyword.upper() for keyword in keywords}
    kept, position = [], 0
    for clause in top_level_clauses(nrql):
        if clause.keyword in wanted:
            kept.append(texts.code[position : clause.start])
            position = clause.end
    kept.append(texts.code[position:])
    return scan("".join(kept))[1]


def select_items(nrql: str) -> tuple[SelectItem, ...]:
    """The SELECT list, item by item; empty when there is no SELECT clause."""
    texts, _ = scan(nrql)
    select = next((c for c in top_level_clauses(nrql) if c.keyword == "SELECT"), None)
    if select is None:
        return ()
    start = select.start + len("SELECT")
    return tuple(
        _select_item(texts, item_start, item_end)
        for item_start, item_end in comma_separated(texts.flat, start, select.end)
    )


def _select_item(texts: Texts, start: int, end: int) -> SelectItem:
    text = " ".join(texts.code[start:end].split())
    alias = None
    if aliases := list(ALIAS.finditer(texts.flat, start, end)):
        alias = " ".join(texts.code[aliases[-1].end() : end].split()).strip(QUOTES)
        end = aliases[-1].start()
    function, arguments = None, ()
    call = _CALL.match(texts.flat, start, end)
    close = matching_parenthesis(texts.masked, call.end() - 1) if call else end
    if call and close < end and not texts.flat[close + 1 : end].strip():
        inside = flatten(texts.masked[call.end() : close])  # depth 0 = the call's own commas
        arguments = tuple(
            " ".join(texts.code[call.end() + a : call.end() + b].split())
            for a, b in comma_separated(inside, 0, len(inside))
        )
        function = call.group(1)
    return SelectItem(text, function, arguments, alias)


def matching_parenthesis(masked: str, opening: int) -> int:
    depth = 0
    for position in range(opening, len(masked)):
        depth += {"(": 1, ")": -1}.get(masked[position], 0)
        if depth == 0:
            return position
    return len(masked)


_LIMIT_VALUE = re.compile(r"\bLIMIT\s+(MAX|\d+)\b", KEYWORD_FLAGS)


def facet_limit(sendable: str) -> int:
    """The most facets New Relic answers for this query as sent (LIMIT n, else LIMIT MAX)."""
    try:
        texts, _ = scan(sendable)
    except ValueError:
        return MAX_FACET_LIMIT
    match = _LIMIT_VALUE.search(texts.flat)
    if match is None or match.group(1).upper() == "MAX":
        return MAX_FACET_LIMIT
    return min(int(match.group(1)), MAX_FACET_LIMIT)
