"""`nr-archiver import dashboard`: a New Relic dashboard's widget queries → query files.

`plan()` is pure: a dashboard entity (as NerdGraph answers it) in, the files to write and the
widgets left out (with the reason) out. Every planned file has been loaded by the real query
file loader first, so `validate` accepts whatever is written; a widget that would not pass is
listed instead, never written half-right. `write()` refuses to overwrite without `force`,
before writing anything.
"""

from __future__ import annotations

import json
import re
import tempfile
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from archiver.dashboards import DEFAULT_DATABASE
from archiver.dashboards.nrql_clean import NotArchivable, clean
from archiver.errors import ConfigError
from archiver.newrelic.nerdgraph import NerdGraphClient
from archiver.queries.load import QUERY_FILE_PATTERNS, load_file, load_files
from archiver.settings import Settings
from archiver.timeparse import format_duration

SLUG_MAX = 60
BILLBOARD = "viz.billboard"
MARKDOWN = "viz.markdown"


@dataclass(frozen=True)
class Options:
    out: Path
    database: str = DEFAULT_DATABASE
    retention_policy: str | None = None
    page: str | None = None


@dataclass(frozen=True)
class Skipped:
    page: str
    widget: str
    reason: str

    def __str__(self) -> str:
        return f"page {self.page!r}, widget {self.widget!r}: {self.reason}"


@dataclass(frozen=True)
class PlannedFile:
    path: Path
    name: str
    text: str  # the YAML written
    replaces: bool  # the file exists (an earlier import of the same widget query)


@dataclass
class Plan:
    dashboard: str
    guid: str
    files: list[PlannedFile] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)


def fetch_and_plan(settings: Settings, guid: str, options: Options) -> Plan:
    """Read the dashboard through NerdGraph (user key needed) and plan its query files."""
    if not settings.new_relic_api_key:
        raise ConfigError(
            "NEW_RELIC_API_KEY is not set: reading a dashboard needs a New Relic user key "
            "(NRAK-...) for NerdGraph; an Insights query key cannot read dashboards"
        )
    with NerdGraphClient(
        settings.nerdgraph_url,
        settings.new_relic_api_key,
        timeout=settings.nerdgraph_timeout,
        backoff_base=settings.retry_base_seconds,
    ) as client:
        entity = client.dashboard(guid)
    return plan(entity, guid, options)


def plan(entity: dict[str, Any], guid: str, options: Options) -> Plan:
    """The files for every archivable widget query of the dashboard (or of one page)."""
    name = str(entity.get("name") or guid)
    pages = [page for page in entity.get("pages") or [] if isinstance(page, dict)]
    if options.page is not None:
        pages = [page for page in pages if page.get("name") == options.page]
        if not pages:
            known = ", ".join(repr(p.get("name")) for p in entity.get("pages") or []) or "none"
            raise ConfigError(f"dashboard {name!r} has no page {options.page!r}; pages: {known}")
    result = Plan(name, guid)
    names = _ExistingNames.read(options.out)
    for page in pages:
        page_name = str(page.get("name") or "")
        for widget in page.get("widgets") or []:
            _plan_widget(result, page_name, widget, options, names)
    return result


def write(plan: Plan, *, force: bool) -> list[Path]:
    """Write the planned files; without `force`, refuse (before writing) if one exists."""
    existing = [f.path for f in plan.files if f.path.exists()]
    if existing and not force:
        listed = ", ".join(str(path) for path in existing)
        raise ConfigError(
            f"{len(existing)} file(s) already exist: {listed}; "
            "use --force to overwrite them, or --out for another folder"
        )
    written = []
    for planned in plan.files:
        try:
            planned.path.parent.mkdir(parents=True, exist_ok=True)
            planned.path.write_text(planned.text, encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot write {planned.path}: {exc.strerror}") from None
        written.append(planned.path)
    return written


# -- one widget ----------------------------------------------------------------------------


def _plan_widget(
    result: Plan, page: str, widget: Any, options: Options, names: _ExistingNames
) -> None:
    widget = widget if isinstance(widget, dict) else {}
    title = str(widget.get("title") or "")
    visualization = str((widget.get("visualization") or {}).get("id") or "")
    label = title or f"untitled {visualization or 'widget'}"
    raw = _raw_configuration(widget.get("rawConfiguration"))
    nrql_queries = [q for q in raw.get("nrqlQueries") or [] if isinstance(q, dict)]
    if visualization == MARKDOWN:
        result.skipped.append(Skipped(page, label, "markdown text, no query"))
        return
    if not nrql_queries:
        reason = f"no NRQL query (visualization {visualization or 'unknown'})"
        result.skipped.append(Skipped(page, label, reason))
        return
    for index, nrql_query in enumerate(nrql_queries):
        where = label if len(nrql_queries) == 1 else f"{label} (query {index + 1})"
        try:
            planned = _file_for_query(
                result, page, title, visualization, nrql_query, options, names
            )
        except NotArchivable as exc:
            result.skipped.append(Skipped(page, where, str(exc)))
            continue
        result.files.append(planned)


def _file_for_query(
    result: Plan,
    page: str,
    title: str,
    visualization: str,
    nrql_query: dict[str, Any],
    options: Options,
    names: _ExistingNames,
) -> PlannedFile:
    nrql = nrql_query.get("query")
    if not isinstance(nrql, str) or not nrql.strip():
        raise NotArchivable("the widget query has no NRQL text")
    cleaned = clean(nrql)
    if visualization == BILLBOARD and cleaned.compare_with and not cleaned.timeseries:
        raise NotArchivable(
            "a billboard that compares with an earlier period (COMPARE WITH): what it shows is "
            "the comparison, which has no time series to archive"
        )
    accounts = _accounts(nrql_query)
    base = _slug(f"{page} {title or visualization or 'widget'}")
    description = (
        f"From New Relic dashboard {result.dashboard!r} ({result.guid}), page {page!r}, "
        f"widget {title!r}"
    )
    content: dict[str, Any] = {
        "description": description,
        "nrql": cleaned.nrql,
        "interval": format_duration(cleaned.interval),
        "database": options.database,
    }
    if options.retention_policy:
        content["retention_policy"] = options.retention_policy
    if len(accounts) > 1:  # one job per account, each point tagged account_id=<id>
        content["account_ids"] = _FlowList(accounts)
    elif accounts:
        content["account_id"] = accounts[0]
    name, path, replaces = names.claim(base, description, options.out)
    content = {"name": name, **content, "measurement": name}
    text = _yaml(content, nrql)
    try:
        _check_loads(path.name, text)
    except NotArchivable:
        names.claimed.discard(name)
        raise
    return PlannedFile(path, name, text, replaces)


def _raw_configuration(raw: Any) -> dict[str, Any]:
    if isinstance(raw, str):  # a JSON scalar: NerdGraph may hand it over as text
        try:
            raw = json.loads(raw)
        except ValueError:
            return {}
    return raw if isinstance(raw, dict) else {}


def _accounts(nrql_query: dict[str, Any]) -> list[int]:
    """`accountIds` (a list), else the older `accountId`; 0 (a template placeholder) is none."""
    ids = nrql_query.get("accountIds")
    if ids is None:
        ids = [nrql_query.get("accountId")]
    if not isinstance(ids, list):
        ids = [ids]
    accounts = [i for i in ids if type(i) is int and i > 0]
    return list(dict.fromkeys(accounts))


def _slug(text: str) -> str:
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9]+", "_", ascii_text.lower()).strip("_")
    return slug[:SLUG_MAX].rstrip("_") or "widget"


def _yaml(content: dict[str, Any], original_nrql: str) -> str:
    header = "# Written by `nr-archiver import dashboard`. The widget's NRQL was:\n" + "".join(
        f"#   {line}\n" for line in original_nrql.strip().splitlines()
    )
    return header + yaml.dump(
        content, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=100
    )


class _FlowList(list):
    """A list written inline, `account_ids: [1, 2]`, as the README shows it."""


class _Dumper(yaml.SafeDumper):
    pass


_Dumper.add_representer(
    _FlowList, lambda dumper, data: dumper.represent_sequence("tag:yaml.org,2002:seq", data, True)
)


def _check_loads(file_name: str, text: str) -> None:
    """Load the file exactly as `validate` would; a problem makes the widget unarchivable."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / file_name
        path.write_text(text, encoding="utf-8")
        query, problems = load_file(path, now=datetime.now(UTC))
    if problems or query is None:
        raise NotArchivable("; ".join(_without_path(str(p), path) for p in problems))


def _without_path(message: str, path: Path) -> str:
    return message.removeprefix(f"{path}: ").removeprefix(f"{path} ")


# -- names -----------------------------------------------------------------------------------


@dataclass
class _ExistingNames:
    """Query names already taken in the output folder, and what each file describes."""

    descriptions: dict[str, str | None]  # query name → its description
    paths: dict[str, Path]  # query name → its file
    stems: set[str]  # file stems present, whether or not they load
    claimed: set[str] = field(default_factory=set)

    @classmethod
    def read(cls, folder: Path) -> _ExistingNames:
        if not folder.is_dir():
            return cls({}, {}, set())
        paths = sorted(_query_files(folder))
        loaded = load_files(paths)
        descriptions = {q.name: q.description for q in loaded.queries}
        by_name = {q.name: q.path for q in loaded.queries}
        for problem in loaded.problems:
            if problem.query:
                descriptions.setdefault(problem.query, None)
                by_name.setdefault(problem.query, problem.path)
        return cls(descriptions, by_name, {path.stem for path in paths})

    def claim(self, base: str, description: str, folder: Path) -> tuple[str, Path, bool]:
        """A unique name for `base`: itself, or with _2, _3...; the same widget query imported
        before keeps its name and file (returned with replaces=True)."""
        for number in range(1, 10_000):
            name = base if number == 1 else f"{base}_{number}"
            if name in self.claimed:
                continue
            if self.descriptions.get(name, "") == description:  # an earlier import of it
                self.claimed.add(name)
                return name, self.paths[name], True
            if name in self.descriptions or name in self.stems:
                continue
            self.claimed.add(name)
            return name, folder / f"{name}.yaml", False
        raise ConfigError(f"no free query name for {base!r} in {folder}")


def _query_files(folder: Path) -> Iterable[Path]:
    for pattern in QUERY_FILE_PATTERNS:
        yield from (p for p in folder.glob(pattern) if not p.name.startswith("."))
