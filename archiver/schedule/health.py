"""The health of `nr-archiver schedule`: the heartbeat file its loop writes, and `health`.

Before each wait the loop writes a heartbeat file (`ARCHIVER_HEARTBEAT_FILE`) with the
schedule, the last completed run, how it went (`PassOutcome`) and the next one; `check_health`
reports unhealthy once the next run is overdue by more than one schedule period plus a margin,
or while the last pass exported nothing because of an error (a refused key, a broken only query
file, an unusable configuration).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
from dataclasses import asdict, dataclass, fields
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from archiver.errors import ExitCode
from archiver.logs import redact
from archiver.timeparse import as_utc
from archiver.wording import plural

log = logging.getLogger(__name__)

HEALTH_MARGIN = timedelta(minutes=5)
MAX_REASON_CHARS = 500


@dataclass(frozen=True)
class PassOutcome:
    """How one pass went, as the heartbeat keeps it for `health`.

    `targets_ok` is None when the job told only its exit code, and 0 when the pass failed
    before any (query, target) was exported. `reason` is the first failure, one line,
    redacted. `nothing_to_do`: the queries folder holds no query file at all.
    """

    exit_code: int
    targets_ok: int | None = None
    targets_failed: int = 0
    query_file_problems: int = 0
    points: int = 0
    reason: str | None = None
    nothing_to_do: bool = False

    def __post_init__(self) -> None:
        if self.reason is not None:
            object.__setattr__(self, "reason", one_line(self.reason))

    @classmethod
    def failure(cls, exit_code: int, reason: str) -> PassOutcome:
        """A pass that ended before its targets: a refused key, an unusable configuration."""
        return cls(exit_code=exit_code, targets_ok=0, reason=reason)

    @property
    def exported_nothing(self) -> bool:
        """Failed as a whole: exit 2, or exit 1 without a single (query, target) ok."""
        if self.nothing_to_do:
            return False
        if self.exit_code == ExitCode.USAGE:
            return True
        return self.exit_code == ExitCode.QUERY_FAILED and self.targets_ok == 0

    @property
    def summary(self) -> str:
        """One line: the counts when the pass ran its targets, else why it could not."""
        if self.nothing_to_do:
            return f"nothing to do: {self.reason}"
        if self.targets_ok is None:
            return ""
        if self.reason and not (self.targets_ok or self.targets_failed or self.query_file_problems):
            return self.reason
        return (
            f"{plural(self.targets_ok, 'target')} ok, {self.targets_failed} failed, "
            f"{plural(self.query_file_problems, 'query file problem')}, "
            f"{plural(self.points, 'point')} written"
        )

    def to_record(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_record(cls, record: Any) -> PassOutcome:
        """Read back `to_record`; raises TypeError or ValueError when it is not one."""
        if not isinstance(record, dict):
            raise TypeError(f"expected the last pass as an object, got {record!r}")
        known = {f.name for f in fields(cls)}
        outcome = cls(**{k: v for k, v in record.items() if k in known})
        if not isinstance(outcome.exit_code, int):
            raise TypeError(f"expected an exit code, got {outcome.exit_code!r}")
        return outcome


def one_line(text: str) -> str:
    """Redacted, on one line, at most MAX_REASON_CHARS long."""
    text = " ".join(redact(str(text)).split())
    return text if len(text) <= MAX_REASON_CHARS else text[: MAX_REASON_CHARS - 1] + "…"


@dataclass(frozen=True)
class Schedule:
    """A validated cron expression; ticks are computed in UTC."""

    expression: str

    def next_after(self, moment: datetime) -> datetime:
        from croniter import croniter  # here: `run` needs PassOutcome, not croniter (~5 ms)

        return croniter(self.expression, as_utc(moment)).get_next(datetime)

    def period_after(self, moment: datetime) -> timedelta:
        """The time between the first two ticks after `moment`."""
        first = self.next_after(moment)
        return self.next_after(first) - first


@dataclass(frozen=True)
class History:
    """What the heartbeat says about past passes: the last one, and the last one that was ok."""

    last_completed: datetime | None = None
    last_pass: PassOutcome | None = None
    last_ok: datetime | None = None

    def after(self, ended: datetime, outcome: PassOutcome) -> History:
        last_ok = self.last_ok if outcome.exported_nothing else ended
        return History(last_completed=ended, last_pass=outcome, last_ok=last_ok)


@dataclass(frozen=True)
class Heartbeat:
    """The file `nr-archiver health` reads: written atomically, so never seen half-written.

    `last_pass` and `last_ok` are absent from the files of releases before them; `health`
    then judges by the time alone, as those releases did.
    """

    path: Path
    schedule: str

    def write(self, history: History, *, next_run: datetime, now: datetime) -> None:
        record = {
            "schedule": self.schedule,
            "updated": iso_utc(now),
            "last_completed": iso_utc(history.last_completed) if history.last_completed else None,
            "next_run": iso_utc(next_run),
            "last_pass": history.last_pass.to_record() if history.last_pass else None,
            "last_ok": iso_utc(history.last_ok) if history.last_ok else None,
        }
        try:
            _write_atomically(self.path, json.dumps(record) + "\n")
        except OSError as exc:
            log.warning("cannot write the heartbeat file %s: %s", self.path, exc.strerror)


def check_health(path: Path, now: datetime, max_age: timedelta | None = None) -> tuple[bool, str]:
    """Healthy while the next run is overdue by at most `max_age` and the last pass did not
    fail as a whole (see `PassOutcome.exported_nothing`).

    `max_age` defaults to one period of the heartbeat's schedule plus HEALTH_MARGIN: a pass may
    run late or long for that much before the container is reported unhealthy.
    """
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        next_run = _parse_iso(record["next_run"])
        schedule = Schedule(record["schedule"])
        if max_age is None:
            max_age = schedule.period_after(next_run) + HEALTH_MARGIN
        last_pass = record.get("last_pass")
        outcome = PassOutcome.from_record(last_pass) if last_pass is not None else None
    except FileNotFoundError:
        return False, f"no heartbeat file {path}: is `nr-archiver schedule` running?"
    except OSError as exc:
        return False, f"cannot read the heartbeat file {path}: {exc.strerror}"
    except (ValueError, KeyError, TypeError) as exc:  # croniter's CroniterError is a ValueError
        return False, f"the heartbeat file {path} is not valid: {type(exc).__name__}: {exc}"
    last = record.get("last_completed") or "never"
    overdue = as_utc(now) - next_run
    if overdue > max_age:
        return False, (
            f"the run due at {iso_utc(next_run)} has not completed {human_duration(overdue)} later "
            f"(limit {human_duration(max_age)}); last completed run: {last}"
        )
    if outcome is None:  # no pass yet, or a heartbeat of a release before outcomes
        return True, f"ok: last completed run {last}, next run at {iso_utc(next_run)}"
    if outcome.exported_nothing:
        last_ok = record.get("last_ok") or "never"
        return False, (
            f"the last pass (ended {last}, exit {outcome.exit_code}) exported nothing: "
            f"{outcome.reason or 'no reason given'}; last good pass: {last_ok}, "
            f"next run at {iso_utc(next_run)}"
        )
    if outcome.nothing_to_do:
        return True, (
            f"ok, but {outcome.summary}; last completed run {last}, next run at {iso_utc(next_run)}"
        )
    how = f"exit {outcome.exit_code}"
    if outcome.targets_ok is not None:
        how += f": {plural(outcome.targets_ok, 'target')} ok, {outcome.targets_failed} failed"
        if outcome.query_file_problems:
            how += f", {plural(outcome.query_file_problems, 'query file problem')}"
    if outcome.exit_code != ExitCode.OK and outcome.reason:
        how += f"; first failure: {outcome.reason}"
    return True, f"ok: last completed run {last} ({how}), next run at {iso_utc(next_run)}"


def health(heartbeat_file: Path, now: datetime | None = None) -> tuple[bool, str]:
    """`check_health` for the heartbeat file (ARCHIVER_HEARTBEAT_FILE), as of now."""
    return check_health(heartbeat_file, now or datetime.now(UTC))


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


def iso_utc(moment: datetime) -> str:
    return as_utc(moment).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_iso(text: Any) -> datetime:
    if not isinstance(text, str):
        raise TypeError(f"expected an ISO 8601 time, got {text!r}")
    return as_utc(datetime.fromisoformat(text))


def human_duration(delta: timedelta) -> str:
    seconds = delta.total_seconds()
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"
