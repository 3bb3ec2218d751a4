"""Fixtures shared by the test modules."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.influxd import InfluxServer, running_influxd, unique_database_name


@pytest.fixture(scope="session")
def influxd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InfluxServer]:
    """A real influxd 1.6.7 for the whole session, without auth."""
    with running_influxd(tmp_path_factory.mktemp("influxd")) as server:
        yield server


@pytest.fixture(scope="session")
def influxd_auth(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InfluxServer]:
    """A real influxd with `auth-enabled = true` and an admin user (`admin_username`...)."""
    with running_influxd(tmp_path_factory.mktemp("influxd_auth"), with_auth=True) as server:
        yield server


@pytest.fixture
def influx_db(influxd: InfluxServer) -> Iterator[str]:
    """A fresh database name (not created); dropped after the test."""
    name = unique_database_name()
    yield name
    influxd.start()  # a no-op unless the test left it stopped
    influxd.query(f'DROP DATABASE "{name}"')
