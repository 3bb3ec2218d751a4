"""Raw-event queries (`mode: events`): windows New Relic does not cap, and events → lines.

New Relic returns at most 5,000 rows (LIMIT MAX) for `SELECT a, b FROM T`, newest first, and
says nothing when it cut the answer. A window that comes back with exactly 5,000 rows may be
missing events, so it is split in halves at whole seconds and asked again, down to one second.
An `EventPlanner` remembers how finely a job's last window had to be cut and asks the next one
in parts that small straight away, so a steady busy stream is not asked whole (and capped)
every time.

One event becomes one point at its `timestamp` (epoch ms), written with nanosecond precision.
Events that share a millisecond and a tag set would overwrite each other in InfluxDB, so the
k-th of them (in a content order) is written k nanoseconds later. The order depends only on the
events, never on the order New Relic sent them in: re-exporting a window writes the same
points. Windows are split at whole seconds, so all the events of one millisecond are always in
the same answer, and re-exporting a group that gained a late event rewrites all of it.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future
from datetime import datetime, timedelta
from itertools import islice
from operator import itemgetter
from typing import NamedTuple, TypeVar

from archiver.errors import NewRelicError
from archiver.lineprotocol import (
    escape_key,
    escape_measurement,
    escape_string,
    format_field,
    series,
)
from archiver.timeparse import as_utc
from archiver.windows import EPOCH, iso

log = logging.getLogger(__name__)

MAX_ROWS = 5000  # New Relic's LIMIT MAX for raw events
SECOND = timedelta(seconds=1)
NS_PER_MS = 1_000_000

Row = Mapping[str, object]
Fetch = Callable[[datetime, datetime], Sequence[Row]]
A = TypeVar("A")  # an answer as the caller asks it
Ask = Callable[[datetime, datetime], "Future[A]"]
Take = Callable[[datetime, datetime, "Future[A]"], Sequence[Row]]


class EventWindow(NamedTuple):
    since: datetime
    until: datetime
    rows: Sequence[Row]


def is_capped(rows: Sequence[Row]) -> bool:
    """New Relic may have left events out of this answer."""
    return len(rows) >= MAX_ROWS


def split(since: datetime, until: datetime) -> list[tuple[datetime, datetime]]:
    """Two halves cut at a whole second, or the window itself when it cannot be cut."""
    middle = since + (until - since) / 2
    middle -= (as_utc(middle) - EPOCH) % SECOND
    if middle <= since:
        return [(since, until)]
    return [(since, middle), (middle, until)]


class EventPlanner:
    """The windows of one job, cut as finely as the windows before them needed.

    A steady stream over the cap would otherwise cost every window a capped answer (5,000
    rows asked, parsed and thrown away) before its halves. The planner remembers the length of
    the finest part the last window was cut to, and cuts the next window (by halving, at whole
    seconds, as `split`) into parts that long before asking anything; a part that is still
    capped is split further, as always. When every part of a window answered with fewer than
    `COARSER_BELOW` rows (a quarter of the cap), the next window is cut one level coarser: its
    parts then hold about twice that, half the cap, so the ups and downs of a steady stream
    neither cap the coarser parts nor make the planner go back and forth; a burst does not
    keep the job on small parts once it is over. Bench row f (~6,000 events a minute,
    1-minute windows, 1 hour): 121 requests instead of 180, one capped answer instead of 60,
    archiver CPU 7.6-8.2 µs a point instead of 8.1-9.6 (three runs each, 2026-11-29).

    One planner per job (windows in order); its parts are the same as `split` gives, so all
    the events of one millisecond stay in one answer.
    """

    COARSER_BELOW = MAX_ROWS // 4
    # Windows of another length than the one learned from (the first and last of a range)
    # are cut to parts at most this much longer than the learned part: halving at whole
    # seconds leaves parts a second or so longer or shorter than the nominal length.
    SLACK = 1.25

    def __init__(self, *, label: str = "events") -> None:
        self.label = label
        self.part: timedelta | None = None  # the learned part length; None: whole windows
        self.learned = False  # a window was finished: `part` comes from an answer

    def depth(self, length: timedelta) -> int:
        """How many times a window of `length` is halved before it is asked."""
        if self.part is None:
            return 0
        depth = 0
        while length / 2**depth > self.part * self.SLACK:
            depth += 1
        return depth

    def plan(self, fetch: Fetch, since: datetime, until: datetime) -> Iterator[EventWindow]:
        """Every part of [since, until) whose answer is complete, with its rows, oldest first,
        each part fetched when the one before it was taken (`plan_ahead` of one window)."""

        def ask(part_since: datetime, part_until: datetime) -> Future[Sequence[Row]]:
            asked: Future[Sequence[Row]] = Future()
            try:
                asked.set_result(fetch(part_since, part_until))
            except Exception as exc:  # raised in order, when the part is taken
                asked.set_exception(exc)
            return asked

        return self.plan_ahead([(since, until)], ask, _result, ahead=1)

    def plan_ahead(
        self,
        windows: Iterable[tuple[datetime, datetime]],
        ask: Ask[A],
        take: Take[A],
        *,
        ahead: int,
    ) -> Iterator[EventWindow]:
        """Every part of `windows` whose answer is complete, with its rows, oldest first, with
        up to `ahead` parts asked at once, so New Relic's latency overlaps.

        `ask(since, until)` starts asking a part (a Future: the job's helper threads);
        `take(since, until, asked)` is called in order, on the caller's thread, for every
        answer, capped ones too, and gives its rows (it raises what failed). Each window is cut
        at the depth learned when it is begun, and the oldest `ahead` parts not yet taken are
        asked. A capped part is replaced by its halves, asked in the same way (the parts asked
        after it stay asked: one more part is asked for each capped part whose halves are not
        taken yet); a capped part that cannot be split (one second) is yielded anyway, with a
        warning naming the planner's label. What a window needed (its finest depth, its biggest
        answer) sets the cut of the windows begun after it. Until a window of this planner is
        finished, the next one is not begun: a planner that knows nothing asks the first window
        whole and alone, so a busy stream costs one capped answer, not one a window asked
        ahead. Any cut gives complete parts, so a part asked at a depth learned before the last
        window finished is never asked again, only split if capped. Closing the iterator
        cancels the parts asked and not started.
        """
        pending = iter(windows)
        queued: deque[list] = deque()  # [part, its answer's Future or None], oldest first
        begun = 0  # windows begun and not finished
        try:
            while True:
                while len(queued) < ahead and not (begun and not self.learned):
                    window = next(pending, None)  # (the first window alone: see above)
                    if window is None:
                        break
                    queued.extend([part, None] for part in self._parts(*window))
                    begun += 1
                for entry in islice(queued, ahead):
                    if entry[1] is None:
                        entry[1] = ask(entry[0].since, entry[0].until)
                if not queued:
                    return
                part, answer = queued.popleft()
                rows = take(part.since, part.until, answer)
                cut = part.cut
                if is_capped(rows):
                    halves = split(part.since, part.until)
                    if len(halves) == 2:
                        cut.left += 1
                        queued.extendleft(
                            [_Part(a, b, part.depth + 1, cut), None] for a, b in reversed(halves)
                        )
                        continue
                    log.warning(
                        "%s: New Relic returned its maximum of %d events for [%s, %s), a window"
                        " that cannot be split further: the oldest events of it may be missing",
                        self.label,
                        MAX_ROWS,
                        iso(part.since),
                        iso(part.until),
                    )
                cut.finest, cut.biggest = max(cut.finest, part.depth), max(cut.biggest, len(rows))
                cut.left -= 1
                if not cut.left:
                    begun -= 1
                    self._learn(cut.length, cut.finest, cut.biggest)
                yield EventWindow(part.since, part.until, rows)
        finally:
            for _part, answer in queued:
                if answer is not None:
                    answer.cancel()

    def _parts(self, since: datetime, until: datetime) -> list[_Part]:
        """[since, until) halved (as `split`) as many times as the learned depth says."""
        cut = _Cut(until - since)
        start = self.depth(until - since)
        parts, stack = [], [(since, until, 0)]  # a stack: the oldest part is on top
        while stack:
            part_since, part_until, depth = stack.pop()
            halves = split(part_since, part_until) if depth < start else []
            if len(halves) == 2:
                stack.extend((a, b, depth + 1) for a, b in reversed(halves))
            else:
                parts.append(_Part(part_since, part_until, depth, cut))
        cut.left = len(parts)
        return parts

    def _learn(self, length: timedelta, finest: int, biggest: int) -> None:
        if biggest < self.COARSER_BELOW:
            finest -= 1
        self.part = length / 2**finest if finest > 0 else None
        self.learned = True


def _result(_since: datetime, _until: datetime, asked: Future[Sequence[Row]]) -> Sequence[Row]:
    return asked.result()


class _Cut:
    """One window of a planner while it is asked: what its parts needed so far."""

    __slots__ = ("biggest", "finest", "left", "length")

    def __init__(self, length: timedelta) -> None:
        self.length = length
        self.left = 0  # parts not yet yielded
        self.finest = 0  # the deepest part yielded
        self.biggest = 0  # the most rows a yielded part had


class _Part(NamedTuple):
    since: datetime
    until: datetime
    depth: int  # halvings from its window
    cut: _Cut


def plan_events(
    fetch: Fetch, since: datetime, until: datetime, *, label: str = "events"
) -> Iterator[EventWindow]:
    """`EventPlanner.plan` of a planner that knows nothing yet: the range asked whole first."""
    return EventPlanner(label=label).plan(fetch, since, until)


_EXACT = 10**15  # ints below it are floats whose repr is the int's digits and `.0`


def to_lines(
    rows: Sequence[Row],
    measurement: str,
    tag_attributes: Sequence[str],
    static_tags: Mapping[str, str],
    *,
    dropped: set[str] | None = None,
) -> list[str]:
    """One line per event with at least one field, sorted by time, then text; time in ns.

    Tags: the static tags, then one per tag attribute with a non-empty value (an attribute's
    value wins over a static tag of the same name). Fields: every other attribute but
    `timestamp`, as `archiver.lineprotocol` formats and orders them; a nested object (a
    dimensional Metric's `"newrelic.internal.usage": {"count": 49500, "type": "count"}`) gives
    one field per entry, `<key>.<subkey>`, as in aggregate mode. Keys whose value has no
    line-protocol form (lists) are added to `dropped`.

    The hot loop of an events backfill (one call per answer of up to 5,000 events): field
    names are escaped once per call, strings once per distinct value, the measurement and
    tags once per distinct tuple of tag values; floats and ints are formatted inline as
    `lineprotocol.format_field` formats them (tests/test_events_lines.py checks every byte
    against the plain implementation this replaced). On the bench's row (f) this took
    `to_lines` from 8 to 1.9 µs per line (in process, one core). Rows with the keys of the
    row before (New Relic's all have) reuse its `_EventPlan`: which keys are fields, in line
    order, so no row's fields are sorted: 2.13 → 1.90 µs a line (row f's answers, best of 15
    interleaved; the whole row 8.3 → 8.0 µs of CPU a point, 2026-11-29).
    """
    dropped = dropped if dropped is not None else set()
    static = {escape_key(key): escape_key(str(value)) for key, value in static_tags.items()}
    tag_keys = [(attribute, escape_key(attribute)) for attribute in tag_attributes]
    attributes = tuple(tag_attributes)
    prefix = escape_measurement(measurement)
    # row key → escaped `key=`; "" for keys that are no field; False for keys escaping to
    # nothing, which take `_add_field`'s general path (a string of theirs is `dropped`).
    names: dict[str, str | bool] = dict.fromkeys(("timestamp", *attributes), "")
    strings: dict[str, str] = {}  # string value → its escaped, quoted form
    # Tag values → "measurement,tags". Only tuples of str and None are stored: 1, 1.0, True
    # and "1" are equal keys but different tag texts, and a tuple holding a number can never
    # equal a stored one (rows are JSON values: a str is exactly a str).
    prefixes: dict[tuple, str] = {}
    pick = _picker(attributes)
    plans: dict[tuple[str, ...], _EventPlan] = {}
    # (timestamp ms, series) → the event's sorted fields joined, or a list of them when
    # several events share the millisecond and the series (then ordered by that text).
    groups: dict[tuple[int, str], str | list[str]] = {}
    # The last row's plan, in locals while rows keep the same keys (New Relic's rows do).
    plan: _EventPlan | None = None
    size, values_of, fields, ordered, stamp_at = 0, None, (), True, None
    for row in rows:
        if plan is not None and len(row) == size:
            try:
                values = values_of(row)  # type: ignore[misc]
            except KeyError:  # other keys, as many
                plan = None
        else:
            plan = None
        if plan is None:
            keys = tuple(row)
            plan = plans.get(keys)
            if plan is None:
                plan = plans[keys] = _EventPlan.of(keys, names)
            size, values_of, fields, ordered = plan.size, plan.values, plan.fields, plan.ordered
            stamp_at = plan.timestamp
            values = values_of(row)
        parts: list[str] | None = []
        for index, name in fields:  # in line order (`ordered`); floats, strings, ints inline
            value = values[index]
            kind = type(value)
            if kind is float:
                if value - value == 0.0:  # finite: inf and nan give no field
                    parts.append(f"{name}{value!r}")  # type: ignore[union-attr]
            elif kind is str:
                text = strings.get(value)
                if text is None:
                    text = strings[value] = escape_string(value)
                parts.append(name + text)  # type: ignore[union-attr]
            elif kind is int:  # as a float: `54.0`, `1e+16` (exact below 10**15)
                if -_EXACT < value < _EXACT:
                    parts.append(f"{name}{value}.0")  # type: ignore[union-attr]
                else:
                    parts.append(name + repr(float(value)))  # type: ignore[union-attr]
            elif value is not None:  # a bool, object or list: the row field by field
                parts = None
                break
        if parts is None or plan.general:
            parts = _row_parts(row, names, strings, dropped)
            parts.sort()  # as `line` orders them
        elif not ordered:
            parts.sort()
        if not parts:
            continue
        fields_text = ",".join(parts)
        timestamp = values[stamp_at] if stamp_at is not None else None
        if type(timestamp) is not int:
            timestamp = _timestamp_ms(row)
        try:
            tag_values = pick(row)
        except KeyError:  # a tag attribute missing from the row: no tag
            tag_values = tuple(map(row.get, attributes))
        try:
            event_series = prefixes.get(tag_values)
        except TypeError:  # an unhashable tag value (a list): its str() is the tag text
            event_series = None
        if event_series is None:
            event_series = series(prefix, _tags(tag_values, static, tag_keys))
            if all(value is None or type(value) is str for value in tag_values):
                prefixes[tag_values] = event_series
        group_key = (timestamp, event_series)
        group = groups.get(group_key)
        if group is None:
            groups[group_key] = fields_text
        elif type(group) is str:
            groups[group_key] = [group, fields_text]
        else:
            group.append(fields_text)
    timed: list[tuple[int, str]] = []
    for (timestamp, event_series), group in groups.items():
        ns = timestamp * NS_PER_MS
        if type(group) is str:
            timed.append((ns, f"{event_series} {group} {ns}"))
        else:
            for k, fields_text in enumerate(sorted(group)):  # content order
                timed.append((ns + k, f"{event_series} {fields_text} {ns + k}"))
    timed.sort()
    return [text for _, text in timed]


class _EventPlan(NamedTuple):
    """How to read the events that have one tuple of keys, worked out once per tuple."""

    size: int
    values: Callable[[Row], tuple]  # every value, in key order (KeyError: other keys)
    fields: tuple[tuple[int, str], ...]  # (index, escaped `key=`) of the fields, in line order
    ordered: bool  # no two keys escape to the same name: `fields` is the sorted order
    timestamp: int | None  # the index of `timestamp`
    general: bool  # a key escapes to nothing: every row field by field (`_row_parts`)

    @classmethod
    def of(cls, keys: tuple[str, ...], names: dict[str, str | bool]) -> _EventPlan:
        fields, general = [], False
        for index, key in enumerate(keys):
            name = names.get(key)
            if name is None:
                escaped = escape_key(key)
                name = names[key] = escaped + "=" if escaped else False
            if name is False:
                general = True
            elif name:
                fields.append((index, name))
        # Escaped names hold no unescaped `=` and never end in a backslash, so no name is the
        # start of another: `key=value` texts sort as their names do (as in `transform`).
        fields.sort(key=itemgetter(1))
        return cls(
            size=len(keys),
            values=itemgetter(*keys)
            if len(keys) >= 2
            else (lambda row: tuple(row[k] for k in keys)),
            fields=tuple(fields),
            ordered=len({name for _, name in fields}) == len(fields),
            timestamp=keys.index("timestamp") if "timestamp" in keys else None,
            general=general,
        )


def _row_parts(
    row: Row, names: dict[str, str | bool], strings: dict[str, str], dropped: set[str]
) -> list[str]:
    """A row's `key=value` texts, field by field, unsorted (any value, any key)."""
    parts: list[str] = []
    for key, value in row.items():
        name = names.get(key)
        if not name:
            if name is None:
                escaped = escape_key(key)
                name = names[key] = escaped + "=" if escaped else False
            if not name:
                if name is False:
                    _add_field(key, value, parts, dropped)
                continue
        kind = type(value)
        if kind is float:
            if value - value == 0.0:  # finite: inf and nan give no field
                parts.append(f"{name}{value!r}")
        elif kind is str:
            text = strings.get(value)
            if text is None:
                text = strings[value] = escape_string(value)
            parts.append(name + text)
        elif kind is int:  # as a float: `54.0`, `1e+16` (exact below 10**15)
            if -_EXACT < value < _EXACT:
                parts.append(f"{name}{value}.0")
            else:
                parts.append(name + repr(float(value)))
        elif value is not None:
            _add_field(key, value, parts, dropped)
    return parts


def _picker(attributes: tuple[str, ...]) -> Callable[[Row], tuple]:
    """A function of a row giving its values of `attributes`, raising KeyError when one is
    missing (`itemgetter`, 4× faster than `tuple(map(row.get, ...))` for two attributes)."""
    if len(attributes) >= 2:
        return itemgetter(*attributes)
    if attributes:
        [attribute] = attributes
        return lambda row: (row[attribute],)
    return lambda row: ()


def _tags(
    values: Sequence[object], static: dict[str, str], tag_keys: list[tuple[str, str]]
) -> list:
    """Escaped (key, value) pairs; an attribute's value wins over a static tag of its name."""
    tags = dict(static)
    for (_, key), value in zip(tag_keys, values, strict=True):
        tags[key] = "" if value is None else escape_key(str(value))
    return list(tags.items())


def _add_field(key: str, value: object, fields: list[str], dropped: set[str]) -> None:
    """One attribute's fields: nested objects are flattened to `<key>.<subkey>`."""
    if isinstance(value, dict):
        for sub, sub_value in value.items():
            _add_field(f"{key}.{sub}", sub_value, fields, dropped)
        return
    formatted = format_field(value)
    escaped_key = escape_key(key)
    if formatted is not None and escaped_key:
        fields.append(f"{escaped_key}={formatted}")
    elif value is not None and not isinstance(value, int | float):
        dropped.add(key)


def _timestamp_ms(row: Row) -> int:
    value = row.get("timestamp")
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise NewRelicError(f"a raw-event row has no epoch-ms `timestamp`: {dict(row)!r:.200}")
    return int(value)
