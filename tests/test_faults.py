"""Fault injection: the real CLI against a misbehaving fake New Relic, a real influxd that
goes away, SIGKILL, concurrent runs and bad input.

Every scenario ends with InfluxDB holding exactly the contract's points (computed from the
fake's data model, tests/e2e.py) and no checkpoint ahead of the data.
"""

from __future__ import annotations

import base64
import json
import re
from datetime import datetime, timedelta

import pytest

from tests.e2e import Cli, Spec, ago, cli_env, floor
from tests.faults import (
    LAG_SECONDS,
    Output,
    assert_checkpoint_not_ahead,
    assert_exact,
    error_lines,
    exported_until,
    facet_spec,
    html_server,
    kill_after_requests,
    ok_nrqls,
    plain_spec,
    small_spec,
    wait_until,
)
from tests.influxd import unique_database_name
from tests.inprocess import InProcessCli

ALL_FAULTS = (
    "http429",
    "http500",
    "http502",
    "http503",
    "graphql_timeout",
    "too_many_requests",
    "internal_server_error",
    "html",
    "not_json",
    "no_data",
    "reset",
)
# The NerdGraph client backs off for real (1 s, 2 s, 4 s... + jitter) and reads no setting for
# it yet; this is the test-only knob the lead is asked to add. Ignored until then.
FAST_RETRIES = {"ARCHIVER_RETRY_BASE_SECONDS": "0.01"}


def write(queries_dir, *specs: Spec) -> list[Spec]:
    for spec in specs:
        spec.write(queries_dir)
    return list(specs)


def assert_complete(
    cli: Cli, influxd, specs: list[Spec], start: datetime, before: datetime
) -> None:
    """Every query is exported up to the newest complete bucket, with exactly its points."""
    checkpoints = exported_until(cli)
    for spec in specs:
        newest = floor(before - timedelta(seconds=LAG_SECONDS), spec.interval_seconds)
        checkpoint = checkpoints[spec.name]
        assert checkpoint is not None and checkpoint >= newest, (spec.name, checkpoint)
        assert_exact(influxd, spec, start, checkpoint)


# -- New Relic misbehaving ---------------------------------------------------------------------


def test_every_third_answer_a_fault_of_each_kind_still_archives_everything(
    cli, fake_nr, influxd, influx_db, queries_dir
):
    # Twelve queries of two to five windows, one worker each, all asking at once. Every third
    # request *of each query* is a fault (the kinds cycling over all of them): a schedule that
    # does not depend on how the workers' requests interleave. Counted over all requests
    # instead, a query could meet up to six faults in a row under CPU load, and the sixth
    # rightly fails it (at most 6 attempts): that made this test flaky.
    start = floor(ago(days=1), 300)
    specs = write(
        queries_dir,
        facet_spec("tx", influx_db, start),
        small_spec("logins", influx_db, start),
        *(plain_spec(f"events{i}", influx_db, start, f"Event{i}") for i in range(10)),
    )
    fake_nr.set_faults(ALL_FAULTS, every=3, retry_after=0.01, per_query=True)

    before = ago()
    run = Output(cli.popen("run", "--workers", str(len(specs)), **FAST_RETRIES))
    code = run.finish()  # every third answer stays a fault until the end

    assert code == 0, run.text
    faulted = [r for r in fake_nr.requests if r.outcome != "ok"]
    assert {r.outcome for r in faulted} == set(ALL_FAULTS)
    answered = ok_nrqls(fake_nr)
    assert len(answered) == len(set(answered)), "a window was asked again after its answer"
    # A TIMEOUT says the window is too big: it is asked again in halves, not retried as it is;
    # only a window of one bucket, which cannot shrink, is retried like any other fault.
    seconds = {spec.event_type: spec.interval_seconds for spec in specs}

    def one_bucket(request) -> bool:
        interval = seconds[re.search(r"FROM (\w+)", request.nrql)[1]]
        return request.until_ms - request.since_ms <= interval * 1000

    timed_out = [r for r in faulted if r.outcome == "graphql_timeout" and not one_bucket(r)]
    retried = [r for r in faulted if r not in timed_out]
    shrunk = {r.nrql for r in timed_out}
    assert {r.nrql for r in retried} - shrunk <= set(answered), "a fault was not retried"
    retries = [line for line in run.lines if "retrying" in line]
    assert len(retries) == len(retried), run.text
    assert len([line for line in run.lines if "as too big" in line]) == len(timed_out)
    assert_complete(cli, influxd, specs, start, before)


def test_slow_answers_are_waited_for_not_retried(cli, fake_nr, influxd, influx_db, queries_dir):
    start = floor(ago(hours=6), 300)
    specs = write(
        queries_dir,
        small_spec("logins", influx_db, start),
        small_spec("logins_ok", influx_db, start, nrql_extra=" WHERE success = 'true'"),
    )
    fake_nr.set_faults(["slow"], every=2)  # each one answers after 2 s

    before = ago()
    result = cli("run")

    assert result.returncode == 0, result.stdout + result.stderr
    outcomes = [r.outcome for r in fake_nr.requests]
    assert outcomes.count("slow") >= 1
    assert set(outcomes) == {"ok", "slow"}
    sent = [r.nrql for r in fake_nr.requests]
    assert len(sent) == len(set(sent)), "a slow answer was retried"
    assert_complete(cli, influxd, specs, start, before)


def test_rejected_nrql_is_asked_once_and_the_other_queries_complete(
    cli, fake_nr, influxd, influx_db, queries_dir
):
    start = floor(ago(hours=3), 300)
    good = write(
        queries_dir, small_spec("logins", influx_db, start), plain_spec("pages", influx_db, start)
    )
    write(queries_dir, small_spec("rejected", influx_db, start, nrql_extra=" WHERE oops"))
    message = "NRQL Syntax Error: Error at line 1 position 30, unexpected 'oops'"
    fake_nr.reject_nrql("WHERE oops", message)

    before = ago()
    result = cli("run")

    assert result.returncode == 1
    assert [r.outcome for r in fake_nr.requests if "WHERE oops" in (r.nrql or "")] == ["nrql_error"]
    [error] = error_lines(result.stdout + result.stderr)
    assert "rejected" in error and message in error
    assert_complete(cli, influxd, good, start, before)
    assert exported_until(cli)["rejected"] is None


def test_html_from_a_proxy_fails_the_query_after_retries_with_one_line(
    cli, fake_nr, influx_db, queries_dir
):
    start = floor(ago(hours=1), 300)
    write(queries_dir, small_spec("behind_proxy", influx_db, start))
    fake_nr.set_faults(["html"], every=1)

    result = cli("run", **FAST_RETRIES)

    assert result.returncode == 1
    assert len(fake_nr.requests) > 1, "an HTML page from a proxy is transient: retried"
    [error] = error_lines(result.stdout + result.stderr)
    assert "behind_proxy" in error
    assert "HTTP 502" in error and "502 Bad Gateway" in error and "gave up after" in error
    assert exported_until(cli) == {"behind_proxy": None}


# -- InfluxDB going away -----------------------------------------------------------------------


def test_influxd_stopped_mid_run_and_started_again_loses_nothing(
    cli, fake_nr, influxd, influx_db, queries_dir
):
    start = floor(ago(days=2), 300)
    specs = write(queries_dir, small_spec("logins", influx_db, start, minutes=1))
    fake_nr.latency = 0.25  # ~9 windows: the run lasts long enough to lose InfluxDB mid-way

    before = ago()
    run = Output(cli.popen("run"))
    try:
        wait_until(lambda: len(fake_nr.requests) >= 3, 60, "3 answered New Relic requests")
        assert run.process.poll() is None, run.text
        influxd.stop()
        wait_until(
            lambda: (
                run.process.poll() is not None
                or any("InfluxDB" in line and "retrying" in line for line in run.lines)
            ),
            60,
            "the archiver to notice InfluxDB is gone",
        )
    finally:
        influxd.start()
    code = run.finish()

    assert any("InfluxDB" in line and "retrying" in line for line in run.lines), run.text
    if code != 0:
        again = cli("run")
        assert again.returncode == 0, again.stdout + again.stderr
    assert_complete(cli, influxd, specs, start, before)


# -- the archiver killed -----------------------------------------------------------------------


@pytest.mark.parametrize("answered", [1, 4, 7], ids=lambda n: f"after_{n}_requests")
def test_kill_9_then_run_again_resumes_exactly_where_the_data_ends(
    cli, fake_nr, influxd, influx_db, queries_dir, answered
):
    start = floor(ago(days=2), 300)
    [spec] = write(queries_dir, small_spec("logins", influx_db, start, minutes=1))
    fake_nr.latency = 0.02

    kill_after_requests(cli, fake_nr, answered)

    checkpoint = exported_until(cli)["logins"]
    assert_checkpoint_not_ahead(influxd, spec, start, checkpoint, ago())
    killed_requests = len(fake_nr.requests)
    before = ago()
    result = cli("run")  # at once: the killed run's lease must not hold it back
    assert result.returncode == 0, result.stdout + result.stderr
    assert "skipped" not in result.stdout
    first_asked = min(r.since_ms for r in fake_nr.requests[killed_requests:])
    assert first_asked == int((checkpoint or start).timestamp()) * 1000, "not resumed exactly"
    assert_complete(cli, influxd, [spec], start, before)


# -- two runs at once --------------------------------------------------------------------------


def test_two_runs_started_together_never_ask_the_same_window_twice(
    cli, fake_nr, influxd, influx_db, queries_dir
):
    start = floor(ago(days=1), 300)
    specs = write(
        queries_dir,
        facet_spec("tx", influx_db, start),
        plain_spec("pages", influx_db, start),
        small_spec("logins", influx_db, start),
    )
    fake_nr.latency = 0.2  # long enough that the two runs overlap

    before = ago()
    runs = [Output(cli.popen("run")), Output(cli.popen("run"))]
    codes = [run.finish() for run in runs]

    assert codes == [0, 0], "\n---\n".join(run.text for run in runs)
    assert any("another run is exporting it" in run.text for run in runs), "the runs never met"
    answered = ok_nrqls(fake_nr)
    assert len(answered) == len(set(answered)), "the same window was asked twice"
    assert_complete(cli, influxd, specs, start, before)


# -- bad input ---------------------------------------------------------------------------------
# In this process (`inprocess_cli`): a process of its own adds nothing to these.


@pytest.fixture
def archived(inprocess_cli, influxd, influx_db, queries_dir) -> tuple[Spec, datetime]:
    """A query already exported once: bad input must leave it and its data sound."""
    start = floor(ago(hours=2), 300)
    [spec] = write(queries_dir, small_spec("logins", influx_db, start))
    result = inprocess_cli("run")
    assert result.returncode == 0, result.stdout + result.stderr
    return spec, start


def assert_state_sound(cli: Cli, influxd, archived: tuple[Spec, datetime]) -> None:
    spec, start = archived
    assert_exact(influxd, spec, start, exported_until(cli)[spec.name])


def test_empty_queries_folder_is_a_config_error(inprocess_cli, influxd, archived, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()

    result = inprocess_cli("run", ARCHIVER_QUERIES_DIR=str(empty))

    assert result.returncode == 2
    [error] = error_lines(result.stdout + result.stderr)
    assert str(empty) in error and "no *.yaml" in error
    assert_state_sound(inprocess_cli, influxd, archived)


def test_missing_queries_folder_is_a_config_error(inprocess_cli, influxd, archived, tmp_path):
    missing = tmp_path / "nowhere"

    result = inprocess_cli("run", ARCHIVER_QUERIES_DIR=str(missing))

    assert result.returncode == 2
    [error] = error_lines(result.stdout + result.stderr)
    assert str(missing) in error and "does not exist" in error
    assert_state_sound(inprocess_cli, influxd, archived)


def test_yaml_that_is_not_a_mapping_fails_that_file_only(
    inprocess_cli, influxd, archived, queries_dir
):
    (queries_dir / "a_list.yaml").write_text("- nrql: SELECT count(*) FROM Login\n- oops\n")

    result = inprocess_cli("run")

    assert result.returncode == 1
    [error] = error_lines(result.stdout + result.stderr)
    assert "a_list.yaml" in error and "not a mapping" in error
    assert_state_sound(inprocess_cli, influxd, archived)


VALID_KEYS = {
    "nrql": "SELECT count(*) FROM Login",
    "measurement": "m",
    "interval": "5m",
    "database": "d",
}
WRONG_TYPES = {"interval": "[5, minutes]", "account_id": "not-a-number", "tags": "source"}


def test_wrong_types_are_one_line_per_file_naming_the_key(
    inprocess_cli, influxd, archived, queries_dir
):
    for key, value in WRONG_TYPES.items():
        content = {**VALID_KEYS, key: value}
        (queries_dir / f"bad_{key}.yaml").write_text(
            "".join(f"{name}: {text}\n" for name, text in content.items())
        )

    result = inprocess_cli("run")

    assert result.returncode == 1
    errors = error_lines(result.stdout + result.stderr)
    assert len(errors) == len(WRONG_TYPES), errors
    for key in WRONG_TYPES:
        assert any(f"bad_{key}.yaml" in error and key in error for error in errors), (key, errors)
    assert_state_sound(inprocess_cli, influxd, archived)


def test_influx_url_that_is_not_influxdb_is_one_line_naming_it(inprocess_cli, influxd, archived):
    with html_server() as url:
        result = inprocess_cli("run", INFLUX_URL=url)

    [error] = error_lines(result.stdout + result.stderr)
    assert "INFLUX_URL" in error and url in error
    assert_state_sound(inprocess_cli, influxd, archived)
    assert result.returncode == 2


def test_read_only_state_database_is_one_line_and_stays_sound(
    inprocess_cli, fake_nr, influxd, archived, state_path
):
    asked = len(fake_nr.requests)

    result = inprocess_cli("run", ARCHIVER_DB_URL=f"sqlite:///file:{state_path}?mode=ro&uri=true")

    assert result.returncode == 2
    [error] = error_lines(result.stdout + result.stderr)
    assert "state database" in error and "readonly" in error.replace("read-only", "readonly")
    assert len(fake_nr.requests) == asked, "New Relic was asked with nowhere to checkpoint"
    assert_state_sound(inprocess_cli, influxd, archived)


def test_state_database_that_cannot_be_opened_is_one_line(
    inprocess_cli, fake_nr, influx_db, queries_dir, tmp_path
):
    write(queries_dir, small_spec("logins", influx_db, floor(ago(hours=1), 300)))
    missing_dir = tmp_path / "no" / "such" / "dir"

    result = inprocess_cli("run", ARCHIVER_DB_URL=f"sqlite:///{missing_dir / 'state.db'}")

    assert "Traceback" not in result.stdout + result.stderr
    [error] = error_lines(result.stdout + result.stderr)
    assert "state database" in error and "unable to open" in error
    assert result.returncode == 2
    assert fake_nr.requests == []


# -- secrets -----------------------------------------------------------------------------------


@pytest.fixture
def auth_db(influxd_auth):
    name = unique_database_name()
    yield name
    influxd_auth.query(f'DROP DATABASE "{name}"')


def test_secrets_never_appear_in_debug_output_or_status(
    tmp_path, fake_nr, influxd_auth, auth_db, queries_dir, monkeypatch, capsys
):
    password = influxd_auth.admin_password
    wrong_password = "wrong-" + password
    base = cli_env(
        nerdgraph_url=fake_nr.url,
        api_key=fake_nr.api_key,
        influx_url=influxd_auth.url,
        db_url=f"sqlite:///{tmp_path / 'state.db'}",
        queries=queries_dir,
    )
    cli = InProcessCli(
        {**base, "INFLUX_USERNAME": "admin", "INFLUX_PASSWORD": password},
        tmp_path,
        monkeypatch,
        capsys,
    )
    start = floor(ago(hours=1), 300)
    write(queries_dir, small_spec("logins", auth_db, start))
    write(queries_dir, small_spec("rejected", auth_db, start, nrql_extra=" WHERE oops"))
    # An error message that echoes the key: the archiver must redact what it did not write.
    fake_nr.reject_nrql("WHERE oops", f"NRQL Syntax Error near 'oops' (key {fake_nr.api_key})")

    failing = cli("run", ARCHIVER_LOG_LEVEL="DEBUG")
    status = cli("status", "--json")
    refused = cli("run", ARCHIVER_LOG_LEVEL="DEBUG", INFLUX_PASSWORD=wrong_password)
    refused_status = cli("status", "--json")

    assert failing.returncode == 1 and refused.returncode == 2
    rows = {row["query"]: row for row in json.loads(status.stdout)}
    assert "NRQL Syntax Error" in rows["rejected"]["last_error"]
    rows = {row["query"]: row for row in json.loads(refused_status.stdout)}
    assert "INFLUX_PASSWORD" in rows["logins"]["last_error"]
    secrets = [fake_nr.api_key, password, wrong_password]
    secrets += [
        base64.b64encode(f"admin:{p}".encode()).decode() for p in (password, wrong_password)
    ]
    outputs = [failing.stdout, failing.stderr, status.stdout]
    outputs += [refused.stdout, refused.stderr, refused_status.stdout]
    for output in outputs:
        for secret in secrets:
            assert secret not in output
