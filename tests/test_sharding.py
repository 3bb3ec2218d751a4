"""`--shard I/N`: every query in exactly one shard, the same one on every machine and run."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest

from archiver.arguments import build_parser
from archiver.pipeline.sharding import Shard, parse_shard, shard_of
from archiver.queries import QueryFileProblem
from tests.e2e import Cli, cli_env
from tests.inprocess import InProcessCli

NAMES = [f"q{i:03d}" for i in range(200)] + ["transaction_duration", "logins", "Zürich ☃"]


@pytest.mark.parametrize(
    ("text", "shard"),
    [("0/1", Shard(0, 1)), ("0/4", Shard(0, 4)), ("3/4", Shard(3, 4)), (" 2 / 3 ", Shard(2, 3))],
    ids=["one-shard", "first", "last", "spaces"],
)
def test_parse_shard(text, shard):
    assert parse_shard(text) == shard
    assert str(shard) == text.replace(" ", "")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("4/4", "shard 4/4 does not exist"),
        ("1/0", "shard 1/0 does not exist"),
        ("-1/4", "'-1/4' is not I/N"),
        ("1", "'1' is not I/N"),
        ("a/b", "'a/b' is not I/N"),
        ("", "'' is not I/N"),
    ],
    ids=["index-too-big", "no-shards", "negative", "no-slash", "not-numbers", "empty"],
)
def test_a_bad_shard_says_what_to_give(text, message):
    with pytest.raises(ValueError, match=re.escape(message)) as error:
        parse_shard(text)
    assert "e.g. 0/4" in str(error.value)


@pytest.mark.parametrize("count", [1, 2, 3, 4, 7])
def test_every_query_is_in_exactly_one_shard(count):
    shards = [Shard(i, count) for i in range(count)]
    for name in NAMES:
        assert [shard.owns(name) for shard in shards].count(True) == 1, name


def test_the_hash_is_stable_across_processes_and_versions():
    # crc32 of the UTF-8 name, never Python's per-process salted hash(): pinned values.
    assert [shard_of(name, 4) for name in ("transaction_duration", "error_rate")] == [0, 1]
    assert [shard_of(name, 3) for name in ("logins", "Zürich ☃")] == [2, 2]


def test_shards_are_balanced():
    sizes = Counter(shard_of(name, 4) for name in NAMES[:200])
    assert sorted(sizes) == [0, 1, 2, 3]
    assert all(35 <= size <= 65 for size in sizes.values()), sizes


def test_a_broken_file_without_a_name_belongs_to_the_shard_of_its_stem():
    problem = QueryFileProblem(Path("queries/logins.yaml"), None, "not YAML")
    owner = Shard(shard_of("logins", 3), 3)
    others = [Shard(i, 3) for i in range(3) if i != owner.index]
    assert owner.problems([problem]) == [problem]
    assert all(other.problems([problem]) == [] for other in others)


# -- the command line -------------------------------------------------------------------------


def test_run_and_schedule_accept_a_shard():
    parser = build_parser()
    assert parser.parse_args(["run", "--shard", "1/3"]).shard == Shard(1, 3)
    assert parser.parse_args(["schedule", "--shard", "0/2"]).shard == Shard(0, 2)
    assert parser.parse_args(["run"]).shard is None


@pytest.fixture
def cli(tmp_path, monkeypatch, capsys) -> InProcessCli:
    queries = tmp_path / "queries"
    queries.mkdir()
    for name in NAMES[:12]:
        (queries / f"{name}.yaml").write_text(
            "nrql: SELECT count(*) FROM Transaction\n"
            f"measurement: m_{name}\ninterval: 5 minutes\ndatabase: d\nstart: 2h\n"
        )
    env = cli_env(
        nerdgraph_url="http://127.0.0.1:9/graphql",  # a dry run never calls it
        api_key="NRAK-UNUSED",
        influx_url="http://127.0.0.1:9",
        db_url=f"sqlite:///{tmp_path / 'state.db'}",
        queries=queries,
    )
    return InProcessCli(env, tmp_path, monkeypatch, capsys)


def planned_queries(cli: Cli, shard: str) -> list[str]:
    result = cli("run", "--dry-run", "--shard", shard)
    assert result.returncode == 0, result.stderr
    return re.findall(r"^(\S+) → ", result.stdout, flags=re.MULTILINE)


def test_the_shards_of_a_dry_run_split_the_query_files(cli):
    first, second = planned_queries(cli, "0/2"), planned_queries(cli, "1/2")
    assert first and second
    assert sorted(first + second) == NAMES[:12]
    assert all(shard_of(name, 2) == 0 for name in first)


def test_a_shard_that_does_not_exist_is_a_usage_error(cli):
    result = cli("run", "--shard", "2/2")
    assert result.returncode == 2
    assert "argument --shard: shard 2/2 does not exist" in result.stderr
