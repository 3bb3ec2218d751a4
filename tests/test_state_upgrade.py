"""Upgrading a state database written at revision 0001 keeps its checkpoints and progress."""

from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from alembic import command

from archiver.state import migrate
from archiver.state.store import State

NOW = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)
MIN = timedelta(minutes=1)
T = int(NOW.timestamp())


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'state.db'}"
    url = request.getfixturevalue("postgres_url")
    engine = sa.create_engine(url)
    with engine.begin() as conn:  # each test starts from an empty schema
        conn.execute(sa.text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
    engine.dispose()
    return url


def at_0001(url: str) -> sa.Engine:
    """A database as release 0001 left it: a checkpoint, an interrupted backfill of `q` → `t`
    and the rows a finished (resumed) backfill of `done` → `t` failed to forget."""
    engine = migrate.make_engine(url)
    config = migrate._alembic_config()
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, "0001")
    rows = {
        "checkpoints": [dict(query="q", target="t", exported_until=T, updated_at=T)],
        "runs": [
            dict(id=1, kind="backfill", started_at=T, host="h", pid=1),
            dict(id=2, kind="incremental", started_at=T, host="h", pid=1, exit_code=0),
        ],
        "exports": [
            dict(id=1, run_id=1, query="q", target="t", status="running", started_at=T),
            dict(id=2, run_id=1, query="done", target="t", status="ok", started_at=T),
            dict(id=3, run_id=2, query="q", target="t", status="ok", started_at=T),
        ],
        "backfill_progress": [
            dict(query="q", target="t", since=T - 600, until=T - 480, updated_at=T),
            dict(query="q", target="t", since=T - 300, until=T - 240, updated_at=T),
            dict(query="done", target="t", since=T - 600, until=T, updated_at=T),
        ],
    }
    with engine.begin() as conn:
        for table, values in rows.items():
            conn.execute(sa.table(table, *map(sa.column, values[0])).insert(), values)
            if table in ("runs", "exports") and conn.dialect.name == "postgresql":
                conn.execute(sa.text(f"SELECT setval('{table}_id_seq', 10)"))
    return engine


def test_upgrade_from_0001_keeps_checkpoints_and_backfill_progress(db_url):
    at_0001(db_url).dispose()
    state = State.open(db_url)  # upgrades to head

    assert state.is_migrated()
    assert state.checkpoint("q", "t") == NOW
    # The interrupted backfill stays resumable: the next backfill of q → t takes it over.
    expected = [(NOW - 10 * MIN, NOW - 8 * MIN), (NOW - 5 * MIN, NOW - 4 * MIN)]
    assert sorted(state.backfill_done("q", "t", ("1h", "now"))) == expected
    # What a finished backfill left behind never makes a new backfill skip anything.
    assert state.backfill_done("done", "t", ("1h", "now")) == []
    listed = {(b.query, b.done, b.since_spec) for b in state.backfills()}
    assert listed == {("q", False, None), ("done", True, None)}
    with state.engine.connect() as conn:
        kept = conn.execute(sa.text("SELECT count(*) FROM backfill_progress")).scalar()
    assert kept == 3

    # Taken over by a request, it is resumed by that request and done when it completes.
    run = state.start_run("backfill", NOW)
    export = state.start_export(run, "q", "t", NOW)
    rng = (NOW - 10 * MIN, NOW)
    adopted = state.open_backfill(
        "q", "t", ("1h", "now"), rng, holder="h", export_id=export, now=NOW
    )
    assert sorted(state.backfill_done("q", "t", ("1h", "now"))) == expected
    assert state.backfill_done("q", "t", ("2h", "now")) == []
    state.finish_backfill(adopted, NOW)
    assert state.backfill_done("q", "t", ("1h", "now")) == []
