"""In-process measurements: the transform alone, and InfluxDB's own ingest rate (the limit).

Both use the archiver's own pieces (the query file's NRQL, `pipeline.plan`, `transform`) on the fake
server's data model, so they handle the very points the end-to-end run writes.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import requests

from archiver.pipeline import events, transform
from archiver.pipeline.plan import PlannedJob, WindowSizer, windows_of
from archiver.queries import QueryDef
from archiver.sinks.base import BATCH_SIZE
from archiver.sinks.influx_v1 import gzipped  # the limit posts bodies compressed like the sink
from bench.harness import ACCOUNT
from fakes import data

BATCH_LINES = BATCH_SIZE  # the limit's bodies are as long as the sink's

WRITE_TIMEOUT_SECONDS = 60


@dataclass(frozen=True)
class Answer:
    rows: list[dict[str, object]]
    facets: Sequence[str]


def runner_answers(
    query: QueryDef, since: datetime, until: datetime, ask: Callable[[str], Answer]
) -> Iterator[Answer]:
    """The answers a fresh backfill of [since, until) writes, in order; `ask` answers each NRQL.

    The windows come from the pipeline's own planning (`plan.windows_of` with its
    `WindowSizer`, and one `events.EventPlanner` for raw events, which cuts each window as
    finely as the last one needed and asks again for the halves of a capped part), so the
    requests are the ones the archiver will send. `ask` is called for
    every request, capped event answers included; only the answers that get written are
    yielded. Should the runner plan differently, the precomputed answers are not asked for
    and the fake answers live: `precomputed_answers` in the results tells.
    """
    target = query.targets[0]
    job = PlannedJob(query, target, ACCOUNT, [(since, until)], [])
    sizer = WindowSizer(target.interval)

    def rows(window_since: datetime, window_until: datetime) -> list[dict[str, object]]:
        return ask(query.nrql_for(window_since, window_until, target.interval)).rows

    planner = events.EventPlanner()
    for window in windows_of(job, sizer):
        if query.mode == "events":
            for part in planner.plan(rows, window.since, window.until):
                yield Answer(list(part.rows), ())
        else:
            answer = ask(query.nrql_for(window.since, window.until, target.interval))
            sizer.learn(window, len(answer.rows))
            yield answer


def lines_of(query: QueryDef, answer: Answer) -> list[str]:
    """The line protocol the archiver writes for `answer`."""
    if query.mode == "events":
        return events.to_lines(answer.rows, query.measurement, query.tag_attributes, query.tags)
    return transform.to_lines(answer.rows, answer.facets, query.measurement, query.tags)


def precision_of(query: QueryDef) -> str:
    return "ns" if query.mode == "events" else "s"


def answers(nrqls: Iterable[str], *, retention: timedelta) -> Iterator[Answer]:
    """What the fake server answers for each of `nrqls` (none of them reaches into the future)."""
    for nrql in nrqls:
        result = data.answer(nrql, now=time.time(), retention_seconds=retention.total_seconds())
        yield Answer(result.results, result.metadata.get("facets") or ())


def transform_rate(query: QueryDef, sample: list[Answer], repeats: int = 3) -> tuple[int, float]:
    """(rows, best CPU seconds) of `transform.to_lines` over every answer of `sample`.

    CPU time of this thread, so the figure is rows/s on one core whatever else the machine runs.
    """
    rows = sum(len(answer.rows) for answer in sample)
    best = float("inf")
    for _ in range(repeats):
        started = time.thread_time()
        for answer in sample:
            transform.to_lines(answer.rows, answer.facets, query.measurement, query.tags)
        best = min(best, time.thread_time() - started)
    return rows, best


def gzipped_batches(query: QueryDef, source: Iterable[Answer]) -> tuple[list[bytes], int]:
    """Every window's lines cut into gzipped bodies of BATCH_LINES lines, as the sink sends them."""
    bodies, points = [], 0
    for answer in source:
        lines = lines_of(query, answer)
        points += len(lines)
        for start in range(0, len(lines), BATCH_LINES):
            body = "\n".join(lines[start : start + BATCH_LINES]).encode()
            bodies.append(gzipped(body))
    return bodies, points


def post_batches(
    influx_url: str, database: str, bodies: list[bytes], precision: str = "s"
) -> float:
    """Seconds InfluxDB takes to acknowledge every body, sent one after another."""
    headers = {"Content-Type": "text/plain; charset=utf-8", "Content-Encoding": "gzip"}
    params = {"db": database, "precision": precision}
    with requests.Session() as session:
        created = session.post(
            f"{influx_url}/query", params={"q": f'CREATE DATABASE "{database}"'}, timeout=30
        )
        created.raise_for_status()
        started = time.perf_counter()
        for body in bodies:
            response = session.post(
                f"{influx_url}/write",
                params=params,
                data=body,
                headers=headers,
                timeout=WRITE_TIMEOUT_SECONDS,
            )
            if response.status_code != 204:
                raise RuntimeError(
                    f"InfluxDB refused a batch: {response.status_code} {response.text}"
                )
        return time.perf_counter() - started
