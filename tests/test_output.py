"""What people read: counts, plurals, durations, times, a closed pipe, JSON log fields."""

from __future__ import annotations

import io
import json
import logging
import os
import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pytest

from archiver import logs, status
from archiver.cli import main
from archiver.pipeline.progress import Progress
from archiver.timeparse import compact_duration, parse_duration
from archiver.windows import iso, oldest_exportable
from archiver.wording import plural
from tests.e2e import ago, floor
from tests.faults import small_spec


@pytest.mark.parametrize(
    ("count", "singular", "plural_form", "expected"),
    [
        (0, "window", None, "0 windows"),
        (1, "window", None, "1 window"),
        (2, "window", None, "2 windows"),
        (1, "retry", "retries", "1 retry"),
        (3, "retry", "retries", "3 retries"),
        (1008000, "point", None, "1008000 points"),
    ],
)
def test_plural(count, singular, plural_form, expected):
    assert plural(count, singular, plural_form) == expected


@pytest.mark.parametrize(
    ("duration", "text"),
    [
        pytest.param(timedelta(days=8), "8d", id="days"),
        pytest.param(timedelta(minutes=90), "1h30m", id="hours-minutes"),
        pytest.param(timedelta(minutes=5, seconds=27), "5m27s", id="minutes-seconds"),
        pytest.param(timedelta(weeks=104), "728d", id="weeks-as-days"),
        pytest.param(timedelta(days=1, seconds=1), "1d1s", id="gap"),
        pytest.param(timedelta(0), "0s", id="zero"),
        pytest.param(timedelta(seconds=0.4), "0s", id="under-a-second"),
        pytest.param(timedelta(hours=-2), "-2h", id="negative"),
    ],
)
def test_compact_duration_reads_back(duration, text):
    assert compact_duration(duration) == text
    if duration >= timedelta(seconds=1):
        assert parse_duration(text) == timedelta(seconds=int(duration.total_seconds()))


def test_retention_notes_say_8d_not_a_timedelta():
    now = datetime(2026, 11, 29, 8, 0, tzinfo=UTC)
    _, reason = oldest_exportable(now, timedelta(minutes=1), timedelta(days=8), None)
    assert reason == "New Relic keeps 8d"
    _, reason = oldest_exportable(now, timedelta(minutes=1), timedelta(days=8), timedelta(hours=1))
    assert reason == "the retention policy keeps 1h"


def test_times_are_printed_in_whole_seconds():
    moment = datetime(2026, 11, 22, 8, 45, 30, 123456, tzinfo=UTC)
    assert iso(moment) == "2026-11-22T08:45:30Z"


def test_reset_to_an_age_prints_no_microseconds(tmp_path, monkeypatch, capsys):
    (tmp_path / "q.yaml").write_text(
        "nrql: SELECT count(*) FROM T\nmeasurement: m\ninterval: 1m\ndatabase: d\n"
    )
    monkeypatch.setenv("ARCHIVER_QUERIES_DIR", str(tmp_path))
    monkeypatch.setenv("ARCHIVER_DB_URL", f"sqlite:///{tmp_path / 'state.db'}")
    assert main(["reset", "--query", "q", "--to", "2h"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("q → d: checkpoint none → ")
    assert "." not in out.rsplit("→", 1)[1], out


def test_status_table_has_no_trailing_spaces():
    rows = [
        status.TargetStatus("q", "db.rp", "2026-11-26T03:50:00Z", 327, "ok", "x", None, True),
        status.TargetStatus("long_query", "db", None, None, None, None, None, False),
    ]
    table = status.to_table(rows)
    assert len(table.splitlines()) == 3
    for line in table.splitlines():
        assert line == line.rstrip(), repr(line)


def test_the_bar_shows_points_as_a_plain_integer():
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    stream = Tty()
    progress = Progress(stream=stream)
    progress.plan(10)
    progress.advance(5, 1_200_000)
    progress.close()
    assert "points=1200000" in stream.getvalue()
    assert "e+" not in stream.getvalue()


def test_a_log_line_is_written_above_the_bar_not_inside_it():
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    stream = Tty()
    try:
        logs.setup("INFO", "text", stream=stream)
        progress = Progress(stream=stream)
        progress.plan(10)
        progress.advance(5, 50)
        logging.getLogger("archiver.test").info("a log line")
        progress.close()
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
    screen = stream.getvalue()
    # the bar is blanked (\r, spaces, \r), the line written from column 0, the bar drawn again
    assert re.search(r"\| [^\r\n]*\r +\r[^\r\n|]* INFO +a log line\n\rdata exported: ", screen), (
        screen
    )


def closed_pipe() -> int:
    """The write end of a pipe whose reader is gone (like `| head` after it read its lines)."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    return write_end


def run_into_closed_pipe(args: list[str], env: dict[str, str], cwd) -> subprocess.CompletedProcess:
    write_end = closed_pipe()
    try:
        return subprocess.run(
            [sys.executable, "-m", "archiver", *args],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=cwd,
            timeout=120,
        )
    finally:
        os.close(write_end)


@pytest.mark.parametrize("args", [["validate"], ["--help"], ["run", "--dry-run"]])
def test_a_reader_that_goes_away_gets_no_traceback(args, cli, queries_dir, influx_db):
    small_spec("logins", influx_db, floor(ago(hours=1), 300)).write(queries_dir)
    result = run_into_closed_pipe(args, cli.env, cli.cwd)
    assert result.stderr == ""
    assert result.returncode == 1


def test_a_run_whose_log_reader_goes_away_still_exports_quietly(
    cli, fake_nr, influxd, queries_dir, influx_db
):
    small_spec("logins", influx_db, floor(ago(hours=1), 300)).write(queries_dir)
    result = run_into_closed_pipe(["run"], cli.env, cli.cwd)
    assert result.stderr == ""
    assert result.returncode == 0
    assert cli.status()[("logins", f"{influx_db}.autogen")]["last_status"] == "ok"
    assert influxd.points(influx_db, "nr_logins", "autogen")


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_json_log_lines_carry_the_fields_of_each_job(cli, fake_nr, queries_dir, influx_db):
    start = floor(ago(hours=1), 300)
    small_spec("logins", influx_db, start).write(queries_dir)
    small_spec("broken", influx_db, start, nrql_extra=" WHERE oops").write(queries_dir)
    fake_nr.reject_nrql("WHERE oops", "NRQL Syntax Error: oops")

    result = cli("run", "--log-format", "json", ARCHIVER_LOG_LEVEL="DEBUG")

    assert result.returncode == 1, result.stdout + result.stderr
    entries = json_lines(result.stdout)
    assert all({"time", "level", "logger", "message"} <= set(e) for e in entries)
    by_query = {
        e["query"]: e
        for e in entries
        if e["logger"] == "archiver.pipeline.report" and "error" not in e and "windows" in e
    }
    done = by_query["logins"]
    assert done["target"] == f"{influx_db}.autogen" and done["level"] == "INFO"
    assert done["points"] > 0 and done["nr_requests"] >= 1 and done["windows"] >= 1
    assert isinstance(done["seconds"], float)
    failed = next(e for e in entries if e.get("error"))
    assert failed["query"] == "broken" and failed["level"] == "ERROR"
    assert "NRQL Syntax Error" in failed["error"]
    assert failed["window_since"] < failed["window_until"]
    assert failed["window_since"].endswith("Z")
    windows = [e for e in entries if e["level"] == "DEBUG" and e.get("query") == "logins"]
    assert windows and all({"window_since", "window_until", "points"} <= set(e) for e in windows)


def test_queries_dir_and_db_url_options_win_over_the_environment(tmp_path, monkeypatch, capsys):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "q.yaml").write_text(
        "nrql: SELECT count(*) FROM T\nmeasurement: m\ninterval: 1m\ndatabase: d\n"
    )
    monkeypatch.setenv("ARCHIVER_QUERIES_DIR", str(tmp_path / "missing"))
    monkeypatch.setenv("ARCHIVER_DB_URL", f"sqlite:///{tmp_path / 'env.db'}")
    db_url = f"sqlite:///{tmp_path / 'cli.db'}"

    assert main(["--queries-dir", str(folder), "validate"]) == 0
    assert (
        main(
            [
                "reset",
                "--db-url",
                db_url,
                "--queries-dir",
                str(folder),
                "--query",
                "q",
                "--to",
                "2026-11-20T00:00:00Z",
            ]
        )
        == 0
    )

    assert "1 valid query, 0 problems" in capsys.readouterr().out
    assert (tmp_path / "cli.db").exists() and not (tmp_path / "env.db").exists()
