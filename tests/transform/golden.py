"""Golden cases: tests/transform/cases/<name>/{response.json, query.yaml, expected.lp}.

See cases/README.md for the format. `render(case)` runs a case through the archiver's own path
(the Insights converter when `api: insights`, the funnel step names from the NRQL, the events
transform for `mode: events`) and returns its lines, precision and dropped keys.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from archiver.newrelic.insights import to_nerdgraph_rows
from archiver.pipeline import events, transform
from archiver.queries.funnels import funnel_steps

CASES = Path(__file__).parent / "cases"


@dataclass
class Rendered:
    lines: list[str]
    precision: str  # "s" (aggregates) or "ns" (events)
    dropped: set[str]
    query: dict[str, Any]


def names() -> list[str]:
    return sorted(p.name for p in CASES.iterdir() if p.is_dir())


def render(case: str) -> Rendered:
    folder = CASES / case
    response = json.loads((folder / "response.json").read_text(encoding="utf-8"))
    query = yaml.safe_load((folder / "query.yaml").read_text(encoding="utf-8"))
    rows, facets = _rows(response, query.get("api", "nerdgraph"))
    dropped: set[str] = set()
    if query.get("mode") == "events":
        lines = events.to_lines(
            rows, query["measurement"], query.get("tag_attributes", []), query["tags"],
            dropped=dropped,
        )  # fmt: skip
        return Rendered(lines, "ns", dropped, query)
    if "bucket_begin" in query:  # recorded without TIMESERIES: the bucket's start is supplied
        rows = [{"beginTimeSeconds": query["bucket_begin"], **row} for row in rows]
    lines = transform.to_lines(
        rows, facets, query["measurement"], query["tags"],
        funnels=funnel_steps(query.get("nrql", "")), dropped=dropped,
    )  # fmt: skip
    return Rendered(lines, "s", dropped, query)


def expected(case: str) -> list[str]:
    return (CASES / case / "expected.lp").read_text(encoding="utf-8").splitlines()


def _rows(response: dict[str, Any], api: str) -> tuple[list[dict], list[str]]:
    if api == "insights":
        rows, facets = to_nerdgraph_rows(response)
        return rows, list(facets)
    if "data" in response:  # a whole NerdGraph answer
        nrql = response["data"]["actor"]["account"]["nrql"]
        return nrql["results"], list(nrql["metadata"].get("facets") or [])
    return response["results"], response["facets"]  # `results` + `metadata.facets` only
