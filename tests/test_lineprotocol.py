"""The one line-protocol serializer (archiver.lineprotocol): escaping as influxd 1.6.7 parses it,
the order of tags and fields every producer shares, and the parse direction verify uses."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from archiver import lineprotocol
from archiver.errors import InfluxError
from archiver.pipeline import events, metrics, transform
from archiver.sinks.influx_v1 import InfluxV1Sink
from archiver.verify.compare import parse_line
from tests.influxd import InfluxServer


@pytest.fixture
def sink(influxd: InfluxServer) -> Iterator[InfluxV1Sink]:
    with InfluxV1Sink(influxd.url) as sink:
        yield sink


@pytest.fixture
def database(influxd: InfluxServer, influx_db: str) -> str:
    influxd.query(f'CREATE DATABASE "{influx_db}"')
    return influx_db


# --- what influxd 1.6.7 makes of escapes (the rules the serializer follows) -----------------


@pytest.mark.parametrize(
    ("written", "read_back"),
    [
        (r"C:\tmp\x", "C:\\tmp\\x"),
        (r"a\\b", "a\\\\b"),
        (r"a\\,b", "a\\,b"),
        (r"a\ b", "a b"),
        (r"a\=b", "a=b"),
        ('a"b', 'a"b'),
    ],
    ids=[
        "lone-backslashes",
        "double-backslash-kept",
        "backslash-comma",
        "space",
        "equals",
        "quote",
    ],
)
def test_tag_value_escaping(
    sink: InfluxV1Sink, influxd: InfluxServer, database: str, written: str, read_back: str
) -> None:
    sink.write(database, None, [f"nr_esc,t={written} value=1 1700000000"])

    assert influxd.points(database, "nr_esc")[0]["tags"] == {"t": read_back}


@pytest.mark.parametrize("written", [r"end\ ", r"end\\ "], ids=["one", "two"])
def test_a_tag_value_cannot_end_with_a_backslash(
    sink: InfluxV1Sink, database: str, written: str
) -> None:
    with pytest.raises(InfluxError, match="invalid tag format"):
        sink.write(database, None, [f"nr_esc,t={written}value=1 1700000000"])


def test_string_field_escaping(sink: InfluxV1Sink, influxd: InfluxServer, database: str) -> None:
    sink.write(database, None, [r'nr_str s="end\\",q="a\"b",lone="a\b" 1700000000'])

    assert influxd.points(database, "nr_str")[0]["fields"] == {
        "s": "end\\",
        "q": 'a"b',
        "lone": "a\\b",
    }


# --- the serializer ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param(1, "1.0", id="int-becomes-float"),
        pytest.param(2.5, "2.5", id="float"),
        pytest.param(True, "true", id="bool-is-not-a-number"),
        pytest.param(None, None, id="null-gives-no-field"),
        pytest.param(float("nan"), None, id="nan-gives-no-field"),
        pytest.param(float("inf"), None, id="inf-gives-no-field"),
        pytest.param('a"b\\c', '"a\\"b\\\\c"', id="string-escaped"),
        pytest.param([1, 2], None, id="list-gives-no-field"),
    ],
)
def test_format_field(value, expected):
    assert lineprotocol.format_field(value) == expected


NUMBERS = [0, 1, -1, 54, 10**15 - 1, 10**15, -(10**15), 2**53, 2**53 + 1, 10**16, 10**17 + 3]
NUMBERS += [0.5, -0.0, 1e16, 1.5e-7, 2.0**60]


def test_the_transform_formats_numbers_inline_as_format_field_does():
    row = {"beginTimeSeconds": 1, **{f"f{i:02d}": n for i, n in enumerate(NUMBERS)}}
    [text] = transform.to_lines([row], [], "m", {})
    expected = ",".join(f"f{i:02d}={lineprotocol.format_field(n)}" for i, n in enumerate(NUMBERS))
    assert text == f"m {expected} 1"


@pytest.mark.parametrize(
    ("escape", "text", "expected"),
    [
        (lineprotocol.escape_key, "a b,c=d", r"a\ b\,c\=d"),
        (lineprotocol.escape_key, "C:\\tmp\\", "C:\\tmp"),
        (lineprotocol.escape_key, "a\\\\", "a"),
        (lineprotocol.escape_key, "a\\b", "a\\b"),
        (lineprotocol.escape_measurement, "nr m,x=y", r"nr\ m\,x=y"),
        (lineprotocol.escape_string, 'say "hi" \\o/', r'"say \"hi\" \\o/"'),
    ],
    ids=[
        "key-delimiters",
        "trailing-backslash-dropped",
        "trailing-backslashes-dropped",
        "inner-backslash-kept",
        "measurement-keeps-equals",
        "string-quotes-and-backslashes",
    ],
)
def test_escaping(escape, text, expected):
    assert escape(text) == expected


TRICKY = 'C:\\tmp\\x, y=z "q" \\'  # every delimiter, a quote, inner and trailing backslashes


def test_serialized_names_and_values_read_back_from_influxd_and_verify_alike(
    sink: InfluxV1Sink, influxd: InfluxServer, database: str
) -> None:
    text = lineprotocol.point(
        "nr m,x=y", {"t k,=": TRICKY}, {"f.k=, v": TRICKY, "n": 2}, 1700000000
    )
    sink.write(database, None, [text])

    [stored] = influxd.points(database, "nr m,x=y")
    assert stored["tags"] == {"t k,=": TRICKY.rstrip("\\")}  # README: trailing `\` is dropped
    assert stored["fields"] == {"f.k=, v": TRICKY, "n": 2.0}
    read = parse_line(text)  # verify's parser, with the same escape tables
    assert read.measurement == "nr m,x=y"
    assert dict(read.tags) == stored["tags"]
    assert dict(read.fields) == stored["fields"]


@pytest.mark.parametrize("text", ["plain", "a b,c=d", "C:\\tmp\\x", "=,= ,"])
def test_unescape_undoes_escape(text):
    assert lineprotocol.unescape_key(lineprotocol.escape_key(text)) == text
    assert lineprotocol.unescape_measurement(lineprotocol.escape_measurement(text)) == text
    assert lineprotocol.unescape_string(lineprotocol.escape_string(text)[1:-1]) == text


# --- one order for every producer -------------------------------------------------------------


def test_tags_sorted_by_key_and_fields_by_text_whoever_builds_the_line():
    fields = {"zeta": 1, "error": True, "error.class": "E", "alpha": 2.5}
    expected = 'm,app=a,env=prod alpha=2.5,error.class="E",error=true,zeta=1.0'
    aggregate = transform.to_lines(
        [{"beginTimeSeconds": 7, "facet": "a", "app": "a", **fields}], ["app"], "m", {"env": "prod"}
    )
    event = events.to_lines(
        [{"timestamp": 7000, "app": "a", **fields}], "m", ["app"], {"env": "prod"}
    )
    point = lineprotocol.point("m", {"env": "prod", "app": "a"}, fields, 7)

    assert aggregate == [f"{expected} 7"]
    assert event == [f"{expected} 7000000000"]
    assert point == f"{expected} 7"


def test_self_metrics_have_the_same_order():
    now = datetime(2026, 1, 1, tzinfo=UTC)
    text = metrics.job_line(
        query="q x", target="t", kind="run", status="ok", points=1, windows=1, nr_requests=1,
        retries=0, seconds=0.5, exported_until=now, now=now,
    )  # fmt: skip
    head = "nr_archiver,kind=run,query=q\\ x,status=ok,target=t "
    assert text.startswith(head)
    names = [part.split("=")[0] for part in text[len(head) :].rsplit(" ", 1)[0].split(",")]
    assert names == sorted(names)
    assert text.endswith(f" {int(now.timestamp())}")
