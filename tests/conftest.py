"""Fixtures shared by the test modules."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import sqlalchemy as sa

from fakes.nerdgraph import FakeNerdGraph
from tests import faults
from tests.clocks import FakeClock
from tests.e2e import ACCOUNT, Cli, cli_env
from tests.influxd import InfluxServer, running_influxd, unique_database_name
from tests.inprocess import InProcessCli

PG_ADMIN_URL = os.environ.get(
    "ARCHIVER_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


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


@contextmanager
def fresh_postgres_database(prefix: str) -> Iterator[str]:
    """The URL of a new, empty PostgreSQL database, dropped afterwards."""
    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    except sa.exc.OperationalError as exc:
        pytest.fail(f"PostgreSQL at {PG_ADMIN_URL} is not reachable: {exc}")
    try:
        yield PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A PostgreSQL database for this test session."""
    with fresh_postgres_database("nr_archiver_test") as url:
        yield url


@pytest.fixture
def fake_nr() -> Iterator[FakeNerdGraph]:
    """The fake NerdGraph server, fresh for each test (its request log starts empty)."""
    with FakeNerdGraph(accounts={ACCOUNT}).start() as server:
        yield server


@pytest.fixture
def queries_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "queries"
    folder.mkdir()
    return folder


@pytest.fixture
def state_path(tmp_path: Path) -> Path:
    return tmp_path / "state.db"


@pytest.fixture
def cli_environment(fake_nr, influxd, queries_dir, state_path) -> dict[str, str]:
    """The environment of `cli`: the fake server, influxd and a SQLite state."""
    return cli_env(
        nerdgraph_url=fake_nr.url,
        api_key=fake_nr.api_key,
        influx_url=influxd.url,
        db_url=f"sqlite:///{state_path}",
        queries=queries_dir,
    )


@pytest.fixture
def cli(cli_environment, tmp_path) -> Cli:
    """The real `python -m archiver` against the fake server, influxd and a SQLite state."""
    return Cli(cli_environment, tmp_path)


@pytest.fixture
def inprocess_cli(cli_environment, tmp_path, monkeypatch, capsys) -> InProcessCli:
    """`cli` in this process: `archiver.cli.main` with the same environment (`popen` still
    starts a process of its own)."""
    return InProcessCli(cli_environment, tmp_path, monkeypatch, capsys)


@pytest.fixture
def fake_time() -> FakeClock:
    """A clock that moves only when someone sleeps on it (or a fake request takes time)."""
    return FakeClock(0.0)


@pytest.fixture
def html_server() -> Iterator[str]:
    """The URL of a web server that is not InfluxDB (200 and an HTML page to everything)."""
    with faults.html_server() as url:
        yield url
