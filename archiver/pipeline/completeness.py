"""What an answer says beyond its rows: which zeros are no data, what LIMIT left out, warnings.

- `drop_unsampled(rows, guards)`: New Relic answers a percentile (or median) of a bucket
  without samples with 0. The NRQL sent asks for the matching sample count too
  (`samples.sample_counts`); where that count is 0 the percentile fields are removed from the
  row, and the helper count itself is always removed: it is never written.
- `other_rows(other, facets)`: `otherResult` (the facets beyond LIMIT, `other: true`) as rows
  whose facet attributes all hold `__other__`, so that the points of a bucket add up to its
  total.
- `facet_keys(rows, facets)`: the distinct facets of an answer, in one pass over its rows: their
  count (as many as the LIMIT means some facets may be missing) and the values the cardinality
  guard checks (`cardinality.SeriesGuard`).
- `messages(metadata)`: New Relic's warnings about the query (`metadata.messages`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from typing import Any

from archiver.queries.model import OTHER_TAG_VALUE
from archiver.queries.samples import SampleGuard

Row = dict[str, Any]


def drop_unsampled(
    rows: Iterable[MutableMapping[str, Any]], guards: Sequence[SampleGuard]
) -> set[str]:
    """Remove guarded fields where their sample count is 0, and every helper count.

    Returns the guarded keys that were never in any row that had the helper: a result key
    the archiver did not predict (the fields are then kept as New Relic sent them).
    """
    if not guards:
        return set()
    unseen = {key for guard in guards for key in guard.guarded}
    for row in rows:
        for guard in guards:
            samples = row.pop(guard.helper, _MISSING)
            if samples is _MISSING:
                continue
            if unseen:
                unseen.difference_update(key for key in guard.guarded if key in row)
            if samples == 0 and type(samples) in _NUMBERS:  # not None, not False
                for key in guard.guarded:
                    row.pop(key, None)
    return unseen


_MISSING = object()
_NUMBERS = (int, float)


def other_rows(other: Any, facets: Sequence[str]) -> list[Row]:
    """otherResult (a list of buckets with TIMESERIES, one object without) as tagged rows."""
    if isinstance(other, Mapping):
        other = [other]
    if not isinstance(other, list) or not facets:
        return []
    labels: Row = {name: OTHER_TAG_VALUE for name in facets}
    labels["facet"] = OTHER_TAG_VALUE if len(facets) == 1 else [OTHER_TAG_VALUE] * len(facets)
    return [{**row, **labels} for row in other if isinstance(row, Mapping)]


@dataclass(frozen=True)
class FacetKeys:
    """The distinct facets of an answer (`facet_keys`)."""

    count: int
    """Distinct facets, type-exact: the facets 1, 1.0, True and "1" are four."""
    values: list[object]
    """One value per distinct facet, as the series guard keys it: the `facet` (a list as a
    tuple), or for a row without one the FACET attribute's value (several as a tuple)."""


def facet_keys(rows: Iterable[Mapping[str, Any]], facets: Sequence[str]) -> FacetKeys:
    """The distinct facets of the rows (by the `facet` key, else by the attributes).

    Runs on every FACET answer, so one pass serves both the LIMIT check and the series guard:
    a text `facet` (nearly every row of a one-attribute FACET) and a list of texts (several
    attributes) are taken as they are; anything else is told apart by its repr, so that values
    Python finds equal but JSON does not (1, 1.0, true) stay distinct.
    """
    texts: set[str] = set()
    text_lists: set[tuple[str, ...]] = set()  # a tuple equal to one of them holds only texts
    others: dict[object, object] = {}  # type-exact key → the guard's value
    single = len(facets) == 1
    for row in rows:
        facet = row.get("facet", _MISSING)
        kind = type(facet)
        if kind is str:
            texts.add(facet)
        elif kind is list:
            values = tuple(facet)
            if values in text_lists:
                continue
            if all(type(value) is str for value in values):
                text_lists.add(values)
            else:
                others[("facet", repr(facet))] = values
        elif facet is not _MISSING:
            others[("facet", repr(facet))] = facet
        else:  # real answers may carry only the attributes
            found = [row.get(name) for name in facets]
            value = found[0] if single else found
            others[("attributes", *map(repr, found))] = (
                tuple(value) if isinstance(value, list) else value
            )
    return FacetKeys(
        len(texts) + len(text_lists) + len(others), [*texts, *text_lists, *others.values()]
    )


def messages(metadata: Any) -> tuple[str, ...]:
    """Every text of `messages` lists in the metadata (NerdGraph: top level; Insights: nested)."""
    found: dict[str, None] = {}
    pending = [metadata]
    while pending:
        node = pending.pop(0)
        if not isinstance(node, Mapping):
            continue
        listed = node.get("messages")
        for message in listed if isinstance(listed, list) else ():
            found[_text(message)] = None
        pending.extend(child for child in node.values() if isinstance(child, Mapping))
    found.pop("", None)
    return tuple(found)


def _text(message: Any) -> str:
    if isinstance(message, Mapping):
        message = message.get("message") or message.get("text") or message
    return " ".join(str(message).split())
