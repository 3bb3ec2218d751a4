"""`nr-archiver reset`: move a checkpoint on purpose, backwards or forwards, never past now.

The new value is aligned down to the target's interval, as `run` aligns every range (events
queries: to the second), so what `status` shows is where the next run really starts.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from archiver import queries
from archiver.errors import ConfigError
from archiver.state.store import State
from archiver.timeparse import format_duration, parse_time
from archiver.windows import floor, iso


@dataclass(frozen=True)
class CheckpointMove:
    query: str
    target: str
    old: datetime | None
    new: datetime
    asked: datetime
    interval: timedelta

    def __str__(self) -> str:
        line = f"{self.query} → {self.target}: checkpoint {iso(self.old) if self.old else 'none'}"
        line += f" → {iso(self.new)}"
        if self.new != self.asked:
            asked = iso(self.asked.replace(microsecond=0))
            line += f" (--to {asked} aligned down to the {format_duration(self.interval)} interval)"
        return line


def reset_checkpoints(
    db_url: str,
    queries_dir: Path,
    query_name: str,
    target_key: str | None,
    to: str,
    now: datetime,
    *,
    dry_run: bool = False,
    default_account: int | None = None,
) -> list[CheckpointMove]:
    """Move the checkpoint of every target of the query (or of `target_key`) to `to`.

    With `dry_run`, only say what would change: the state database is not touched (not even
    created or migrated).
    """
    try:
        asked = parse_time(to, now)
    except ValueError as exc:
        raise ConfigError(f"--to: {exc}") from None
    if asked > now:
        raise ConfigError(
            f"--to {to} is in the future ({iso(asked.replace(microsecond=0))}); a checkpoint "
            "there would skip every window until then: give a time before now"
        )
    query = queries.select(queries.load_dir(queries_dir).queries, [query_name])[0]
    targets = {target.key: target for target in query.targets}
    if target_key and target_key not in targets:
        raise ConfigError(
            f"query {query.name!r} has no target {target_key!r}; it has {list(targets)}"
        )
    state = State.open_existing(db_url) if dry_run else State.open(db_url)
    moves = []
    # an `account_ids` file keeps one checkpoint per account (`<name>@<id>`)
    for name in [query.job_name(account) for account in query.accounts(default_account)]:
        for key in [target_key] if target_key else list(targets):
            interval = timedelta(seconds=1) if query.mode == "events" else targets[key].interval
            old = state.checkpoint(name, key) if state else None
            move = CheckpointMove(name, key, old, floor(asked, interval), asked, interval)
            if not dry_run:
                state.set_checkpoint(name, key, move.new, now)
            moves.append(move)
    return moves
