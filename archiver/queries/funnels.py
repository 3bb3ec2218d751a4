"""The step names of each `funnel()` in a query's NRQL, so every step gets a field of its own.

New Relic answers a funnel bucket as `{"steps": [112, 94, 8]}`: counts in step order, without
names. The names are in the NRQL:

    SELECT funnel(session, WHERE page = 'home' AS 'Home', WHERE page = 'buy' AS 'Buy') FROM T

gives `{"funnel.session": ("Home", "Buy")}`; a step without `AS` is named `step<N>` (1-based),
and `funnel(...) AS 'x'` keys the funnel `x`, as New Relic keys any aliased aggregate. The text
is read with the NRQL scanner (`nrql.py`): commas and parentheses inside quotes, comments or
nested calls are skipped.
"""

from __future__ import annotations

import re

from archiver.queries.nrql import comma_separated, flatten, matching_parenthesis, scan

_FUNNEL = re.compile(r"\bfunnel\s*\(", re.IGNORECASE)
_STEP_ALIAS = re.compile(r"\bAS\s+(?:'((?:[^']|'')*)'|`([^`]*)`|\"([^\"]*)\"|(\w+))\s*$", re.I)
_FUNNEL_ALIAS = re.compile(r"\s*AS\s+(?:'((?:[^']|'')*)'|`([^`]*)`|\"([^\"]*)\"|([\w.]+))", re.I)


def step_name(position: int) -> str:
    """The name of an unnamed step (1-based position)."""
    return f"step{position}"


def funnel_steps(nrql: str) -> dict[str, tuple[str, ...]]:
    """Result key → step names, for every `funnel(...)` in `nrql`, in NRQL order."""
    try:
        texts, _ = scan(nrql)
    except ValueError:  # unbalanced quotes or parentheses: no funnel to name
        return {}
    funnels: dict[str, tuple[str, ...]] = {}
    for match in _FUNNEL.finditer(texts.masked):
        start, end = match.end(), matching_parenthesis(texts.masked, match.end() - 1)
        inside = flatten(texts.masked[start:end])  # depth 0 = the funnel's own commas
        arguments = [
            texts.code[start + a : start + b] for a, b in comma_separated(inside, 0, len(inside))
        ]
        if len(arguments) < 2:
            continue
        attribute, steps = arguments[0].strip(), arguments[1:]
        names = tuple(_alias(step) or step_name(i) for i, step in enumerate(steps, start=1))
        alias = _FUNNEL_ALIAS.match(texts.code, end + 1)
        key = _first(alias) if alias else f"funnel.{attribute.strip('`')}"
        funnels[key] = names
    return funnels


def _alias(step: str) -> str | None:
    found = _STEP_ALIAS.search(step.strip())
    return _first(found) if found else None


def _first(match: re.Match[str]) -> str:
    single, backtick, double, bare = match.groups()
    if single is not None:
        return single.replace("''", "'")
    return next(group for group in (backtick, double, bare) if group is not None)
