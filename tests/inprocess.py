"""In-process CLI tests: `archiver.cli.main([...])` with the environment of the e2e tests."""

from __future__ import annotations

import pytest

from archiver.schedule import cron
from tests.e2e import Item, Spec, cli_env


@pytest.fixture
def env(monkeypatch, fake_nr, influxd, queries_dir, state_path) -> dict[str, str]:
    """The environment `Cli` gets (fake NerdGraph, real influxd, SQLite state), set in-process."""
    values = cli_env(
        nerdgraph_url=fake_nr.url,
        api_key=fake_nr.api_key,
        influx_url=influxd.url,
        db_url=f"sqlite:///{state_path}",
        queries=queries_dir,
    )
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(cron, "install_signal_handlers", lambda stop: None)
    return values


def tx(database: str, **extra: object) -> Spec:
    return Spec(
        name="tx",
        nrql="SELECT average(duration), count(*) FROM Transaction FACET appName, host",
        event_type="Transaction",
        facets=("appName", "host"),
        items=(Item("average", "duration", "average.duration"), Item("count", None, "count")),
        measurement="nr_tx",
        interval="1 minute",
        interval_seconds=60,
        database=database,
        extra=extra,
    )
