"""Parse the NRQL subset the fake NerdGraph answers (grammar in `fakes.nerdgraph`'s docstring).

`parse(text) -> Query` or `NrqlError` whose message is what New Relic would say.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

SYNTAX = "NRQL Syntax Error"
MIXED_SELECT = f"{SYNTAX}: Mixing aggregate and non-aggregate functions is not supported"
RAW_WITH_FACET = f"{SYNTAX}: FACET requires an aggregate function in the SELECT"
RAW_WITH_TIMESERIES = f"{SYNTAX}: TIMESERIES requires an aggregate function in the SELECT"
MAX_FACET_ATTRIBUTES = 5
UNIT_SECONDS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400, "week": 604800}
SIMPLE_FUNCTIONS = {
    name.lower(): name
    for name in (
        "count",
        "average",
        "sum",
        "min",
        "max",
        "latest",
        "uniqueCount",
        "uniques",
        "percentile",
        "median",
    )
}
WRAPPING_FUNCTIONS = {"percentage", "filter", "rate"}
CLAUSES = {"where", "facet", "limit", "since", "until", "timeseries", "with", "extrapolate"}
# Real clauses the fake does not answer: they end a WHERE condition and are then rejected.
UNSUPPORTED_CLAUSES = {"compare", "order", "offset", "slide", "show"}

_TOKEN = re.compile(
    r"""
    (?P<space>\s+)
    |(?P<string>'(?:[^'\\]|\\.|'')*'|"(?:[^"\\]|\\.)*")
    |(?P<backticked>`[^`]*`)
    |(?P<number>\d+(?:\.\d+)?)
    |(?P<name>[^\W\d][\w.$]*)
    |(?P<operator><=|>=|!=|<>|[=<>(),*+\-/%])
    """,
    re.VERBOSE,
)


class NrqlError(ValueError):
    """The query cannot be answered; str(error) is New Relic's message."""


@dataclass(frozen=True)
class Aggregate:
    """One SELECT item: `function` is canonical (`uniqueCount`), `key` is the result key."""

    function: str
    attribute: str | None
    key: str
    percentiles: tuple[str, ...] = ()
    inner: Aggregate | None = None  # the wrapped aggregate of percentage / filter / rate
    per_seconds: int = 0  # rate(..., 1 minute) -> 60
    steps: tuple[str, ...] = ()  # funnel(a, WHERE ... [AS 'name'], ...): step names, "" if none


@dataclass(frozen=True)
class Column:
    """One SELECT item of a raw-event query: a bare attribute, `key` is the result key."""

    attribute: str
    key: str


@dataclass(frozen=True)
class Query:
    aggregates: tuple[Aggregate, ...]
    event_type: str
    # A raw-event query (`SELECT a, b FROM T`, `SELECT * FROM T`) has columns, no aggregates.
    columns: tuple[Column, ...] = ()
    select_all: bool = False
    facets: tuple[str, ...] = ()
    limit: int | None = None  # None: New Relic's default; "MAX" is stored as 5000
    since_ms: int | None = None
    until_ms: int | None = None
    step_seconds: int | None = None  # TIMESERIES bucket size; None without TIMESERIES
    # SINCE/UNTIL written as "<n> <unit> AGO": resolved against now by the caller.
    since_ago_seconds: int | None = None
    until_ago_seconds: int | None = None

    @property
    def is_raw(self) -> bool:
        return self.select_all or bool(self.columns)


@dataclass(frozen=True)
class Token:
    kind: str
    text: str
    position: int

    @property
    def value(self) -> str:
        """The text without quotes or backticks."""
        if self.kind in ("string", "backticked"):
            return self.text[1:-1]
        return self.text

    def is_word(self, *words: str) -> bool:
        return self.kind == "name" and self.text.lower() in words


def parse(text: str) -> Query:
    return _Parser(text).query()


def percentile_key(number: str) -> str:
    """New Relic keys percentiles by the number as written without a useless fraction."""
    as_float = float(number)
    return str(int(as_float)) if as_float.is_integer() else repr(as_float)


def tokenize(text: str) -> list[Token]:
    tokens: list[Token] = []
    position = 0
    while position < len(text):
        match = _TOKEN.match(text, position)
        if match is None:
            raise NrqlError(_unexpected(text, position, text[position]))
        if match.lastgroup != "space":
            tokens.append(Token(match.lastgroup or "", match.group(), position))
        position = match.end()
    return tokens


def _unexpected(text: str, position: int, what: str) -> str:
    line = text.count("\n", 0, position) + 1
    column = position - (text.rfind("\n", 0, position) + 1)
    return f"{SYNTAX}: Error at line {line} position {column}, unexpected '{what}'"


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = tokenize(text)
        self.index = 0

    # -- cursor -------------------------------------------------------------------------------

    def peek(self) -> Token | None:
        return self.tokens[self.index] if self.index < len(self.tokens) else None

    def take(self) -> Token:
        token = self.peek()
        if token is None:
            raise NrqlError(_unexpected(self.text, len(self.text), "end of query"))
        self.index += 1
        return token

    def error(self, token: Token) -> NrqlError:
        return NrqlError(_unexpected(self.text, token.position, token.text))

    def expect(self, text: str) -> Token:
        token = self.take()
        if token.text.lower() != text:
            raise self.error(token)
        return token

    def accept(self, text: str) -> bool:
        token = self.peek()
        if token is not None and token.text.lower() == text:
            self.index += 1
            return True
        return False

    def identifier(self) -> str:
        token = self.take()
        if token.kind not in ("name", "backticked") or token.is_word("from", *CLAUSES):
            raise self.error(token)
        return token.value

    def integer(self) -> int:
        token = self.take()
        if token.kind != "number" or "." in token.text:
            raise self.error(token)
        return int(token.text)

    def duration_seconds(self) -> int:
        amount = self.integer()
        unit = self.take()
        seconds = UNIT_SECONDS.get(unit.text.lower().removesuffix("s"))
        if seconds is None:
            raise self.error(unit)
        return amount * seconds

    # -- grammar ------------------------------------------------------------------------------

    def query(self) -> Query:
        self.expect("select")
        fields: dict[str, object] = self.select_list()
        self.expect("from")
        fields["event_type"] = self.identifier()
        seen: set[str] = set()
        while (token := self.take_clause(seen)) is not None:
            self.clause(token.text.lower(), fields)
        query = Query(**fields)  # type: ignore[arg-type]
        if query.is_raw and query.facets:
            raise NrqlError(RAW_WITH_FACET)
        if query.is_raw and query.step_seconds is not None:
            raise NrqlError(RAW_WITH_TIMESERIES)
        return query

    def select_list(self) -> dict[str, object]:
        """`*`, bare attributes (a raw-event query) or aggregates; never a mix."""
        if self.accept("*"):
            return {"aggregates": (), "select_all": True}
        items = [self.select_item()]
        while self.accept(","):
            items.append(self.select_item())
        aggregates = tuple(item for item in items if isinstance(item, Aggregate))
        columns = tuple(item for item in items if isinstance(item, Column))
        if aggregates and columns:
            raise NrqlError(MIXED_SELECT)
        return {"aggregates": aggregates, "columns": columns}

    def select_item(self) -> Aggregate | Column:
        after_name = self.tokens[self.index + 1] if self.index + 1 < len(self.tokens) else None
        if after_name is not None and after_name.text == "(":
            return self.aggregate()
        attribute = self.identifier()
        return Column(attribute, self.alias() or attribute)

    def alias(self) -> str | None:
        if not self.accept("as"):
            return None
        alias = self.take()
        if alias.kind not in ("name", "backticked", "string"):
            raise self.error(alias)
        return alias.value

    def take_clause(self, seen: set[str]) -> Token | None:
        token = self.peek()
        if token is None:
            return None
        if not token.is_word(*CLAUSES) or token.text.lower() in seen:
            raise self.error(token)
        seen.add(token.text.lower())
        self.index += 1
        return token

    def clause(self, word: str, fields: dict[str, object]) -> None:
        if word == "where":
            self.skip_condition()
        elif word == "facet":
            fields["facets"] = self.facet_attributes()
        elif word == "limit":
            fields["limit"] = 5000 if self.accept("max") else self.integer()
        elif word == "timeseries":
            fields["step_seconds"] = self.duration_seconds()
        elif word in ("since", "until"):
            self.time_clause(word, fields)
        elif word == "with":  # WITH TIMEZONE 'zone' only changes relative words and dates
            self.expect("timezone")
            if (zone := self.take()).kind != "string":
                raise self.error(zone)
        # EXTRAPOLATE changes nothing here.

    def time_clause(self, word: str, fields: dict[str, object]) -> None:
        if word == "until" and self.accept("now"):
            return
        amount = self.integer()
        token = self.peek()
        if token is not None and token.text.lower().removesuffix("s") in UNIT_SECONDS:
            self.index -= 1
            fields[f"{word}_ago_seconds"] = self.duration_seconds()
            self.expect("ago")
        else:
            fields[f"{word}_ms"] = amount

    def skip_condition(self, *, in_funnel: bool = False) -> None:
        """WHERE and the conditions inside percentage()/filter()/funnel() are accepted and
        ignored; a funnel step's condition also ends at `,` or `AS`."""
        depth = 0
        start = self.index
        while (token := self.peek()) is not None:
            ends_condition = token.is_word(*CLAUSES, *UNSUPPORTED_CLAUSES) or token.text == ")"
            ends_condition |= in_funnel and (token.text == "," or token.is_word("as"))
            if depth == 0 and ends_condition:
                break
            depth += {"(": 1, ")": -1}.get(token.text, 0)
            self.index += 1
        if self.index == start:  # an empty condition
            raise self.error(self.take())

    def facet_attributes(self) -> tuple[str, ...]:
        attributes = [self.facet_attribute()]
        while self.accept(","):
            attributes.append(self.facet_attribute())
        if len(attributes) > MAX_FACET_ATTRIBUTES:
            raise NrqlError(f"{SYNTAX}: FACET supports at most {MAX_FACET_ATTRIBUTES} attributes")
        return tuple(attributes)

    def facet_attribute(self) -> str:
        attribute = self.identifier()
        token = self.peek()
        if token is not None and token.text == "(":  # FACET buckets(...), cases(...)
            raise self.error(token)
        return attribute

    def aggregate(self) -> Aggregate:
        aggregate = self.function_call()
        alias = self.alias()
        return aggregate if alias is None else replace(aggregate, key=alias)

    def function_call(self) -> Aggregate:
        name = self.take()
        function = name.text.lower()
        known = SIMPLE_FUNCTIONS.keys() | WRAPPING_FUNCTIONS | {"funnel"}
        if name.kind != "name" or function not in known:
            raise NrqlError(f"{SYNTAX}: Unknown function {name.text}")
        self.expect("(")
        if function == "funnel":
            aggregate = self.funnel_call()
        elif function in WRAPPING_FUNCTIONS:
            aggregate = self.wrapping_call(function)
        else:
            aggregate = self.simple_call(SIMPLE_FUNCTIONS[function])
        self.expect(")")
        return aggregate

    def simple_call(self, function: str) -> Aggregate:
        if function == "count" and self.accept("*"):
            return Aggregate("count", None, "count")
        attribute = self.identifier()
        percentiles: list[str] = []
        while function == "percentile" and self.accept(","):
            token = self.take()
            if token.kind != "number":
                raise self.error(token)
            percentiles.append(percentile_key(token.text))
        if function == "percentile" and not percentiles:
            raise self.error(self.take())
        if function == "median":  # New Relic answers it as the 50th percentile
            percentiles.append("50")
        return Aggregate(function, attribute, f"{function}.{attribute}", tuple(percentiles))

    def funnel_call(self) -> Aggregate:
        """funnel(attribute, WHERE ... [AS 'step name'], WHERE ... [AS ...], ...)."""
        attribute = self.identifier()
        steps: list[str] = []
        while self.accept(","):
            self.expect("where")
            self.skip_condition(in_funnel=True)
            steps.append(self.alias() or "")
        if len(steps) < 2:
            raise NrqlError(f"{SYNTAX}: funnel() takes an attribute and at least two steps")
        return Aggregate("funnel", attribute, f"funnel.{attribute}", steps=tuple(steps))

    def wrapping_call(self, function: str) -> Aggregate:
        inner = self.function_call()
        self.expect(",")
        per_seconds = 0
        if function == "rate":
            per_seconds = self.duration_seconds()
        else:
            self.expect("where")
            self.skip_condition()
        return Aggregate(
            function,
            inner.attribute,
            f"{function}.{inner.key}",
            inner=inner,
            per_seconds=per_seconds,
        )
