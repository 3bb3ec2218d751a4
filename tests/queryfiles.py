"""Query files for tests: a valid file's keys, and loading one file with a fixed `now`."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from archiver.queries import LoadResult, QueryDef
from archiver.queries.load import load_files

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
VALID: dict[str, Any] = {
    "nrql": "SELECT average(duration), count(*) FROM Transaction FACET appName, host",
    "measurement": "nr_transaction",
    "interval": "1 minute",
    "database": "newrelic",
    "retention_policy": "raw_30d",
}


def write(folder: Path, content: dict[str, Any] | str, file_name: str = "q.yaml") -> Path:
    path = folder / file_name
    text = content if isinstance(content, str) else yaml.safe_dump(content, sort_keys=False)
    path.write_text(text, encoding="utf-8")
    return path


def load(folder: Path, content: dict[str, Any] | str, file_name: str = "q.yaml") -> LoadResult:
    return load_files([write(folder, content, file_name)], now=NOW)


def only_query(folder: Path, **changes: Any) -> QueryDef:
    result = load(folder, {**VALID, **changes})
    assert result.problems == []
    [query] = result.queries
    return query


def problem_lines(folder: Path, content: dict[str, Any] | str, file_name: str = "q.yaml") -> str:
    result = load(folder, content, file_name)
    assert result.queries == []
    assert result.problems, "expected at least one problem"
    return "\n".join(str(problem) for problem in result.problems)


def without(*keys: str) -> dict[str, Any]:
    return {key: value for key, value in VALID.items() if key not in keys}
