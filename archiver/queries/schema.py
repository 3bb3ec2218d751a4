"""A query file as written (pydantic, one key at a time) and the rules that span keys.

`QueryFile`/`_TargetEntry` mirror the YAML and validate each key on its own (extra keys
forbidden; each check raises ValueError with the message the user sees); `resolve` applies the
rules that span keys (target defaults, duplicate targets, tags against facets, accounts, modes)
and builds the public `QueryDef`, or returns every (key, message) problem it found.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    ValidationInfo,
    field_validator,
)

from archiver.queries.model import (
    ACCOUNT_TAG,
    DEFAULT_LAG,
    DEFAULT_MAX_SERIES,
    DEFAULT_NR_RETENTION,
    Mode,
    QueryDef,
    Target,
)
from archiver.queries.names import CONTROL_CHARACTERS, NAME_PATTERN, name_problem
from archiver.queries.nrql import analyse_nrql
from archiver.queries.samples import SAMPLE_COUNT_PREFIX
from archiver.timeparse import influx_duration, parse_duration, parse_time
from archiver.windows import interval_problem

EVENTS_WINDOW = timedelta(hours=1)

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


def _check_measurement(measurement: str) -> str:
    if problem := name_problem(measurement):
        raise ValueError(f"measurement {problem}")
    if measurement.startswith("_"):
        raise ValueError(f"{measurement!r}: InfluxDB reserves measurement names starting with '_'")
    return measurement


def _check_influx_name(name: str) -> str:
    if not name or CONTROL_CHARACTERS.search(name):
        raise ValueError(f"{name!r} must be a non-empty name without control characters")
    return name


def _check_tag_key(key: str) -> str:
    if problem := name_problem(key):
        raise ValueError(f"tag name {problem}")
    return key


def _tag_value(value: Any) -> str:
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, str | int | float | date):
        text = value.isoformat() if isinstance(value, date) else str(value)
    else:
        raise ValueError(f"a tag value must be a single text or number, not {value!r}")
    if not text or CONTROL_CHARACTERS.search(text):
        raise ValueError(f"{text!r}: a tag value must be non-empty text without control characters")
    return text


def _interval(value: Any) -> timedelta:
    interval = parse_duration(value)
    problem = interval_problem(interval)
    if problem:
        raise ValueError(f"{value!r} {problem}")
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


class QueryFile(BaseModel):
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


QUERY_KEYS = tuple(QueryFile.model_fields)
TARGET_KEYS = tuple(_TargetEntry.model_fields)


# ---------------------------------------------------------------------------------------------
# Rules across keys
# ---------------------------------------------------------------------------------------------

_Problem = tuple[str | None, str]  # (key, message)


def resolve(raw: QueryFile, path: Path) -> tuple[QueryDef | None, list[_Problem]]:
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


def _account_problems(raw: QueryFile) -> list[_Problem]:
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


def _mode_problems(raw: QueryFile) -> list[_Problem]:
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


def _answer_gap_problems(raw: QueryFile) -> list[_Problem]:
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


def _resolve_targets(raw: QueryFile) -> tuple[tuple[Target, ...], list[_Problem]]:
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
    raw: QueryFile, entry: _TargetEntry, here: str
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


def _writes_to_top_level_policy(raw: QueryFile, target: Target) -> bool:
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


def _tag_facet_collisions(raw: QueryFile) -> list[_Problem]:
    facets = set(analyse_nrql(raw.nrql).facets)
    return [
        (f"tags.{key}", f"'{key}' is also a FACET attribute: a static tag would overwrite it")
        for key in raw.tags
        if key in facets
    ]
