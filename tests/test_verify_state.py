"""The last verify per (query, target) in the state database, and the migration that adds it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from alembic import command

from archiver.state import migrate
from archiver.state.store import State
from archiver.state.verifications import VerifyRecord

NOW = datetime(2026, 11, 29, 3, 30, tzinfo=UTC)


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'state.db'}"
    url = request.getfixturevalue("postgres_url")
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
    engine.dispose()
    return url


def record(**changes) -> VerifyRecord:
    values = dict(
        query="q", target="db.rp", verified_at=NOW, status="differs", since=NOW - timedelta(days=1),
        until=NOW, windows=3, checked=160, missing=14, different=1, extra=1, repaired=0,
        pruned=0, remaining=16, error=None,
    )  # fmt: skip
    return VerifyRecord(**{**values, **changes})


def test_a_db_written_at_the_previous_revision_keeps_its_state_and_gains_verifications(db_url):
    engine = migrate.make_engine(db_url)
    config = migrate._alembic_config()
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, "0002")
        conn.execute(
            sa.text(
                "INSERT INTO checkpoints (query, target, exported_until, updated_at) "
                "VALUES ('q', 'db.rp', 1795900000, 1795900001)"
            )
        )
        conn.execute(
            sa.text(
                "INSERT INTO backfills (id, query, target, since_spec, until_spec, range_since, "
                "range_until, status, started_at, updated_at) VALUES (7, 'q', 'db.rp', '1h', "
                "'now', 1795000000, 1795007200, 'open', 1795000000, 1795003601)"
            )
        )
        conn.execute(
            sa.text(
                "INSERT INTO backfill_progress (query, target, since, until, updated_at, "
                "backfill_id) VALUES ('q', 'db.rp', 1795000000, 1795003600, 1795003601, 7)"
            )
        )
    assert "verifications" not in sa.inspect(engine).get_table_names()
    engine.dispose()

    state = State.open(db_url)
    assert state.is_migrated()
    assert state.checkpoint("q", "db.rp") == datetime.fromtimestamp(1795900000, UTC)
    assert state.backfill_done("q", "db.rp", ("1h", "now")) == [
        (datetime.fromtimestamp(1795000000, UTC), datetime.fromtimestamp(1795003600, UTC))
    ]
    state.record_verify(record())
    assert state.latest_verifies() == {("q", "db.rp"): record()}
    state.engine.dispose()


def test_only_the_last_verify_is_kept(db_url):
    state = State.open(db_url)
    state.record_verify(record())
    state.record_verify(record(verified_at=NOW + timedelta(days=1), status="ok", remaining=0,
                               repaired=15, pruned=1))  # fmt: skip
    state.record_verify(record(target="db", status="failed", since=None, until=None,
                               error="NRQL Syntax Error"))  # fmt: skip
    latest = state.latest_verifies()
    assert latest[("q", "db.rp")].status == "ok"
    assert latest[("q", "db.rp")].verified_at == NOW + timedelta(days=1)
    assert latest[("q", "db")].error == "NRQL Syntax Error"
    state.engine.dispose()
