"""The step names of each `funnel()` in a query's NRQL, so every step gets a field of its own.

New Relic answers a funnel bucket as `{"steps": [112, 94, 8]}`: counts in step order, without
names. The names are in the NRQL:

    SELECT funnel(session, WHERE page = 'home' AS 'Home', WHERE page = 'buy' AS 'Buy') FROM T

gives `{"funnel.session": ("Home", "Buy")}`; a step without `AS` is named `step<N>` (1-based),
and `funnel(...) AS 'x'` keys the funnel `x`, as New Relic keys any aliased aggregate. The text
is scanned, not fully parsed: commas and parentheses inside quotes or nested calls are skipped.
"""

from __future__ import annotations

import re

_FUNNEL = re.compile(r"\bfunnel\s*\(", re.IGNORECASE)
_STEP_ALIAS = re.compile(r"\bAS\s+(?:'((?:[^']|'')*)'|`([^`]*)`|\"([^\"]*)\"|(\w+))\s*$", re.I)
_FUNNEL_ALIAS = re.compile(r"\s*AS\s+(?:'((?:[^']|'')*)'|`([^`]*)`|\"([^\"]*)\"|([\w.]+))", re.I)


def step_name(position: int) -> str:
    """The name of an unnamed step (1-based position)."""
    return f"step{position}"


def funnel_steps(nrql: str) -> dict[str, tuple[str, ...]]:
    """Result key → step names, for every `funnel(...)` in `nrql`, in NRQL order."""
    funnels: dict[str, tuple[str, ...]] = {}
    for match in _FUNNEL.finditer(nrql):
        end = _closing_paren(nrql, match.end())
        if end is None:
            continue
        arguments = _split_top_level(nrql[match.end() : end])
        if len(arguments) < 2:
            continue
        attribute, steps = arguments[0].strip(), arguments[1:]
        names = tuple(_alias(step) or step_name(i) for i, step in enumerate(steps, start=1))
        alias = _FUNNEL_ALIAS.match(nrql, end + 1)
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


def _closing_paren(text: str, start: int) -> int | None:
    """Index of the `)` that closes the `(` just before `start`."""
    depth, quote = 1, None
    for index in range(start, len(text)):
        char = text[index]
        if quote:
            if char == quote:
                quote = None
        elif char in "'`\"":
            quote = char
        elif char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
            if depth == 0:
                return index
    return None


def _split_top_level(text: str) -> list[str]:
    """Split on commas outside quotes and parentheses."""
    parts, depth, quote, current = [], 0, None, []
    for char in text:
        if quote:
            if char == quote:
                quote = None
        elif char in "'`\"":
            quote = char
        elif char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        elif char == "," and depth == 0:
            parts.append("".join(current))
            current = []
            continue
        current.append(char)
    parts.append("".join(current))
    return parts
