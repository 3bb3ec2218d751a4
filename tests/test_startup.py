"""What a command costs before its first request: the modules it imports, the migrations it runs.

Each probe is a fresh interpreter (this test process has imported everything already).
"""

from __future__ import annotations

from alembic.script import ScriptDirectory

from archiver.state import migrate


def test_the_head_revision_in_code_is_alembics_head():
    """`upgrade` recognises a database at head without Alembic, by HEAD_REVISION: a new
    migration that does not move it fails here."""
    migrate.use_migrations(None)
    script = ScriptDirectory.from_config(migrate._alembic_config())
    assert script.get_heads() == [migrate.HEAD_REVISION]
    assert migrate.head_revision() == script.get_current_head()
