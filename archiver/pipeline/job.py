"""One job, one (query, target): fetch → transform → write → advance.

New Relic answers the next windows (asked several at once on helper threads, parsed and made
into line protocol when taken, used in order) while the sink writes this one. The checkpoint
(or backfill progress) moves in its own transaction after the sink acknowledged every line of
the window, never before; the lease is renewed after each window.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial
from itertools import chain
from typing import Any, NamedTuple

from archiver import windows
from archiver.errors import QueryTooBig
from archiver.logs import redact
from archiver.newrelic.client import Digest, NewRelicClient, NrqlResult
from archiver.pipeline import completeness, events, transform
from archiver.pipeline.cardinality import SeriesGuard
from archiver.pipeline.plan import (
    PlannedJob,
    WindowSizer,
    sizer_for,
    utcnow,
    window_buckets,
    windows_of,
)
from archiver.pipeline.progress import Progress
from archiver.pipeline.readahead import Hold, Turns, read_ahead_groups
from archiver.queries import QueryDef, funnels
from archiver.sinks.base import BATCH_SIZE, Precision, Sink, WriteResult
from archiver.state.store import State, Written
from archiver.windows import Window, iso
from archiver.wording import plural

log = logging.getLogger(__name__)

OTHER_KEPT = "the facets beyond it are archived together as __other__"
OTHER_LOST = "the facets beyond it are missing (raise LIMIT, narrow WHERE, or set `other: true`)"
READ_AHEAD_WINDOWS = 1  # windows transformed ahead of the one being written (verify)
# TIMESERIES windows asked of New Relic at once, ahead of the one being written (at most the
# limiter's max_concurrent, 5), so that New Relic's latency overlaps; and no more of them than
# AHEAD_BYTES of JSON expected (answers of wide rows are fewer at once). They wait unparsed
# until their window is taken, the JSON bytes being the least memory an answer takes.
# Measured 2026-11-29, bench one row at a time (loads 2-5, 1-2 tries; README: Performance):
# at 4, g had 0.92-0.95 of b's points/s (3: 0.89; the earlier design, parsed answers held:
# 0.57 at 2); peak RSS b 135-140 MiB, c 174-194 (2 of its 9.5 MB answers fit in AHEAD_BYTES;
# 16 MiB, 1 of them: c 176 but g 0.84 of b), d 110-116 (before: b 168, c 239-255, d 345-358).
FETCH_AHEAD = 4
AHEAD_BYTES = 24 * 2**20
LEASE_TTL = timedelta(minutes=10)
LEASE_RENEWAL = 0.1  # of the lease's time: how long after a renewal the next one is due
# Windows ready together are written together up to this many lines: one write request of
# InfluxDB 1.x's sink (two of influxdb-client's) and one state transaction for all of them.
# Windows of a few hundred points (no facet, 366 buckets; raw events) spent more on the round
# trips than on their points.
COALESCE_LINES = BATCH_SIZE
WRITERS = 2  # groups written at once (Sink.write may be called from several threads)
WRITES_AHEAD = WRITERS  # groups handed over and not yet recorded


@dataclass
class JobResult:
    query: str
    target: str
    status: str = "ok"  # ok | failed | busy (another process holds it) | interrupted
    windows: int = 0
    points: int = 0
    nr_requests: int = 0
    retries: int = 0
    inspected: int = 0  # New Relic's inspectedCount, summed over the answers that told it
    seconds: float = 0.0
    exported_until: datetime | None = None  # the incremental checkpoint after the job
    error: str | None = None
    window: Window | None = None  # the window being exported when it failed
    backfilled: list[tuple[datetime, datetime]] = field(default_factory=list)
    dropped_keys: set[str] = field(default_factory=set)  # answer keys with no field, warned
    messages: set[str] = field(default_factory=set)  # New Relic's warnings about the query
    facet_limit_hit: int = 0  # answers with as many facets as the LIMIT
    warned: set[str] = field(default_factory=set)  # warnings already logged by this job

    @property
    def failed(self) -> bool:
        return self.status == "failed"


class Batch(NamedTuple):
    """One window as New Relic answered it, transformed: lines, their precision, and what New
    Relic inspected for it."""

    window: Window
    lines: list[str]
    precision: Precision
    inspected: int | None = None


class Digested(NamedTuple):
    """What the runner keeps of a TIMESERIES answer while it waits to be written (`_digest`):
    its line protocol, and what the checks made in window order need, not its rows."""

    lines: list[str]
    rows: int  # in New Relic's answer (otherResult's left out): what sizes the next windows
    facets: tuple[str, ...]  # the answer's FACET attributes
    keys: completeness.FacetKeys | None  # its distinct facets; None without FACET
    messages: tuple[str, ...]
    inspected: int | None
    unseen: set[str]  # guarded keys New Relic named otherwise (completeness.drop_unsampled)
    dropped: set[str]  # answer keys with no line-protocol form
    error: Exception | None = None  # raised in order, after the series guard saw the answer


def _digest(query: QueryDef, maker: transform.LineMaker, answer: NrqlResult) -> Digested:
    """An answer's line protocol and what its checks need (`Digested`), with otherResult's
    rows and without the zeros of empty buckets.

    Runs on the client's parsing thread as soon as the answer is parsed (`client.digested`);
    it changes nothing of the job's: a failure is kept, and raised when the window is used.
    """
    rows = answer.results
    names = answer.facets or query.facets
    keys = completeness.facet_keys(rows, names) if names else None
    count = len(rows)
    unseen: set[str] = set()
    dropped: set[str] = set()
    lines: list[str] = []
    error: Exception | None = None
    try:
        if query.other:
            rows.extend(completeness.other_rows(answer.other, names))
        unseen = completeness.drop_unsampled(rows, query.sample_guards) if rows else set()
        lines = maker.to_lines(_consumed(rows), answer.facets, dropped=dropped)
    except Exception as exc:  # raised in order, by Job._check
        error = exc
    return Digested(
        lines, count, answer.facets, keys, answer.messages, answer.inspected, unseen, dropped,
        error,
    )  # fmt: skip


def _consumed(rows: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """The rows in order, each let go of as it is handed out: while an answer's lines are made,
    its rows are freed one by one (a row takes two to three times the memory of its line).
    `transform.to_lines` reads its rows once, in order (tests/test_job.py checks it)."""
    for index, row in enumerate(rows):
        rows[index] = None  # type: ignore[call-overload]
        yield row
    rows.clear()


def new_holder() -> str:
    """This process's lease holder name: `host:pid:nonce`."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def holder_is_dead(holder: str) -> bool:
    """A lease holder `host:pid:nonce` on this host whose process is gone.

    Our own pid under another nonce is an earlier incarnation (a container restarted as
    PID 1 again); a holder on another host is only freed by its lease's expiry.
    """
    host, _, rest = holder.partition(":")
    pid_text, _, _nonce = rest.partition(":")
    if host != socket.gethostname() or not pid_text.isdigit():
        return False
    pid = int(pid_text)
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


class Stopped(Exception):
    """A group not written because an earlier one failed (never raised out of the job)."""


def _lines(batch: Batch) -> int:
    return len(batch.lines)


def log_fields(query: str, target: str, window: Window | None = None, **more: object) -> dict:
    """The `extra=` of a log call: JSON log lines carry these as keys (archiver.logs)."""
    fields: dict[str, object] = {"query": query, "target": target}
    if window is not None:
        fields["window_since"], fields["window_until"] = iso(window.since), iso(window.until)
    return {**fields, **more}


class Said:
    """New Relic's messages already logged in this run, per query: shared by its jobs."""

    def __init__(self) -> None:
        self._said: set[tuple[str, str]] = set()
        self._lock = threading.Lock()

    def messages(self, query: str, result: JobResult, messages: tuple[str, ...]) -> None:
        """Counted per job; logged once per query and run."""
        result.messages.update(messages)
        for message in messages:
            with self._lock:
                if (query, message) in self._said:
                    continue
                self._said.add((query, message))
            log.warning("%s: New Relic says: %s", query, redact(message))


@dataclass
class Job:
    """A planned job and what it runs with; `result` counts what it did."""

    planned: PlannedJob
    result: JobResult
    state: State
    client: NewRelicClient
    stopping: Callable[[], bool]
    said: Said = field(default_factory=Said)
    now: Callable[[], datetime] = utcnow
    progress: Progress | None = None
    _renewed: datetime | None = field(default=None, init=False, repr=False)  # the lease, last

    def export(
        self, sink: Sink, export_id: int, backfill_id: int | None, holder: str, lease_ttl: timedelta
    ) -> None:
        """Write every window, recording each after the sink acknowledged it."""
        job, result, state = self.planned, self.result, self.state
        name, key = job.name, job.target.key
        for note in job.skipped:
            log.warning("%s → %s: %s", name, key, note, extra=log_fields(name, key))
        if self.progress is not None:
            self.progress.plan(sum((u - s).total_seconds() for s, u in job.segments))
        sizer = sizer_for(state, job)
        # Groups are written on WRITERS threads, so InfluxDB has the next group's batches while it
        # finishes a group's last; a recorder thread records each group once acknowledged, in
        # order, while this thread hands over the next. At most WRITES_AHEAD groups are handed
        # over and not recorded. After a failed write or a lost lease nothing more is recorded,
        # so the checkpoint never passes a window that was not written.
        handed: deque[tuple[list[Batch], Future[bool]]] = deque()
        # New Relic answers the next windows (and they are transformed) while the sink writes
        # these. The windows ready by then are written together (one write, one transaction),
        # up to COALESCE_LINES lines; one window waits whatever its size, so memory stays a few
        # windows. While the last group handed over is being written and recorded, a group
        # that could still grow waits for the windows that come meanwhile (`Hold`): with the
        # writers free, small windows went in writes of their own (bench row e, 366 lines a
        # window: 23-39 writes, now 9; 17.8 -> 16.1 µs of CPU a point, 2026-11-29). With
        # nothing being written, a window goes at once: a slow New Relic gives groups of one,
        # and nothing is held back to fill a group.
        hold = Hold(lambda: bool(handed) and not handed[-1][1].done())
        thread = threading.current_thread().name
        ahead = read_ahead_groups(
            self.batches(sizer), limit=COALESCE_LINES, size=_lines, name=f"{thread}-fetch",
            hold=hold,
        )  # fmt: skip
        writers = ThreadPoolExecutor(WRITERS, thread_name_prefix=f"{thread}-write")
        recorder = ThreadPoolExecutor(1, thread_name_prefix=f"{thread}-record")
        stop = threading.Event()

        def record(group: list[Batch], written: Future[WriteResult]) -> bool:
            if stop.is_set():
                return False
            try:
                kept = self._record(
                    group, written.result(), export_id, backfill_id, sizer, holder, lease_ttl
                )
            except BaseException:
                stop.set()
                raise
            if not kept:
                stop.set()
            return kept

        def write(lines: list[str], precision: Precision) -> WriteResult:
            if stop.is_set():  # an earlier group failed: this one is asked again next time
                raise Stopped
            return sink.write(job.target.database, job.target.retention_policy, lines, precision)

        def hand_over(group: list[Batch]) -> Future[bool]:
            lines = group[0].lines if len(group) == 1 else [*chain(*(b.lines for b in group))]
            written = writers.submit(write, lines, group[0].precision)
            recorded = recorder.submit(record, group, written)
            recorded.add_done_callback(lambda _: hold.wake())
            return recorded

        writing: Window | None = None  # the group whose write failed
        failure: Exception | None = None  # New Relic's: raised once what was written is recorded

        def settle(group: list[Batch], recorded: Future[bool]) -> bool:
            nonlocal writing
            writing = group[0].window
            kept = recorded.result()  # the write's failure, raised here
            writing = None
            return kept

        try:
            with closing(ahead):
                groups = iter(ahead)
                while not stop.is_set():
                    try:
                        group = next(groups)
                    except StopIteration:
                        break
                    except Exception as exc:
                        failure = exc
                        break
                    handed.append((group, hand_over(group)))
                    while handed and (len(handed) > WRITES_AHEAD or handed[0][1].done()):
                        if not settle(*handed.popleft()):
                            return
                while handed:
                    if not settle(*handed.popleft()):
                        return
                if failure is not None:
                    raise failure
        except BaseException:
            # Named after the read-ahead thread stopped: until then it names the windows it asks.
            if writing is not None:
                result.window = writing
            raise
        finally:
            recorder.shutdown(wait=True, cancel_futures=True)
            writers.shutdown(wait=True, cancel_futures=True)
        if result.status == "interrupted":
            return
        result.window = None
        if backfill_id is not None:
            state.finish_backfill(backfill_id, self.now())
            result.backfilled = job.segments

    def _record(
        self,
        group: list[Batch],
        acknowledged: WriteResult,
        export_id: int,
        backfill_id: int | None,
        sizer: WindowSizer,
        holder: str,
        lease_ttl: timedelta,
    ) -> bool:
        """Record a group of windows the sink acknowledged (on the recorder thread); False when
        the lease was lost meanwhile: the job stops there."""
        job, result, state = self.planned, self.result, self.state
        name, key = job.name, job.target.key
        done = [Written(b.window.since, b.window.until, len(b.lines), b.inspected) for b in group]
        state.record_windows(
            export_id, name, key, done, self.now(),
            backfill_id=backfill_id, max_buckets=sizer.max_buckets,
        )  # fmt: skip
        result.windows += len(group)
        result.points += acknowledged.lines - acknowledged.dropped_beyond_retention
        for batch in group:
            if self.progress is not None:
                seconds = (batch.window.until - batch.window.since).total_seconds()
                self.progress.advance(seconds, len(batch.lines))
            log.debug(
                "%s → %s: %s: %s",
                name,
                key,
                batch.window,
                plural(len(batch.lines), "point"),
                extra=log_fields(name, key, batch.window, points=len(batch.lines)),
            )
        if self._renew_lease(holder, lease_ttl):
            return True
        last = group[-1].window
        log.warning(
            "%s → %s: lost the lease after %s (a window took longer than "
            "ARCHIVER_LEASE_SECONDS?); the run that took it goes on from there",
            name,
            key,
            last,
            extra=log_fields(name, key, last),
        )
        result.status = "busy"
        return False

    def _renew_lease(self, holder: str, lease_ttl: timedelta) -> bool:
        """Renew the lease after a group is recorded, once a tenth of its time has passed since
        it was last renewed: until it expires nobody can take it (a live holder's lease is never
        free), and a transaction less per group of windows is a tenth less CPU a point where
        groups are small (bench rows e and f: 29.4 → 26.4 and 7.0 → 6.3 µs, 2026-11-29). False
        when it was lost: the job stops."""
        now = self.now()
        if self._renewed is not None and now - self._renewed < lease_ttl * LEASE_RENEWAL:
            return True
        name, key = self.planned.name, self.planned.target.key
        kept = self.state.acquire_lease(
            name, key, holder, lease_ttl, now, holder_is_dead=holder_is_dead
        )
        if kept:
            self._renewed = now
        return kept

    def batches(self, sizer: WindowSizer | None = None) -> Iterator[Batch]:
        """Every window of the job as New Relic answers it, transformed.

        What `run` writes, and what `verify` compares with InfluxDB.
        """
        if self.planned.query.mode == "events":
            return self._event_batches()
        return self._aggregate_batches(sizer or sizer_for(self.state, self.planned))

    def _aggregate_batches(self, sizer: WindowSizer) -> Iterator[Batch]:
        """TIMESERIES windows: one request each, sized by the rows the last answers had.

        The first window is asked alone (its answer sizes the next ones); after it, up to
        FETCH_AHEAD windows (at most AHEAD_BYTES of JSON) are asked at once on helper threads,
        so New Relic's latency overlaps. An answer is parsed and made into line protocol when
        its window is taken (`_digest`, one answer at a time in the process: `client.parsing`),
        so the windows asked ahead wait as JSON bytes, and none holds its rows (`export` takes
        the next window while the sink writes this one). The answers are used in order, and
        everything that
        depends on the windows before runs here, in order: the series guard (before anything
        is written), the sizer, New Relic's messages and the warnings, once per job. A window
        New Relic finds too big is asked again in parts of half the buckets (and half again);
        the sizer keeps the smaller size for the rest of the job, and the windows asked after
        it are asked again at that size, the first of them alone (until New Relic answers one,
        the others would be refused too).
        """
        job = self.planned
        query, interval = job.query, job.target.interval
        guard = SeriesGuard(query.facets, query.max_series)
        maker = transform.LineMaker(
            query.measurement, query.job_tags(job.account_id),
            funnels=funnels.funnel_steps(query.nrql),
        )  # fmt: skip
        digest = partial(_digest, query, maker)
        thread = threading.current_thread().name
        turns = Turns()
        with ThreadPoolExecutor(FETCH_AHEAD, thread_name_prefix=f"{thread}-ask") as pool:
            asked: deque[tuple[Window, Future[NrqlResult]]] = deque()
            try:
                for since, until in job.segments:
                    sized = sizer.rows_per_bucket is not None or sizer.max_buckets is not None
                    while since < until or asked:
                        while since < until and len(asked) < (FETCH_AHEAD if sized else 1):
                            if self._interrupted():
                                return
                            buckets = window_buckets(sizer, query, since, until, interval)
                            window = windows.next_window(since, until, interval, buckets)
                            waiting = sum(sizer.expected_bytes(w) for w, _ in asked)
                            if asked and waiting + sizer.expected_bytes(window) > AHEAD_BYTES:
                                break
                            ask = partial(self._ask, window, digest, turns.next())
                            asked.append((window, pool.submit(ask)))
                            since = window.until
                        window, future = asked.popleft()
                        turns.take()
                        answer = self._answer(window, future, sizer)
                        if answer is None:  # shrunk: ask again from here, with fewer buckets
                            since = window.since
                            self._forget(asked, turns)
                            sized = False  # alone until answered: others would be refused too
                            continue
                        sized = True
                        digested: Digested = answer.digest
                        size = answer.size
                        del future, answer  # only the lines wait to be written
                        if digested.keys is not None:
                            guard.check_facets(digested.keys.values, digested.facets)
                        sizer.learn(window, digested.rows, size)
                        self._check(digested)
                        yield Batch(window, digested.lines, "s", digested.inspected)
                        del digested
            finally:
                turns.close()  # the answers waiting for their turn are dropped unparsed
                for _window, future in asked:
                    future.cancel()

    def _ask(self, window: Window, digest: Digest, turn: Callable[[], None]) -> NrqlResult:
        """New Relic's answer for `window`, digested in its `turn` (on a helper thread: it
        changes nothing here)."""
        job = self.planned
        nrql = job.query.nrql_for(window.since, window.until, job.target.interval)
        shrinkable = window.buckets(job.target.interval) > 1
        return self.client.query(
            job.account_id, nrql, other=job.query.other, shrinkable=shrinkable,
            digest=digest, turn=turn,
        )  # fmt: skip

    def _forget(self, asked: deque[tuple[Window, Future[NrqlResult]]], turns: Turns) -> None:
        """Drop the windows asked after one New Relic refused: they are asked again smaller.

        Their requests still count (taken in turn, they are parsed one by one); a failure among
        them does not matter any more.
        """
        while asked:
            _window, future = asked.popleft()
            turns.take()
            if future.cancel():
                continue
            try:
                answer = future.result()
            except QueryTooBig as exc:
                self.result.nr_requests += exc.requests
                self.result.retries += exc.requests - 1
            except Exception:  # the window is asked again: a failure shows then
                continue
            else:
                self.result.nr_requests += answer.requests
                self.result.retries += answer.retries

    def _answer(
        self, window: Window, asked: Future[NrqlResult], sizer: WindowSizer
    ) -> NrqlResult | None:
        """New Relic's answer for `window`, or None after a QueryTooBig shrank the sizer.

        A window of one bucket that is still too big is retried like a transient failure, then
        fails the job with New Relic's message.
        """
        job, result = self.planned, self.result
        result.window = window
        try:
            answer = asked.result()
        except QueryTooBig as exc:
            result.nr_requests += exc.requests
            result.retries += exc.requests - 1
            if window.buckets(job.target.interval) <= 1:  # retried at one bucket as well
                raise
            buckets = sizer.shrink(window)
            log.warning(
                "%s → %s: New Relic refused %s as too big (%s); asking again with at most %d "
                "bucket(s) per request",
                job.name, job.target.key, window, exc, buckets,
                extra=log_fields(job.name, job.target.key, window),
            )  # fmt: skip
            return None
        result.nr_requests += answer.requests
        result.retries += answer.retries
        if answer.inspected is not None:
            result.inspected += answer.inspected
        return answer

    def _check(self, digested: Digested) -> None:
        """Log and count New Relic's messages, a facet count that reached the LIMIT and guarded
        fields New Relic named otherwise; raise what went wrong while digesting the answer."""
        job, result = self.planned, self.result
        query, head = job.query, f"{job.name} → {job.target.key}"
        self.said.messages(query.name, result, digested.messages)
        limit = query.facet_limit  # fewer rows than that cannot hold as many facets
        keys = digested.keys
        if keys is not None and digested.rows >= limit and keys.count >= limit:
            result.facet_limit_hit += 1
            beyond = OTHER_KEPT if query.other else OTHER_LOST
            _warn_once(
                result, "facet_limit",
                "%s: New Relic answered %d facets, as many as the query's LIMIT: %s",
                head, query.facet_limit, beyond,
            )  # fmt: skip
        if digested.unseen:
            _warn_once(
                result, "unsampled",
                "%s: cannot tell empty buckets for %s: New Relic named them otherwise; a 0 there "
                "may be a bucket without samples",
                head, ", ".join(sorted(digested.unseen)),
            )  # fmt: skip
        if digested.error is not None:
            raise digested.error
        _warn_dropped(result, digested.dropped)

    def _event_batches(self) -> Iterator[Batch]:
        """Raw events: windows of `interval`, cut as finely as the last one needed and halved
        while New Relic caps the answer (`events.EventPlanner`), up to FETCH_AHEAD parts asked
        at once on helper threads (parsed there; at most 5,000 events each), used in order.

        Bench row (f) with latency before each answer, 121 requests: 15.0 s asked one after
        another, 5.0 s asked ahead at 100 ms; 39.3 s and 11.2 s at 300 ms; at no latency the
        same points/s (1.02×, interleaved best of 3), 2026-11-29.
        """
        job, result = self.planned, self.result
        query, target = job.query, job.target
        guard = SeriesGuard(query.tag_attributes, query.max_series)
        tags = query.job_tags(job.account_id)
        inspected: list[int] = []  # of the requests since the last yielded window (splits too)

        def take(since: datetime, until: datetime, asked: Future[NrqlResult]) -> list[dict]:
            result.window = Window(since, until)
            answer = asked.result()
            result.nr_requests += answer.requests
            result.retries += answer.retries
            if answer.inspected is not None:
                result.inspected += answer.inspected
                inspected.append(answer.inspected)
            self.said.messages(query.name, result, answer.messages)
            return answer.results

        if self._interrupted():
            return
        planner = events.EventPlanner(label=f"{job.name} → {target.key}")
        ranges = ((w.since, w.until) for w in windows_of(job, WindowSizer(target.interval)))
        thread = threading.current_thread().name
        with ThreadPoolExecutor(FETCH_AHEAD, thread_name_prefix=f"{thread}-ask") as pool:

            def ask(since: datetime, until: datetime) -> Future[NrqlResult]:
                nrql = query.nrql_for(since, until, target.interval)
                return pool.submit(self.client.query, job.account_id, nrql)

            parts = planner.plan_ahead(ranges, ask, take, ahead=FETCH_AHEAD)
            with closing(parts):
                for since, until, rows in parts:
                    guard.check_events(rows)
                    dropped: set[str] = set()
                    lines = events.to_lines(
                        rows, query.measurement, query.tag_attributes, tags, dropped=dropped
                    )
                    _warn_dropped(result, dropped)
                    spent = sum(inspected) if inspected else None
                    inspected.clear()
                    yield Batch(Window(since, until), lines, "ns", spent)
                    if self._interrupted():
                        return

    def _interrupted(self) -> bool:
        if stopping := self.stopping():
            self.result.status = "interrupted"
        return stopping


def _warn_once(result: JobResult, kind: str, message: str, *args: object) -> None:
    if kind not in result.warned:
        result.warned.add(kind)
        log.warning(message, *args)


def _warn_dropped(result: JobResult, dropped: set[str]) -> None:
    """Warn once per job about each answer key that gave no field (no line-protocol form)."""
    new = dropped - result.dropped_keys
    if new:
        result.dropped_keys |= new
        log.warning(
            "%s → %s: New Relic's answer has keys with no line-protocol form, left out of the "
            "points: %s (lists such as uniques() cannot be stored; nr_archiver counts them in "
            "dropped_keys)",
            result.query,
            result.target,
            ", ".join(sorted(new)),
        )
