"""Query files (`queries/*.yaml`): read them and turn each into a `QueryDef`, or into problems.

Everything a query file can get wrong is found here, before any network call, and reported
as a `QueryFileProblem` naming the file and the key, on one line. A broken file never stops the
good ones: `load_files` returns both the queries and the problems. YAML is read strictly (a key
given twice is an error); the keys themselves are checked by `schema.py`.
"""

from __future__ import annotations

import difflib
from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from archiver.errors import ConfigError
from archiver.queries.model import QueryDef
from archiver.queries.names import NAME_PATTERN
from archiver.queries.schema import QUERY_KEYS, TARGET_KEYS, QueryFile, resolve

QUERY_FILE_PATTERNS = ("*.yaml", "*.yml")


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
        raw = QueryFile.model_validate(data, context={"now": now})
    except ValidationError as exc:
        return None, [
            QueryFileProblem(path, _key(error["loc"]), _message(error), query_name)
            for error in exc.errors()
        ]
    query, problems = resolve(raw, path)
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
