"""The InfluxDB 1.x sink against a real influxd 1.6.7 (never a mock)."""

from __future__ import annotations

import gzip
import logging
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from archiver.errors import AuthError, InfluxError, TransientError
from archiver.sinks.base import RetentionPolicy
from archiver.sinks.influx_v1 import InfluxV1Sink, batches_of
from tests.clocks import FakeSleep
from tests.influxd import InfluxServer, free_port, running_influxd


@pytest.fixture
def sink(influxd: InfluxServer) -> Iterator[InfluxV1Sink]:
    with InfluxV1Sink(influxd.url, sleep=FakeSleep()) as sink:
        yield sink


@pytest.fixture
def database(influxd: InfluxServer, influx_db: str) -> str:
    influxd.query(f'CREATE DATABASE "{influx_db}"')
    return influx_db


@pytest.fixture
def sent_requests(monkeypatch: pytest.MonkeyPatch) -> list[requests.PreparedRequest]:
    """A spy on every request sent (they still reach the real influxd)."""
    sent: list[requests.PreparedRequest] = []
    real_send = requests.Session.send

    def spy(session: requests.Session, request: requests.PreparedRequest, **kwargs):
        sent.append(request)
        return real_send(session, request, **kwargs)

    monkeypatch.setattr(requests.Session, "send", spy)
    return sent


# --- writing and reading back -----------------------------------------------------------------


def test_ping_returns_the_server_version(sink: InfluxV1Sink) -> None:
    assert sink.ping() == "1.6.7~rc0"


def test_written_points_read_back_with_their_types_and_tags(
    sink: InfluxV1Sink, influxd: InfluxServer, database: str
) -> None:
    lines = [
        r"nr_tx,app=Call\ Center,host=web\,1,env=a\=b "
        r'duration=1.5,name="say \"hi\"",ok=true 1700000000',
        r"nr_tx,app=Billing,host=C:\tmp\x duration=2,ok=false 1700000060",
    ]

    result = sink.write(database, None, lines)

    assert (result.lines, result.requests, result.retries) == (2, 1, 0)
    assert influxd.points(database, "nr_tx") == [
        {
            "time": 1700000000,
            "tags": {"app": "Call Center", "host": "web,1", "env": "a=b"},
            "fields": {"duration": 1.5, "name": 'say "hi"', "ok": True},
        },
        {
            "time": 1700000060,
            "tags": {"app": "Billing", "host": "C:\\tmp\\x"},
            "fields": {"duration": 2.0, "ok": False},
        },
    ]


def test_lines_go_in_batches_that_are_all_acknowledged(
    influxd: InfluxServer, database: str
) -> None:
    lines = [f"nr_batch value={i} {1700000000 + i}" for i in range(12_001)]

    with InfluxV1Sink(influxd.url, batch_size=5000) as sink:
        result = sink.write(database, None, lines)

    assert (result.lines, result.requests) == (12_001, 3)
    assert influxd.query('SELECT count("value") FROM "nr_batch"', db=database)[0]["count"] == 12_001


def test_default_batches_are_of_ten_thousand_lines(
    influxd: InfluxServer, database: str, sent_requests: list[requests.PreparedRequest]
) -> None:
    lines = [f"nr_default_batch value={i} {1700000000 + i}" for i in range(20_001)]

    with InfluxV1Sink(influxd.url) as sink:
        result = sink.write(database, None, lines)

    bodies = [gzip.decompress(r.body) for r in sent_requests if r.path_url.startswith("/write")]
    assert sorted(body.count(b"\n") + 1 for body in bodies) == [1, 10_000, 10_000]
    assert (result.lines, result.requests) == (20_001, 3)
    count = influxd.query('SELECT count("value") FROM "nr_default_batch"', db=database)
    assert count[0]["count"] == 20_001


def test_batches_are_cut_by_characters_as_well_as_lines() -> None:
    narrow = [f"n v={i} {i}" for i in range(25)]
    assert [len(b) for b in batches_of(narrow, 10, 10_000)] == [10, 10, 5]
    wide = ["x" * 1000] * 25  # 10,000 characters in each batch of 10 lines
    assert [len(b) for b in batches_of(wide, 10, 3000)] == [3, 3, 3, 1] * 2 + [3, 2]
    assert [b for batch in batches_of(wide, 10, 3000) for b in batch] == wide
    assert batches_of([], 10, 3000) == []


def test_wide_lines_go_in_smaller_batches_that_all_land(
    influxd: InfluxServer, database: str, sent_requests: list[requests.PreparedRequest]
) -> None:
    text = "w" * 990
    lines = [f'nr_wide value={i},text="{text}" {1700000000 + i}' for i in range(12)]

    with InfluxV1Sink(influxd.url, batch_chars=3 * 1020) as sink:
        result = sink.write(database, None, lines)

    bodies = [gzip.decompress(r.body) for r in sent_requests if r.path_url.startswith("/write")]
    assert sorted(body.count(b"\n") + 1 for body in bodies) == [3, 3, 3, 3]
    assert (result.lines, result.requests) == (12, 4)
    count = influxd.query('SELECT count("value") FROM "nr_wide"', db=database)
    assert count[0]["count"] == 12


def test_a_batch_beyond_influxdbs_body_size_limit_fails_naming_the_setting(
    tmp_path: Path,
) -> None:
    lines = [f'nr_big value={i},text="{"b" * 990}" {1700000000 + i}' for i in range(3)]
    with (
        running_influxd(tmp_path, http_config="  max-body-size = 1000") as server,
        InfluxV1Sink(server.url, gzip=False) as sink,
    ):
        server.query('CREATE DATABASE "big"')
        with pytest.raises(InfluxError) as refused:
            sink.write("big", None, lines)

    assert str(refused.value) == (
        "InfluxDB refused a batch of 3 lines for big as too large (HTTP 413; batches are at "
        "most 10,000 lines and 5,000,000 characters): raise [http] max-body-size"
    )


@pytest.mark.parametrize("use_gzip", [True, False], ids=["gzip", "plain"])
def test_gzip_is_used_only_when_enabled(
    influxd: InfluxServer,
    database: str,
    sent_requests: list[requests.PreparedRequest],
    use_gzip: bool,
) -> None:
    with InfluxV1Sink(influxd.url, gzip=use_gzip) as sink:
        sink.write(database, None, ["nr_gz value=1 1700000000"])

    (write,) = [r for r in sent_requests if r.path_url.startswith("/write")]
    assert (write.headers.get("Content-Encoding") == "gzip") is use_gzip
    body = gzip.decompress(write.body) if use_gzip else write.body
    assert body == b"nr_gz value=1 1700000000"
    assert influxd.points(database, "nr_gz")[0]["fields"] == {"value": 1.0}


def test_write_to_a_missing_database_names_it(sink: InfluxV1Sink, influx_db: str) -> None:
    with pytest.raises(InfluxError, match=rf'HTTP 404: database not found: "{influx_db}"'):
        sink.write(influx_db, None, ["m value=1 1700000000"])


def test_write_to_a_missing_retention_policy_is_not_retried(
    influxd: InfluxServer, database: str
) -> None:
    sleep = FakeSleep()  # influxd answers 500 here, which would otherwise count as transient

    with (
        InfluxV1Sink(influxd.url, sleep=sleep) as sink,
        pytest.raises(InfluxError, match="retention policy not found: nope"),
    ):
        sink.write(database, "nope", ["m value=1 1700000000"])

    assert sleep.waits == []


def test_bad_line_protocol_names_the_offending_line(sink: InfluxV1Sink, database: str) -> None:
    lines = ["m value=1 1700000000", "m value= 1700000001", "broken"]

    with pytest.raises(InfluxError) as error:
        sink.write(database, None, lines)

    assert "unable to parse 'm value= 1700000001': missing field value" in str(error.value)
    assert "(and 1 more bad lines)" in str(error.value)


def test_field_type_conflict_names_field_and_measurement(sink: InfluxV1Sink, database: str) -> None:
    sink.write(database, None, ["nr_x count=1i 1700000000"])

    with pytest.raises(InfluxError) as error:
        sink.write(database, None, ["nr_x count=2 1700000060"])

    message = str(error.value)
    assert message.startswith(
        'field type conflict: field "count" on measurement "nr_x" is float here but already '
        "integer in InfluxDB; "
    )
    assert "partial write: field type conflict" in message  # InfluxDB's own words


# --- retention policies -------------------------------------------------------------------------


def test_ensure_target_creates_database_and_retention_policy(
    sink: InfluxV1Sink, influxd: InfluxServer, influx_db: str
) -> None:
    policy = sink.ensure_target(influx_db, "raw_2h", "2h")

    assert policy == RetentionPolicy("raw_2h", 7200, is_default=False)
    assert {"name": influx_db} in influxd.query("SHOW DATABASES")
    (created,) = [
        row
        for row in influxd.query(f'SHOW RETENTION POLICIES ON "{influx_db}"')
        if row["name"] == "raw_2h"
    ]
    assert created["duration"] == "2h0m0s"


def test_ensure_target_without_policy_returns_the_default_one(
    sink: InfluxV1Sink, influx_db: str
) -> None:
    assert sink.ensure_target(influx_db, None, None) == RetentionPolicy("autogen", None, True)


def test_ensure_target_refuses_a_missing_policy_without_duration(
    sink: InfluxV1Sink, database: str
) -> None:
    with pytest.raises(InfluxError) as error:
        sink.ensure_target(database, "raw_30d", None)

    assert str(error.value) == (
        f'retention policy "raw_30d" does not exist on database "{database}": '
        "create it, or give retention_duration in the query file"
    )


def test_ensure_target_keeps_an_existing_policy(
    sink: InfluxV1Sink, influxd: InfluxServer, database: str, caplog: pytest.LogCaptureFixture
) -> None:
    influxd.query(f'CREATE RETENTION POLICY "keep" ON "{database}" DURATION 3h REPLICATION 1')

    with caplog.at_level(logging.WARNING, logger="archiver.sinks.influxql"):
        policy = sink.ensure_target(database, "keep", "5h")

    assert policy == RetentionPolicy("keep", 3 * 3600, is_default=False)
    assert "exists with another duration" in caplog.text


def test_ensure_target_rejects_a_duration_that_is_not_influxql(
    sink: InfluxV1Sink, influxd: InfluxServer, database: str
) -> None:
    with pytest.raises(InfluxError, match="is not an InfluxQL duration"):
        sink.ensure_target(database, "x", "1h REPLICATION 1; DROP DATABASE x")

    assert [p.name for p in sink.retention_policies(database)] == ["autogen"]


def test_points_beyond_retention_are_counted_and_the_others_written(
    sink: InfluxV1Sink, influxd: InfluxServer, database: str, caplog: pytest.LogCaptureFixture
) -> None:
    sink.ensure_target(database, "h1", "1h")
    now = int(time.time())
    lines = [
        f"nr_ret,k=old value=1 {now - 7200}",
        f"nr_ret,k=fresh value=2 {now - 60}",
        f"nr_ret,k=old value=3 {now - 7260}",
        f"nr_ret,k=fresh value=4 {now}",
    ]

    with caplog.at_level(logging.INFO, logger="archiver.sinks.influx_v1"):
        result = sink.write(database, "h1", lines)

    assert result.dropped_beyond_retention == 2
    assert [p["fields"]["value"] for p in influxd.points(database, "nr_ret", "h1")] == [2.0, 4.0]
    assert "dropped 2 of 4 points older than the retention policy" in caplog.text


# --- transient failures -------------------------------------------------------------------------


def test_connection_refused_is_retried_then_transient() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    sleep = FakeSleep()

    with (
        InfluxV1Sink(url, max_attempts=3, sleep=sleep) as sink,
        pytest.raises(TransientError) as error,
    ):
        sink.write("db", None, ["m value=1 1700000000"])

    assert len(sleep.waits) == 2
    assert 1 <= sleep.waits[0] < sleep.waits[1]
    assert f"cannot reach InfluxDB at {url}: connection refused" in str(error.value)
    assert "gave up after 3 attempts" in str(error.value)


def test_write_survives_influxd_restarting_between_attempts(
    influxd: InfluxServer, database: str
) -> None:
    influxd.stop()
    sleep = FakeSleep(on_sleep=influxd.start)

    with InfluxV1Sink(influxd.url, sleep=sleep) as sink:
        result = sink.write(database, None, ["nr_restart value=1 1700000000"])

    assert (result.requests, result.retries) == (2, 1)
    assert influxd.points(database, "nr_restart")[0]["fields"] == {"value": 1.0}


def test_a_full_cache_is_transient(tmp_path: Path) -> None:
    with running_influxd(tmp_path, data_config="cache-max-memory-size = 1") as full:
        full.query('CREATE DATABASE "db"')
        sleep = FakeSleep()
        with (
            InfluxV1Sink(full.url, max_attempts=2, sleep=sleep) as sink,
            pytest.raises(TransientError, match="HTTP 500: engine: cache-max-memory-size exceeded"),
        ):
            sink.write("db", None, ["m value=1 1700000000"])
    assert len(sleep.waits) == 1


# --- not InfluxDB -------------------------------------------------------------------------------


def test_ping_of_a_server_that_is_not_influxdb(html_server: str) -> None:
    with InfluxV1Sink(html_server) as sink, pytest.raises(InfluxError) as error:
        sink.ping()

    assert str(error.value) == (
        f"INFLUX_URL {html_server} answered but is not InfluxDB "
        "(no X-Influxdb-Version header on /ping)"
    )


def test_query_of_a_server_that_is_not_influxdb_names_influx_url(html_server: str) -> None:
    with InfluxV1Sink(html_server) as sink, pytest.raises(InfluxError) as error:
        sink.query("SHOW DATABASES")

    assert f"INFLUX_URL {html_server} answered HTTP 200 (text/html)" in str(error.value)


def test_statement_errors_inside_results_raise(sink: InfluxV1Sink, database: str) -> None:
    with pytest.raises(InfluxError, match="retention policy duration must be at least 1h0m0s"):
        sink.query(f'CREATE RETENTION POLICY "short" ON "{database}" DURATION 10m REPLICATION 1')


# --- authentication -----------------------------------------------------------------------------


@pytest.fixture
def auth_database(influxd_auth: InfluxServer, influx_db: str) -> Iterator[str]:
    influxd_auth.query(f'CREATE DATABASE "{influx_db}"')
    yield influx_db
    influxd_auth.query(f'DROP DATABASE "{influx_db}"')


def test_credentials_go_in_basic_auth_not_the_url(
    influxd_auth: InfluxServer, auth_database: str, sent_requests: list[requests.PreparedRequest]
) -> None:
    password = influxd_auth.admin_password
    assert password
    with InfluxV1Sink(influxd_auth.url, influxd_auth.admin_username, password) as sink:
        sink.write(auth_database, None, ["nr_auth value=1 1700000000"])

    (write,) = sent_requests
    assert influxd_auth.points(auth_database, "nr_auth")[0]["fields"] == {"value": 1.0}
    assert write.headers["Authorization"].startswith("Basic ")
    assert password not in write.url


def test_wrong_password_is_an_auth_error_that_never_shows_it(
    influxd_auth: InfluxServer,
    auth_database: str,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    password = "wrong-secret-4711"
    sleep = FakeSleep()

    sink = InfluxV1Sink(influxd_auth.url, "admin", password, sleep=sleep)
    with caplog.at_level(logging.DEBUG), pytest.raises(AuthError) as error:
        sink.write(auth_database, None, ["nr_auth value=1 1700000000"])
    sink.close()

    assert str(error.value) == (
        "InfluxDB rejected the credentials (HTTP 401): check INFLUX_USERNAME / INFLUX_PASSWORD"
    )
    assert sleep.waits == []  # never retried
    output = capsys.readouterr()
    assert password not in caplog.text + output.out + output.err


def test_user_without_write_privilege_is_an_auth_error(
    influxd_auth: InfluxServer, auth_database: str
) -> None:
    influxd_auth.query("CREATE USER \"reader\" WITH PASSWORD 'reader-pass'")
    try:
        with (
            InfluxV1Sink(influxd_auth.url, "reader", "reader-pass") as sink,
            pytest.raises(
                AuthError,
                match=rf'"reader" user is not authorized to write to database "{auth_database}"',
            ),
        ):
            sink.write(auth_database, None, ["nr_auth value=1 1700000000"])
    finally:
        influxd_auth.query('DROP USER "reader"')
