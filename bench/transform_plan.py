"""A prototype for the next round (issue 16): `transform.to_lines` with a field plan per row shape.

Not used by the archiver. `python bench/transform_plan.py` checks that it writes exactly the
lines of `archiver.pipeline.transform.to_lines` on every aggregate row of the matrix, and
compares their speed (CPU time of one thread, best of 5) on 200,000 rows of each shape.

What it changes, in `archiver/transform.py` terms:
1. Field plan: the rows of one answer share their keys (and their order). The keys of a row
   (`tuple(row)`, one C call) select a plan computed once: the field keys with their escaped
   `key=`. The row loop then reads only the fields, instead of looking up and skipping the
   facet attributes, `facet`, `beginTimeSeconds` and `endTimeSeconds` one by one.
2. Facet key: a multi-facet row's key for the tag-prefix cache is `tuple(facet)` when every
   value is a string (hashable and cheap), instead of `(repr(facet),)`; other values keep the
   repr key (so 1, 1.0 and True stay apart).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from archiver.pipeline import transform
from archiver.pipeline.transform import _nested, _number_or_other, _tag_part, escape_key, shape

Plan = tuple[tuple[str, str], ...]


def to_lines(
    rows: Iterable[Mapping[str, object]],
    facets: Sequence[str],
    measurement: str,
    static_tags: Mapping[str, str],
) -> list[str]:
    s = shape(measurement, facets, static_tags)
    plans: dict[tuple[str, ...], Plan] = {}
    nested_names: dict[tuple[str, str], str] = {}
    prefixes: dict[object, str] = {}
    lines: list[str] = []
    append = lines.append
    for row in rows:
        keys = tuple(row)
        plan = plans.get(keys)
        if plan is None:
            plan = plans[keys] = tuple(
                (key, escape_key(key) + "=") for key in keys if key not in s.excluded
            )
        parts: list[str] = []
        for key, name in plan:
            value = row[key]
            kind = type(value)
            if kind is float:
                if value - value == 0.0:
                    parts.append(name + repr(value))
            elif kind is int:
                parts.append(name + repr(float(value)))
            elif kind is dict:
                _nested(key, value, nested_names, parts)
            else:
                _number_or_other(name, value, parts)
        if not parts:
            continue
        facet = row.get("facet")
        kind = type(facet)
        if kind is str:
            facet_key: object = facet
        elif kind is list and all(type(value) is str for value in facet):
            facet_key = tuple(facet)
        else:
            facet_key = (repr(facet),)
        prefix = prefixes.get(facet_key)
        if prefix is None:
            prefix = prefixes[facet_key] = f"{s.measurement}{_tag_part(s, row)} "
        append(f"{prefix}{','.join(parts)} {int(row['beginTimeSeconds'])}")
    return lines


def _cpu(function, answers, repeats: int = 5) -> float:
    best = float("inf")
    for _ in range(repeats):
        started = time.thread_time()
        for rows, facets in answers:
            function(rows, facets, "m", {"env": "prod"})
        best = min(best, time.thread_time() - started)
    return best


def main() -> int:
    from bench import matrix
    from fakes import data

    until = int(datetime(2026, 11, 1, tzinfo=UTC).timestamp()) * 1000
    for shape_ in matrix.SHAPES:
        if shape_.key in ("g", "live") or shape_.query.get("mode") == "events":
            continue
        nrql = str(shape_.query["nrql"])
        facets = nrql.partition(" FACET ")[2]
        rows_per_bucket = 5000 if "5000" in nrql else (100 if facets else 1)
        buckets = max(1, min(366, 20_000 // rows_per_bucket))
        answers = []
        since = until - 10 * buckets * 60_000
        for start in range(since, until, buckets * 60_000):
            limit = " LIMIT MAX" if facets else ""
            answer = data.answer(
                f"{nrql}{limit} SINCE {start} UNTIL {start + buckets * 60_000} TIMESERIES 1 minute",
                now=until / 1000 + 3600,
                retention_seconds=timedelta(days=3650).total_seconds(),
            )
            answers.append((answer.results, answer.metadata.get("facets") or ()))
        for rows, names in answers:
            expected = transform.to_lines(rows, names, "m", {"env": "prod"})
            assert to_lines(rows, names, "m", {"env": "prod"}) == expected, shape_.key
        count = sum(len(rows) for rows, _ in answers)
        today, planned = _cpu(transform.to_lines, answers), _cpu(to_lines, answers)
        print(
            f"({shape_.key}) {count:,} rows: transform {today / count * 1e6:.2f} us/row, "
            f"prototype {planned / count * 1e6:.2f} us/row ({1 - planned / today:.0%} less)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
