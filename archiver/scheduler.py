"""The cron loop the container runs (`nr-archiver schedule`), and its health check.

`run_forever` waits for each tick of a cron expression (UTC), runs the job once, and waits for
the next tick. Ticks that pass while a job runs are skipped, never caught up back to back: the
archiver catches up by itself, since each pass exports everything since its checkpoints.

Stopping. `install_signal_handlers(stop)` makes SIGTERM and SIGINT set `stop`. A signal during
the wait ends the loop at once. A signal during a pass does not interrupt it: `job` takes no
arguments, so give it the same event through a closure and let it stop between windows, where
every checkpoint is consistent:

    stop = threading.Event()
    install_signal_handlers(stop)
    run_forever(cron, lambda: runner.run(settings, stop=stop), stop=stop)

A pass still finishes its current write after SIGTERM, which can take longer than Docker's
default 10 s stop timeout: set `stop_grace_period` (compose) or `docker stop --time`.
A second SIGTERM or SIGINT acts as if no handler were installed (Ctrl-C twice aborts).

Health. Before each wait the loop writes a heartbeat file (`ARCHIVER_HEARTBEAT_FILE`) with the
schedule, the last completed run and the next one; `check_health` reports unhealthy once the
next run is overdue by more than one schedule period plus a margin.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import tempfile
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import Any

from croniter import CroniterError, croniter

from archiver.errors import ConfigError, ExitCode
from archiver.timeparse import as_utc

log = logging.getLogger(__name__)

DEFAULT_SCHEDULE = "0 * * * *"
DEFAULT_HEARTBEAT_FILE = "/tmp/nr-archiver.heartbeat"
HEALTH_MARGIN = timedelta(minutes=5)
# Event.wait measures time on the monotonic clock, which stops while a host sleeps and ignores
# wall-clock corrections; waking up at least this often keeps the ticks on the wall clock.
MAX_WAIT_SECONDS = 60.0

Clock = Callable[[], datetime]


@dataclass(frozen=True)
class Schedule:
    """A validated cron expression; ticks are computed in UTC."""

    expression: str

    def next_after(self, moment: datetime) -> datetime:
        return croniter(self.expression, as_utc(moment)).get_next(datetime)

    def period_after(self, moment: datetime) -> timedelta:
        """The time between the first two ticks after `moment`."""
        first = self.next_after(moment)
        return self.next_after(first) - first


def parse_schedule(cron: str, now: datetime | None = None) -> Schedule:
    """5 fields (minute hour day month weekday), or 6 with seconds last, as croniter reads them.

    Raises ConfigError when the expression is malformed or never matches (`0 0 30 2 *`), and
    when it reads as seconds-first (Quartz, `*/10 * * * * *`): a first field other than `*`
    with `*` last would run every second of the minutes it names.
    """
    expression = " ".join(cron.split())
    parts = expression.split()
    fields = len(parts)
    if fields == 6 and parts[0] != "*" and parts[5] == "*":
        meant = " ".join(parts[1:] + parts[:1])
        raise ConfigError(
            f"ARCHIVER_SCHEDULE {cron!r} puts seconds first (Quartz style) and would run every "
            f"second of the minutes it names; seconds go last here: write {meant!r}"
        )
    try:
        if not expression.startswith("@") and fields not in (5, 6):
            raise ValueError(f"expected 5 fields (or 6 with seconds last), got {fields}")
        schedule = Schedule(expression)
        schedule.next_after(now or datetime.now(UTC))
    except (CroniterError, ValueError) as exc:
        raise ConfigError(f"ARCHIVER_SCHEDULE {cron!r} is not a cron expression: {exc}") from None
    return schedule


def run_forever(
    cron: str,
    job: Callable[[], int],
    *,
    stop: threading.Event | None = None,
    clock: Clock = lambda: datetime.now(UTC),
    run_at_start: bool = False,
    heartbeat_file: Path | None = None,
) -> int:
    """Run `job` at every tick of `cron` until `stop` is set; returns 0 on a clean stop.

    `heartbeat_file` defaults to `heartbeat_path()` (the environment's choice).
    """
    schedule = parse_schedule(cron, clock())
    stop = stop if stop is not None else threading.Event()
    heartbeat = Heartbeat(heartbeat_file or heartbeat_path(), schedule.expression)
    last_completed: datetime | None = None
    if run_at_start and not stop.is_set():
        heartbeat.write(last_completed=None, next_run=clock(), now=clock())
        last_completed = _run_job(job, clock)
    due = schedule.next_after(clock())
    while not stop.is_set():
        heartbeat.write(last_completed=last_completed, next_run=due, now=clock())
        log.info("next run at %s", _iso(due))
        if _wait_until(due, stop, clock):
            break
        last_completed = _run_job(job, clock)
        if stop.is_set():
            break
        due = _next_due(schedule, due, clock())
    log.info("scheduler stopped")
    return ExitCode.OK


def install_signal_handlers(stop: threading.Event) -> None:
    """SIGTERM and SIGINT set `stop`; a second one gets the previous handler's behaviour.

    Call from the main thread (Python only lets the main thread install handlers).
    """
    signals = (signal.SIGTERM, signal.SIGINT)
    previous = {signum: signal.getsignal(signum) or signal.SIG_DFL for signum in signals}

    def stop_soon(signal_name: str) -> None:
        log.info("%s received: stopping after the current step", signal_name)
        stop.set()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        for restored in signals:
            signal.signal(restored, previous[restored])
        # The handler interrupts the main thread anywhere, possibly while it holds the event's
        # lock (in stop.wait) or is writing a log line: doing either from here could deadlock
        # or fail, doing them on another thread cannot.
        name = signal.Signals(signum).name
        threading.Thread(target=stop_soon, args=(name,), name="stop-request", daemon=True).start()

    for signum in signals:
        signal.signal(signum, request_stop)


def heartbeat_path(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    return Path(env.get("ARCHIVER_HEARTBEAT_FILE", "").strip() or DEFAULT_HEARTBEAT_FILE)


@dataclass(frozen=True)
class Heartbeat:
    """The file `nr-archiver health` reads: written atomically, so never seen half-written."""

    path: Path
    schedule: str

    def write(self, *, last_completed: datetime | None, next_run: datetime, now: datetime) -> None:
        record = {
            "schedule": self.schedule,
            "updated": _iso(now),
            "last_completed": _iso(last_completed) if last_completed else None,
            "next_run": _iso(next_run),
        }
        try:
            _write_atomically(self.path, json.dumps(record) + "\n")
        except OSError as exc:
            log.warning("cannot write the heartbeat file %s: %s", self.path, exc.strerror)


def check_health(path: Path, now: datetime, max_age: timedelta | None = None) -> tuple[bool, str]:
    """Healthy while the next run is overdue by at most `max_age`.

    `max_age` defaults to one period of the heartbeat's schedule plus HEALTH_MARGIN: a pass may
    run late or long for that much before the container is reported unhealthy.
    """
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        next_run = _parse_iso(record["next_run"])
        schedule = Schedule(record["schedule"])
        if max_age is None:
            max_age = schedule.period_after(next_run) + HEALTH_MARGIN
    except FileNotFoundError:
        return False, f"no heartbeat file {path}: is `nr-archiver schedule` running?"
    except OSError as exc:
        return False, f"cannot read the heartbeat file {path}: {exc.strerror}"
    except (ValueError, KeyError, TypeError, CroniterError) as exc:
        return False, f"the heartbeat file {path} is not valid: {type(exc).__name__}: {exc}"
    last = record.get("last_completed") or "never"
    overdue = as_utc(now) - next_run
    if overdue > max_age:
        return False, (
            f"the run due at {_iso(next_run)} has not completed {_duration(overdue)} later "
            f"(limit {_duration(max_age)}); last completed run: {last}"
        )
    return True, f"ok: last completed run {last}, next run at {_iso(next_run)}"


def health(env: Mapping[str, str] | None = None, now: datetime | None = None) -> tuple[bool, str]:
    """`check_health` for the heartbeat file named by the environment, as of now."""
    return check_health(heartbeat_path(env), now or datetime.now(UTC))


def _wait_until(due: datetime, stop: threading.Event, clock: Clock) -> bool:
    """Wait until `due`; True if `stop` was set first."""
    while (remaining := (due - clock()).total_seconds()) > 0:
        if stop.wait(min(remaining, MAX_WAIT_SECONDS)):
            return True
    return stop.is_set()


def _run_job(job: Callable[[], int], clock: Clock) -> datetime:
    """Run one pass; log its exit code or exception and duration; return when it ended."""
    started = clock()
    try:
        exit_code = job()
    except Exception as exc:  # the loop must outlive any one pass
        ended = clock()
        log.error(
            "run failed after %s: %s: %s", _duration(ended - started), type(exc).__name__, exc
        )
        log.debug("run failure traceback", exc_info=True)
        return ended
    ended = clock()
    level = logging.INFO if exit_code == ExitCode.OK else logging.WARNING
    log.log(level, "run finished with exit code %s in %s", exit_code, _duration(ended - started))
    return ended


def _next_due(schedule: Schedule, previous_due: datetime, now: datetime) -> datetime:
    """The first tick after `now`; ticks between `previous_due` and `now` are skipped."""
    missed = 0
    due = schedule.next_after(previous_due)
    while due <= now:
        missed += 1
        due = schedule.next_after(due)
    if missed:
        log.warning(
            "skipped %d missed tick(s): the last run ended at %s, after them", missed, _iso(now)
        )
    return due


def _write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            file.write(text)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def _iso(moment: datetime) -> str:
    return as_utc(moment).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_iso(text: Any) -> datetime:
    if not isinstance(text, str):
        raise TypeError(f"expected an ISO 8601 time, got {text!r}")
    return as_utc(datetime.fromisoformat(text))


def _duration(delta: timedelta) -> str:
    seconds = delta.total_seconds()
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"
