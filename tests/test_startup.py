"""What a command costs before its first request: the modules it imports, the migrations it runs.

Each probe is a fresh interpreter (this test process has imported everything already) running
`archiver.cli.main` and reporting which of the watched modules it loaded.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.script import ScriptDirectory

from archiver.state import migrate
from archiver.windows import iso
from tests.e2e import REPO, ago, cli_env, floor
from tests.faults import small_spec

# Modules `run` does without: Alembic (and Mako, its templates) unless the state database needs
# migrating, croniter (schedule), tqdm (a progress bar on a terminal only), influxdb-client
# (InfluxDB 2.x/3.x only), the PostgreSQL dialect on SQLite, the Insights API (a query key),
# dashboards and verify.
NOT_FOR_RUN = (
    "alembic",
    "mako",
    "croniter",
    "tqdm",
    "influxdb_client",
    "sqlalchemy.dialects.postgresql",
    "archiver.newrelic.insights",
    "archiver.dashboards.grafana",
    "archiver.dashboards.importer",
    "archiver.verify.compare",
    "archiver.verify.command",
    "archiver.sinks.readback",
)
PROBE = """
import json, sys
from archiver.cli import main
try:
    code = main(sys.argv[1:])
except SystemExit as exit:
    code = exit.code
print(json.dumps({"code": code, "loaded": sorted(set(WATCHED) & set(sys.modules))}))
"""


def probe(
    args: list[str], env: dict[str, str], cwd: Path, watched: tuple[str, ...] = NOT_FOR_RUN
) -> dict:
    script = f"WATCHED = {list(watched)!r}\n{PROBE}"
    result = subprocess.run(
        [sys.executable, "-c", script, *args], env=env, cwd=cwd,
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.stdout, result.stderr
    *output, last = result.stdout.splitlines()
    report = json.loads(last)
    report["output"] = "\n".join(output) + result.stderr
    return report


def test_the_head_revision_in_code_is_alembics_head():
    """`upgrade` recognises a database at head without Alembic, by HEAD_REVISION: a new
    migration that does not move it fails here."""
    migrate.use_migrations(None)
    script = ScriptDirectory.from_config(migrate._alembic_config())
    assert script.get_heads() == [migrate.HEAD_REVISION]
    assert migrate.head_revision() == script.get_current_head()


def test_run_imports_neither_alembic_nor_what_only_other_commands_use(
    fake_nr, influxd, influx_db, tmp_path
):
    """A new state database, the same one at head, then one at revision 0001: only the last
    needs Alembic, and it is brought to head."""
    queries = tmp_path / "queries"
    queries.mkdir()
    until = floor(ago(minutes=10), 300)
    small_spec("q", influx_db, until).write(queries)
    db_path = tmp_path / "state.db"
    env = cli_env(
        nerdgraph_url=fake_nr.url, api_key=fake_nr.api_key, influx_url=influxd.url,
        db_url=f"sqlite:///{db_path}", queries=queries,
    )  # fmt: skip
    args = ["run", "--since", iso(until - timedelta(hours=1)), "--until", iso(until)]

    for database in ("new", "at head"):
        report = probe(args, env, tmp_path)
        assert report["code"] == 0, (database, report["output"])
        assert report["loaded"] == [], database
        assert "36 points written" in report["output"], database  # 3 series × 12 buckets

    old_path = tmp_path / "old.db"
    engine = migrate.make_engine(f"sqlite:///{old_path}")
    config = migrate._alembic_config()
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, "0001")
    report = probe(args, {**env, "ARCHIVER_DB_URL": f"sqlite:///{old_path}"}, tmp_path)
    assert report["code"] == 0, report["output"]
    assert "alembic" in report["loaded"]
    with engine.connect() as conn:
        assert migrate.current_revision(conn) == migrate.HEAD_REVISION
        assert sa.inspect(conn).has_table("verifications")  # created by 0003
    engine.dispose()


def test_help_does_not_even_import_pydantic(tmp_path):
    """`--help` needs argparse and text: not the settings' pydantic (0.02 s of CPU, not 0.16 s);
    tests/test_cli.py keeps the database and HTTP stacks out of `--help` and `health`."""
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(REPO)}
    report = probe(["--help"], env, tmp_path, ("pydantic", "yaml"))
    assert report["code"] == 0, report["output"]
    assert "ARCHIVER_MIGRATIONS_DIR" in report["output"]  # the environment's epilog
    assert report["loaded"] == []
