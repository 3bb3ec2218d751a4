"""Split the query files among N workers: `--shard I/N` keeps the queries of shard I.

A query belongs to shard `crc32(name) mod N`. crc32 of the UTF-8 name is the same on every
machine, Python version and run (the built-in `hash()` is salted per process), so shard I of N
always holds the same queries, and every query is in exactly one shard. Shards are numbered
from 0, like a Kubernetes Indexed Job's JOB_COMPLETION_INDEX and a StatefulSet's ordinals.

Shards only spread the work; leases still keep two workers off the same (query, target).
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # not at run time: `--help` parses --shard without pydantic
    from archiver.queries import QueryDef, QueryFileProblem

_SHARD = re.compile(r"\s*(\d+)\s*/\s*(\d+)\s*")


def shard_of(query_name: str, count: int) -> int:
    """The shard (0 to count - 1) that holds this query."""
    return zlib.crc32(query_name.encode("utf-8")) % count


@dataclass(frozen=True)
class Shard:
    index: int
    count: int

    def __post_init__(self) -> None:
        if self.count < 1 or not 0 <= self.index < self.count:
            raise ValueError(
                f"shard {self.index}/{self.count} does not exist: "
                f"give I/N with N >= 1 and 0 <= I < N (e.g. 0/4)"
            )

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    def owns(self, query_name: str) -> bool:
        return shard_of(query_name, self.count) == self.index

    def queries(self, queries: Iterable[QueryDef]) -> list[QueryDef]:
        return [query for query in queries if self.owns(query.name)]

    def problems(self, problems: Iterable[QueryFileProblem]) -> list[QueryFileProblem]:
        """The problems of this shard's files; a file without a readable name goes by its stem."""
        return [p for p in problems if self.owns(p.query or p.path.stem)]


def parse_shard(text: str) -> Shard:
    """`"I/N"` (e.g. `"0/4"`) as a Shard; ValueError with the fix otherwise."""
    match = _SHARD.fullmatch(text)
    if match is None:
        raise ValueError(f"shard {text!r} is not I/N: give e.g. 0/4 (shards count from 0)")
    return Shard(int(match.group(1)), int(match.group(2)))
