"""Helpers for the end-to-end tests: run the real CLI, and compute the contract's points.

The expected points are computed from the fake server's data model (`fakes.data.value`),
not from the archiver's transform, so a mistake in the transform cannot hide itself.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import yaml

from fakes import data

REPO = Path(__file__).resolve().parent.parent
ACCOUNT = 1234567  # the fake servers' account


@dataclass(frozen=True)
class Item:
    """One SELECT item, as the test knows it: how New Relic keys it and how to compute it."""

    function: str
    attribute: str | None
    key: str
    percentiles: tuple[str, ...] = ()
    steps: tuple[str, ...] = ()  # funnel(): the step names the fields are named after


@dataclass(frozen=True)
class Spec:
    """A query file for the tests, plus what it means (so the oracle needs no NRQL parser)."""

    name: str
    nrql: str
    event_type: str
    facets: tuple[str, ...]
    items: tuple[Item, ...]
    measurement: str
    interval: str
    interval_seconds: int
    database: str
    retention_policy: str | None = "autogen"
    tags: Mapping[str, str] = field(default_factory=dict)
    extra: Mapping[str, object] = field(default_factory=dict)

    def file_content(self) -> dict:
        content = {
            "nrql": self.nrql,
            "measurement": self.measurement,
            "interval": self.interval,
            "database": self.database,
            **self.extra,
        }
        if self.retention_policy:
            content["retention_policy"] = self.retention_policy
        if self.tags:
            content["tags"] = dict(self.tags)
        return content

    def write(self, folder: Path) -> Path:
        path = folder / f"{self.name}.yaml"
        path.write_text(yaml.safe_dump(self.file_content(), allow_unicode=True), encoding="utf-8")
        return path


def expected_points(spec: Spec, since: datetime, until: datetime) -> dict:
    """{(tags as sorted tuple, epoch seconds): {field: float}} for [since, until)."""
    points = {}
    step = spec.interval_seconds
    start, end = int(since.timestamp()), int(until.timestamp())
    for facet in data.facet_values(spec.event_type, spec.facets):
        tags = dict(spec.tags)
        # InfluxDB cannot store a trailing backslash in a tag: the archiver drops it.
        tags.update({k: v.rstrip("\\") for k, v in zip(spec.facets, facet, strict=True) if v})
        for bucket in range(start, end, step):
            fields = {}
            for item in spec.items:
                for position, name in enumerate(item.steps):
                    count = data.value(
                        spec.event_type, facet, bucket, item.function, item.attribute,
                        str(position), bucket_seconds=step, steps=len(item.steps),
                    )  # fmt: skip
                    fields[f"{item.key}.{name}"] = float(count)
                if item.steps:
                    continue
                if item.percentiles:
                    for pct in item.percentiles:
                        value = data.value(
                            spec.event_type,
                            facet,
                            bucket,
                            item.function,
                            item.attribute,
                            pct,
                            bucket_seconds=step,
                        )
                        if value is not None:
                            fields[f"{item.key}.{pct}"] = float(value)
                    continue
                value = data.value(
                    spec.event_type,
                    facet,
                    bucket,
                    item.function,
                    item.attribute,
                    bucket_seconds=step,
                )
                if value is not None:
                    fields[item.key] = float(value)
            if fields:
                points[(tuple(sorted(tags.items())), bucket)] = fields
    return points


def actual_points(influxd, spec: Spec, rp: str | None = None) -> dict:
    rows = influxd.points(spec.database, spec.measurement, rp or spec.retention_policy)
    return {
        (tuple(sorted(row["tags"].items())), row["time"]): {
            k: v for k, v in row["fields"].items() if v is not None
        }
        for row in rows
    }


def floor(t: datetime, seconds: int) -> datetime:
    epoch = int(t.timestamp())
    return datetime.fromtimestamp(epoch - epoch % seconds, UTC)


@dataclass
class Cli:
    """Runs `python -m archiver` as a real process with the test's environment."""

    env: dict[str, str]
    cwd: Path

    def __call__(self, *args: str, timeout: float = 120, **extra_env: str):
        env = {**self.env, **extra_env}
        return subprocess.run(
            [sys.executable, "-m", "archiver", *args],
            cwd=self.cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def popen(self, *args: str, **extra_env: str) -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, "-m", "archiver", *args],
            cwd=self.cwd,
            env={**self.env, **extra_env},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

    def status(self) -> dict[tuple[str, str], dict]:
        result = self("status", "--json")
        assert result.returncode == 0, result.stderr
        return {(row["query"], row["target"]): row for row in json.loads(result.stdout)}


def cli_env(
    *,
    nerdgraph_url: str,
    api_key: str,
    influx_url: str,
    db_url: str,
    queries: Path,
    account: int = 1234567,
) -> dict[str, str]:
    keep = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "LC_ALL")}
    return {
        **keep,
        "PYTHONPATH": str(REPO),
        "NEW_RELIC_API_KEY": api_key,
        "NEW_RELIC_ACCOUNT_ID": str(account),
        "NEW_RELIC_NERDGRAPH_URL": nerdgraph_url,
        "INFLUX_URL": influx_url,
        "ARCHIVER_DB_URL": db_url,
        "ARCHIVER_QUERIES_DIR": str(queries),
        "ARCHIVER_HEARTBEAT_FILE": str(queries.parent / "heartbeat"),
    }


def parse_iso(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def lines(text: str) -> Sequence[str]:
    return [line for line in text.splitlines() if line.strip()]


def ago(**kwargs: float) -> datetime:
    return datetime.now(UTC) - timedelta(**kwargs)
