"""Self-monitoring: one `nr_archiver` point per job, written next to the data it describes.

A Grafana alert on `lag_seconds` (or on `failed`) fires when archiving stalls; the README has a
ready query. Every field is a float, like the archived data, so types never conflict.
"""

from __future__ import annotations

from datetime import datetime

from archiver import lineprotocol

MEASUREMENT = "nr_archiver"


def job_line(
    *,
    query: str,
    target: str,
    kind: str,
    status: str,
    points: int,
    windows: int,
    nr_requests: int,
    retries: int,
    seconds: float,
    inspected: int = 0,
    exported_until: datetime | None,
    now: datetime,
    dropped_keys: int = 0,
    nr_messages: int = 0,
    facet_limit_hit: int = 0,
) -> str:
    tags = {"kind": kind, "query": query, "status": status, "target": target}
    fields = {
        "points": points,
        "windows": windows,
        "nr_requests": nr_requests,
        "retries": retries,
        "inspected": inspected,
        "seconds": seconds,
        "failed": 1 if status == "failed" else 0,
        "dropped_keys": dropped_keys,  # answer keys left out for want of a line-protocol form
        "nr_messages": nr_messages,  # distinct warnings New Relic sent about the query
        "facet_limit_hit": facet_limit_hit,  # answers with as many facets as the LIMIT
    }
    if exported_until is not None:
        fields["lag_seconds"] = (now - exported_until).total_seconds()
    return lineprotocol.point(MEASUREMENT, tags, fields, int(now.timestamp()))
