"""What InfluxDB accepts as a name: measurements, tag keys, FACET attributes (they become tags)."""

from __future__ import annotations

import re

RESERVED_INFLUX_KEYS = frozenset({"time", "_field", "_measurement"})
NAME_PATTERN = re.compile(r"[A-Za-z0-9_.-]+")
CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f]")


def name_problem(name: str) -> str | None:
    if not name:
        return "must not be empty"
    if CONTROL_CHARACTERS.search(name):
        return "must not contain newlines or other control characters"
    if name in RESERVED_INFLUX_KEYS:
        return f"'{name}' is reserved by InfluxDB"
    if name.endswith("\\"):  # it would escape the separator after it in line protocol
        return "must not end with a backslash (InfluxDB cannot store it)"
    return None
