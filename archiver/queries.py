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
    ValidationError,
    ValidationInfo,
    computed_field,
    field_validator,
)

from archiver.errors import ConfigError
from archiver.events import epoch_ms, events_nrql
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
    tags: dict[str, str] = Field(default_factory=dict)
    nr_retention: timedelta = DEFAULT_NR_RETENTION
    max_series: int = DEFAULT_MAX_SERIES
    description: str | None = None
    mode: Mode = "aggregate"
    tag_attributes: tuple[str, ...] = ()  # events mode: attributes that become tags

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
            f"{self._shape.sendable}{limit} SINCE {since_ms} UNTIL {until_ms}"
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
    return [f"the archiver owns time: remove {listed}"]


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
    tags: dict[TagKey, TagValue] = Field(default_factory=dict)
    nr_retention: PositiveDuration = DEFAULT_NR_RETENTION
    max_series: Annotated[int, Field(strict=True, ge=1)] = DEFAULT_MAX_SERIES
    mode: Mode = "aggregate"
    tag_attributes: list[TagKey] | None = None

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
    problems += _mode_problems(raw)
    if problems:
        return None, problems
    settings = raw.model_dump(include=_QUERY_SETTINGS)
    tag_attributes = tuple(raw.tag_attributes or ())
    return QueryDef(
        name=name, path=path, targets=targets, tag_attributes=tag_attributes, **settings
    ), []


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


# keys of a query file that pass to QueryDef unchanged (the others make up the targets)
_QUERY_SETTINGS = {
    "description", "nrql", "measurement", "lag", "lookback", "start",
    "account_id", "tags", "nr_retention", "max_series", "mode",
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
