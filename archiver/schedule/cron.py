"""The cron loop the container runs (`nr-archiver schedule`): schedule, loop, signals.

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

Health. Before each wait the loop writes the heartbeat file that `nr-archiver health` reads
(`archiver.schedule.health`). `job` returns a `PassOutcome`, or just an exit code.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

from archiver.errors import ConfigError, ExitCode
from archiver.schedule.health import (
    Heartbeat,
    History,
    PassOutcome,
    Schedule,
    human_duration,
    iso_utc,
)

log = logging.getLogger(__name__)

# Event.wait measures time on the monotonic clock, which stops while a host sleeps and ignores
# wall-clock corrections; waking up at least this often keeps the ticks on the wall clock.
MAX_WAIT_SECONDS = 60.0

Clock = Callable[[], datetime]


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
    except ValueError as exc:  # croniter's CroniterError is one
        raise ConfigError(f"ARCHIVER_SCHEDULE {cron!r} is not a cron expression: {exc}") from None
    return schedule


def run_forever(
    cron: str,
    job: Callable[[], PassOutcome | int],
    *,
    stop: threading.Event | None = None,
    clock: Clock = lambda: datetime.now(UTC),
    run_at_start: bool = False,
    heartbeat_file: Path,
) -> int:
    """Run `job` at every tick of `cron` until `stop` is set; returns 0 on a clean stop.

    Only `stop` ends the loop: a pass that fails, however it fails, is logged in one line and
    recorded in the heartbeat, and the next tick runs again (a key rotated meanwhile is used).
    `heartbeat_file` is the settings' ARCHIVER_HEARTBEAT_FILE.
    """
    schedule = parse_schedule(cron, clock())
    stop = stop if stop is not None else threading.Event()
    heartbeat = Heartbeat(heartbeat_file, schedule.expression)
    history = History()
    due = clock() if run_at_start else schedule.next_after(clock())
    while not stop.is_set():
        heartbeat.write(history, next_run=due, now=clock())
        if due > clock():
            log.info("next run at %s", iso_utc(due))
        if _wait_until(due, stop, clock):
            break
        history = history.after(*_run_job(job, clock))
        if stop.is_set():
            # Keep the last outcome readable; `next_run` stays the tick that ran, so `health`
            # fails one period after the scheduler stopped, as it should.
            heartbeat.write(history, next_run=due, now=clock())
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


def _wait_until(due: datetime, stop: threading.Event, clock: Clock) -> bool:
    """Wait until `due`; True if `stop` was set first."""
    while (remaining := (due - clock()).total_seconds()) > 0:
        if stop.wait(min(remaining, MAX_WAIT_SECONDS)):
            return True
    return stop.is_set()


def _run_job(job: Callable[[], PassOutcome | int], clock: Clock) -> tuple[datetime, PassOutcome]:
    """Run one pass; log in one line how it went and how long it took; return when it ended."""
    started = clock()
    try:
        result = job()
    except Exception as exc:  # the loop must outlive any one pass
        ended = clock()
        cause = f"{type(exc).__name__}: {exc}"
        log.error("run failed after %s: %s", human_duration(ended - started), cause)
        log.debug("run failure traceback", exc_info=True)
        return ended, PassOutcome.failure(ExitCode.QUERY_FAILED, cause)
    ended = clock()
    outcome = result if isinstance(result, PassOutcome) else PassOutcome(exit_code=int(result))
    if outcome.exported_nothing:
        level = logging.ERROR
    elif outcome.exit_code == ExitCode.OK and not outcome.nothing_to_do:
        level = logging.INFO
    else:
        level = logging.WARNING
    line = f"run finished with exit code {outcome.exit_code} in {human_duration(ended - started)}"
    fields: dict[str, Any] = {
        "exit_code": outcome.exit_code,
        "seconds": round((ended - started).total_seconds(), 3),
    }
    if outcome.targets_ok is not None:
        fields["points"] = outcome.points
    if outcome.reason:
        fields["error"] = outcome.reason
    message = f"{line}: {outcome.summary}" if outcome.summary else line
    log.log(level, "%s", message, extra=fields)
    return ended, outcome


def _next_due(schedule: Schedule, previous_due: datetime, now: datetime) -> datetime:
    """The first tick after `now`; ticks between `previous_due` and `now` are skipped."""
    missed = 0
    due = schedule.next_after(previous_due)
    while due <= now:
        missed += 1
        due = schedule.next_after(due)
    if missed:
        log.warning(
            "skipped %d missed tick(s): the last run ended at %s, after them", missed, iso_utc(now)
        )
    return due
