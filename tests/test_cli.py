"""Usage errors: exit code 2 and one line, before anything is touched; a light start-up."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from archiver.arguments import build_parser
from archiver.cli import main

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("option", ["--workers", "--max-concurrent", "--requests-per-minute"])
def test_counts_must_be_positive(option, capsys):
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(["run", option, "0"])
    assert exit_info.value.code == 2
    assert "'0' is not a whole number of at least 1" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param(["run", "--until", "1h"], "--until needs --since", id="until-alone"),
        pytest.param(
            ["run", "--since", "1h", "--until", "2h"], "is not after --since", id="until-first"
        ),
        pytest.param(["run", "--since", "yesterday"], "yesterday", id="bad-time"),
    ],
)
def test_bad_backfill_ranges_are_usage_errors(args, message, tmp_path, monkeypatch, capsys):
    (tmp_path / "q.yaml").write_text(
        "nrql: SELECT count(*) FROM T\nmeasurement: m\ninterval: 1m\ndatabase: d\n"
    )
    monkeypatch.setenv("ARCHIVER_QUERIES_DIR", str(tmp_path))
    monkeypatch.setenv("ARCHIVER_DB_URL", f"sqlite:///{tmp_path / 'state.db'}")
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("nr-archiver: error: ") and message in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "state.db").exists()


def test_missing_api_key_is_a_usage_error(tmp_path, monkeypatch, capsys):
    (tmp_path / "q.yaml").write_text(
        "nrql: SELECT count(*) FROM T\nmeasurement: m\ninterval: 1m\ndatabase: d\n"
    )
    monkeypatch.setenv("ARCHIVER_QUERIES_DIR", str(tmp_path))
    for variable in ("NEW_RELIC_API_KEY", "NEW_RELIC_QUERY_KEY"):
        monkeypatch.delenv(variable, raising=False)
    assert main(["run"]) == 2
    assert "NEW_RELIC_API_KEY is not set" in capsys.readouterr().err


def test_health_without_a_scheduler_heartbeat_is_unhealthy(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ARCHIVER_HEARTBEAT_FILE", str(tmp_path / "no-heartbeat"))
    assert main(["health"]) == 1
    assert "no-heartbeat" in capsys.readouterr().out


HEAVY_MODULES = ("sqlalchemy", "alembic", "requests", "influxdb_client", "yaml", "tqdm")
PROBE = """
import json, sys
from archiver.cli import main
try:
    code = main(sys.argv[1:])
except SystemExit as exit:
    code = exit.code
loaded = sorted({name.split(".")[0] for name in sys.modules} & set(HEAVY))
print(json.dumps({"code": code, "loaded": loaded}))
"""


@pytest.mark.parametrize(
    ("args", "code"), [(["--help"], 0), (["health"], 1)], ids=["help", "health"]
)
def test_help_and_health_import_no_heavy_module(args, code, tmp_path):
    """The container runs `health` every 30 s: it must not load the database or HTTP stack.

    A fresh interpreter, because this test process has imported everything already.
    """
    env = {
        "PATH": os.environ["PATH"],
        "PYTHONPATH": str(REPO),
        "ARCHIVER_HEARTBEAT_FILE": str(tmp_path / "no-heartbeat"),
    }
    probe = f"HEAVY = {list(HEAVY_MODULES)!r}\n{PROBE}"
    result = subprocess.run(
        [sys.executable, "-c", probe, *args], env=env, cwd=tmp_path,
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    report = json.loads(result.stdout.splitlines()[-1])
    assert report == {"code": code, "loaded": []}, result.stderr
