"""The line-protocol file sink, which sink `open_sink` picks, and who imports whom in sinks/."""

from __future__ import annotations

import ast
import gzip
import threading
from pathlib import Path

import pytest
import requests

import archiver.sinks
from archiver.errors import ConfigError, InfluxError
from archiver.settings import Settings
from archiver.sinks.base import RetentionPolicy, WriteResult
from archiver.sinks.choose import open_sink
from archiver.sinks.file import FileSink
from archiver.sinks.influx_client import InfluxClientSink
from archiver.sinks.influx_v1 import InfluxV1Sink
from tests.influxd import InfluxServer, free_port
from tests.test_influx_v2 import ORG, TOKEN, FakeInflux2, serving

LINES = [
    "nr_transaction,appName=Call\\ Center,host=web-1 average.duration=0.25,count=120.0 1700000000",
    'nr_transaction,appName=caf\u00e9 s="a \\"quoted\\" \\\\ value",ok=true 1700000060',
    "nr_transaction,path=C:\\tmp\\x percentile.duration.95=1.5 1700000120",
]


@pytest.fixture
def sent_bodies(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """The un-gzipped body of every /write request (they still reach the real influxd)."""
    bodies: list[bytes] = []
    real_send = requests.Session.send

    def spy(session: requests.Session, request: requests.PreparedRequest, **kwargs):
        if "/write" in (request.url or ""):
            bodies.append(gzip.decompress(request.body))
        return real_send(session, request, **kwargs)

    monkeypatch.setattr(requests.Session, "send", spy)
    return bodies


# --- FileSink ----------------------------------------------------------------------------------


def test_file_holds_exactly_what_the_v1_sink_sends(
    influxd: InfluxServer, influx_db: str, sent_bodies: list[bytes], tmp_path: Path
) -> None:
    influxd.query(f'CREATE DATABASE "{influx_db}"')
    with InfluxV1Sink(influxd.url, batch_size=2) as v1:
        v1.write(influx_db, None, LINES)
    output = tmp_path / "out.lp"
    with FileSink.open(str(output)) as sink:
        sink.write(influx_db, None, LINES[:2])
        sink.write(influx_db, None, LINES[2:])

    # The v1 sink sends its batches concurrently: compare them whatever order they went in.
    file_lines = output.read_bytes().splitlines()
    file_batches = [b"\n".join(file_lines[i : i + 2]) for i in range(0, len(file_lines), 2)]
    assert sorted(sent_bodies) == sorted(file_batches)
    assert output.read_bytes().endswith(b"\n")
    assert len(influxd.points(influx_db, "nr_transaction")) == 3  # InfluxDB took those bytes


def test_file_is_truncated_at_open_and_touches_no_target(tmp_path: Path) -> None:
    output = tmp_path / "out.lp"
    output.write_text("from an earlier run\n")

    with FileSink.open(str(output)) as sink:
        assert sink.ping() == "file"
        assert sink.ensure_target("newrelic", "raw_30d", "30d") == RetentionPolicy(
            "raw_30d", None, is_default=False
        )
        assert sink.ensure_target("newrelic", None, None) == RetentionPolicy(
            "autogen", None, is_default=True
        )
        result = sink.write("newrelic", "raw_30d", LINES)
        assert output.read_bytes() == "".join(f"{line}\n" for line in LINES).encode()

    assert result == WriteResult(lines=3, dropped_beyond_retention=0, requests=0, retries=0)


def test_dash_writes_to_stdout(capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    with FileSink.open("-") as sink:
        sink.write("newrelic", None, LINES)

    assert capsysbinary.readouterr().out == "".join(f"{line}\n" for line in LINES).encode()


def test_output_must_be_an_lp_file_or_dash(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"--output .*out\.txt: give a file name ending in \.lp"):
        FileSink.open(str(tmp_path / "out.txt"))
    with pytest.raises(ConfigError, match="cannot write it"):
        FileSink.open(str(tmp_path / "missing" / "out.lp"))


def test_concurrent_writes_keep_every_batch_whole(tmp_path: Path) -> None:
    output = tmp_path / "out.lp"
    batches = {
        (worker, n): [f"m,worker={worker},batch={n} line={i}.0 {1700000000 + i}" for i in range(7)]
        for worker in range(8)
        for n in range(50)
    }
    start = threading.Barrier(8)

    def work(sink: FileSink, worker: int) -> None:
        start.wait()
        for n in range(50):
            sink.write("db", None, batches[worker, n])

    with FileSink.open(str(output)) as sink:
        threads = [threading.Thread(target=work, args=(sink, w)) for w in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    written = output.read_text().splitlines()
    assert len(written) == 8 * 50 * 7
    runs = [written[i : i + 7] for i in range(0, len(written), 7)]
    assert sorted(map(tuple, runs)) == sorted(map(tuple, batches.values()))


# --- open_sink ---------------------------------------------------------------------------------


def test_auto_picks_the_v1_sink_for_influxdb_1_6(influxd: InfluxServer) -> None:
    sink = open_sink(Settings(influx_url=influxd.url))
    try:
        assert isinstance(sink, InfluxV1Sink)
        assert sink.ping().startswith("1.6")
    finally:
        sink.close()


def test_a_server_that_is_not_influxdb_is_an_error_naming_influx_url(html_server: str) -> None:
    with pytest.raises(InfluxError, match=r"INFLUX_URL .* is not InfluxDB"):
        open_sink(Settings(influx_url=html_server))


@pytest.mark.parametrize(
    ("version", "flavour"),
    [("1.8.10", "1.8"), ("v2.7.1", "2.x"), ("3.0.0", "3.x")],
    ids=["1.8", "2.x", "3.x"],
)
def test_auto_picks_influxdb_client_from_1_8_on(version: str, flavour: str) -> None:
    with serving(FakeInflux2(version=version)) as running:
        settings = Settings(influx_url=running.url, influx_token=TOKEN)
        sink = open_sink(settings, org=ORG)
        try:
            assert isinstance(sink, InfluxClientSink)
            assert sink.flavour == flavour
        finally:
            sink.close()


def test_auto_asks_with_the_token_when_ping_wants_one() -> None:
    fake = FakeInflux2(version="3.1.0", token=TOKEN, ping_needs_token=True)
    with serving(fake) as running:
        sink = open_sink(Settings(influx_url=running.url, influx_token=TOKEN))
        try:
            assert isinstance(sink, InfluxClientSink) and sink.flavour == "3.x"
        finally:
            sink.close()


def test_influx_org_comes_from_the_settings_when_not_given() -> None:
    with serving(FakeInflux2(version="v2.7.1")) as running:
        settings = Settings(influx_url=running.url, influx_token=TOKEN)
        with pytest.raises(ConfigError, match="INFLUX_ORG is not set"):
            open_sink(settings)


def test_v1_is_used_as_told_without_asking_the_server() -> None:
    sink = open_sink(Settings(influx_url=f"http://127.0.0.1:{free_port()}"), api="v1")
    assert isinstance(sink, InfluxV1Sink)
    sink.close()


def test_v2_against_influxdb_1_6_says_it_has_no_v2_write(influxd: InfluxServer) -> None:
    with pytest.raises(
        ConfigError, match=r"INFLUX_API=v2, but InfluxDB 1\.6\.7\S* at .* has no /api/v2/write"
    ):
        open_sink(Settings(influx_url=influxd.url), api="v2")


def test_unknown_api_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="INFLUX_API must be one of auto, v1, v2, not 'v9'"):
        open_sink(Settings(), api="v9")


def test_output_wins_over_any_server(tmp_path: Path) -> None:
    sink = open_sink(Settings(influx_url="http://127.0.0.1:1"), output=str(tmp_path / "a.lp"))
    assert isinstance(sink, FileSink)
    sink.close()


# --- the shape of sinks/ -----------------------------------------------------------------------

IMPLEMENTATIONS = {"influx_v1": set(), "influx_client": {"buckets"}, "file": set()}  # own modules
SHARED = {"base", "influxql", "readback"}


def sink_imports(module: str) -> set[str]:
    """The `archiver.sinks.*` modules `module` imports, at the top or inside a function."""
    tree = ast.parse((Path(archiver.sinks.__file__).parent / f"{module}.py").read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "archiver.sinks":
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("archiver.sinks."):
            found.add(node.module.removeprefix("archiver.sinks."))
    return found


@pytest.mark.parametrize("module", sorted(IMPLEMENTATIONS))
def test_a_sink_imports_only_the_base_and_shared_modules_never_another_sink(module: str) -> None:
    assert sink_imports(module) <= SHARED | IMPLEMENTATIONS[module]


def test_the_file_sink_needs_nothing_of_influxdb() -> None:
    assert sink_imports("file") == {"base"}


def test_the_shared_modules_import_no_sink_and_base_imports_nothing() -> None:
    assert sink_imports("base") == set()
    assert sink_imports("buckets") == {"base"}
    for module in SHARED - {"base"}:
        assert sink_imports(module) <= SHARED, module
