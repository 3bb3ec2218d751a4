"""Log output: secrets redacted in every form and format, JSON fields, tqdm-aware lines."""

from __future__ import annotations

import io
import json
import logging
import uuid
from datetime import UTC, datetime
from urllib.parse import quote, quote_plus

import pytest

from archiver import logs, settings
from tests.e2e import ago, floor
from tests.faults import small_spec

NOW = datetime(2026, 11, 26, 4, 0, tzinfo=UTC)

# Every character JSON escapes ("\\", '"', the control characters), a quote of each kind, a
# non-ASCII one (escaped as \uXXXX by ASCII-only JSON), and characters URL encoding changes.
NASTY = "NRAK-q\"u\\o\b\f\n\r\t\x01\x1f\x7f'é ü/+&=%"
SECRETS = pytest.mark.parametrize(
    "secret",
    [
        pytest.param(NASTY, id="every-escaped-character"),
        pytest.param('pass"word', id="double-quote"),
        pytest.param("pass\\word", id="backslash"),
        pytest.param("pa'ss\"wo\\rd", id="both-quotes"),
        pytest.param("pass word\r", id="trailing-cr"),
    ],
)


def forms(secret: str) -> list[str]:
    """How output can spell `secret`: raw, JSON-escaped (both ways), repr, URL-encoded."""
    return [
        secret,
        json.dumps(secret)[1:-1],
        json.dumps(secret, ensure_ascii=False)[1:-1],
        repr(secret)[1:-1],
        repr(f"\"'{secret}")[4:-1],
        quote(secret, safe=""),
        quote(secret),
        quote_plus(secret, safe=""),
    ]


def assert_no_secret(output: str, secret: str) -> None:
    for form in forms(secret):
        assert form not in output, f"secret leaked as {form!r}"


def log_to(fmt: str) -> io.StringIO:
    stream = io.StringIO()
    logs.setup("DEBUG", fmt, stream=stream)
    return stream


@pytest.fixture(autouse=True)
def restore_logging():
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@SECRETS
@pytest.mark.parametrize("fmt", ["json", "text"])
def test_a_secret_never_reaches_a_log_line_in_any_form(secret, fmt):
    logs.register_secret(secret)
    stream = log_to(fmt)
    log = logging.getLogger("archiver.test")
    log.error("raw %s", secret)
    log.error("repr %r", secret)
    log.error("in a longer repr %r", f"\"'{secret}")
    log.error("json %s", json.dumps({"key": secret}))
    log.error("url https://x/?key=%s and %s", quote(secret, safe=""), quote_plus(secret))
    log.error("field", extra={"error": f"refused {secret}", "nested": {"k": [secret]}})
    try:
        raise ValueError(f"bad key {secret!r}")
    except ValueError:
        log.exception("with a traceback")
    output = stream.getvalue()
    assert output.count(logs.REDACTED) >= 7
    assert_no_secret(output, secret)
    if fmt == "json":
        for line in output.splitlines():
            assert_no_secret(str(json.loads(line)), secret)  # not even once decoded


def test_json_lines_keep_their_keys_and_carry_the_fields_given():
    stream = log_to("json")
    logging.getLogger("archiver.pipeline.report").info(
        "q → t: done", extra={"query": "q", "target": "t", "points": 12, "seconds": 0.5}
    )
    entry = json.loads(stream.getvalue())
    assert list(entry)[:4] == ["time", "level", "logger", "message"]
    assert entry["level"] == "INFO" and entry["logger"] == "archiver.pipeline.report"
    assert entry["message"] == "q → t: done"
    assert (entry["query"], entry["target"], entry["points"], entry["seconds"]) == (
        "q",
        "t",
        12,
        0.5,
    )


def test_short_strings_are_not_registered():
    logs.register_secret("abc")
    assert logs.redact("abc abcd") == "abc abcd"


@pytest.mark.parametrize(
    "pasted",
    [" NRAK-PASTED\r", "NRAK-PASTED\r\n", "\tNRAK-PASTED ", "NRAK-PASTED"],
    ids=["space-and-cr", "crlf", "tab-and-space", "clean"],
)
def test_secrets_lose_surrounding_whitespace_from_the_environment_and_files(pasted, tmp_path):
    assert settings.read_secret({"NEW_RELIC_API_KEY": pasted}, "NEW_RELIC_API_KEY") == "NRAK-PASTED"
    secret_file = tmp_path / "key"
    secret_file.write_bytes(pasted.encode())
    env = {"INFLUX_TOKEN_FILE": f"{secret_file}\r"}
    assert settings.read_secret(env, "INFLUX_TOKEN") == "NRAK-PASTED"


def test_a_blank_secret_is_no_secret():
    assert settings.read_secret({"INFLUX_PASSWORD": " \r\n"}, "INFLUX_PASSWORD") is None


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_a_key_pasted_with_a_space_and_a_cr_works_and_never_shows(
    fmt, cli, fake_nr, influx_db, queries_dir
):
    small_spec("logins", influx_db, floor(ago(hours=1), 300)).write(queries_dir)
    pasted = f" {fake_nr.api_key}\r"

    run = cli("run", "--log-format", fmt, NEW_RELIC_API_KEY=pasted, ARCHIVER_LOG_LEVEL="DEBUG")
    status = cli("status", "--json", NEW_RELIC_API_KEY=pasted)

    assert run.returncode == 0, run.stdout + run.stderr
    assert json.loads(status.stdout)[0]["last_status"] == "ok"
    for output in (run.stdout, run.stderr, status.stdout, status.stderr):
        assert_no_secret(output, pasted)
        assert_no_secret(output, fake_nr.api_key)


@pytest.mark.parametrize("flag", [["--json"], []], ids=["json", "table"])
def test_status_redacts_a_secret_stored_by_an_older_release(flag, tmp_path, monkeypatch, capsys):
    from archiver.cli import main
    from archiver.state.store import State

    secret = f"NRAK-OLD{uuid.uuid4().hex}"  # not registered yet, as in the release that ran
    db_url = f"sqlite:///{tmp_path / 'state.db'}"
    state = State.open(db_url)
    run = state.start_run("incremental", NOW)
    export = state.start_export(run, "q", "t", NOW)
    leaked = f"InvalidHeader: header value: {secret + chr(13)!r}"
    state.finish_export(export, status="failed", now=NOW, error=leaked)
    monkeypatch.setenv("ARCHIVER_DB_URL", db_url)
    monkeypatch.setenv("ARCHIVER_QUERIES_DIR", str(tmp_path / "none"))
    monkeypatch.setenv("NEW_RELIC_API_KEY", f"{secret}\r")

    assert main(["status", *flag]) == 0

    out = capsys.readouterr().out
    assert "InvalidHeader" in out
    assert_no_secret(out, secret)
