"""`bench/run.py --profile`: where the time of a backfill and of the transform goes.

The backfill is sampled from outside by py-spy (every thread: the work happens in the runner's
job threads, which in-process profilers such as pyinstrument do not see), idle time included,
so waiting on New Relic or InfluxDB shows too. The transform runs in process under pyinstrument.
"""

from __future__ import annotations

import re
import shutil
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path

from archiver.queries import QueryDef
from bench.harness import REPO, BenchError
from bench.measures import Answer, transform_rate

SAMPLES_PER_SECOND = 250
TOP = 15
FRAME = re.compile(r"^(?P<function>.*) \((?P<file>.*?)(?::\d+)?\)$")


def py_spy_command(argv: Sequence[str], raw_output: Path) -> list[str]:
    py_spy = shutil.which("py-spy")
    if py_spy is None:
        raise BenchError("--profile needs py-spy: pip install py-spy")
    return [
        py_spy,
        "record",
        "--idle",
        "--rate",
        str(SAMPLES_PER_SECOND),
        "--format",
        "raw",
        "--output",
        str(raw_output),
        "--",
        *argv,
    ]


# Time by pipeline step: the first of these functions found in a stack, outermost frame first.
# A key ending in "." is a class: any of its methods. Answers are parsed and made into lines on
# the client's parsing thread (`parse_answer`, `to_lines`), windows are read ahead in groups
# (`read_ahead_groups`), written on writer threads and recorded in order (`export`'s `settle`).
STEPS = (
    ("fetch: NerdGraphClient.query", "NerdGraphClient.query"),
    ("parse: parse_answer", "parse_answer"),
    ("transform: to_lines", "to_lines"),
    ("write: InfluxV1Sink.write", "InfluxV1Sink.write"),
    ("state database", "State."),
    ("job waits for a write", "Job.export.<locals>.settle"),
    ("job waits for the next window", "read_ahead_groups.<locals>.take"),
    ("read-ahead waits for room", "read_ahead_groups.<locals>.offer"),
)
IN_A_JOB = (
    "Runner._job",
    "read_ahead_groups.<locals>.produce",
    "Job.export.<locals>.record",
    "Job.export.<locals>.write",
)
# Leaf frames that mean "blocked": waiting on a socket, a lock or another thread (`_worker`:
# an idle thread of a pool, waiting in C for its next task).
WAITING = (
    "SocketIO.readinto",
    "Condition.wait",
    "Event.wait",
    "Thread.join",
    "Lock.acquire",
    "_worker (concurrent/futures/thread.py)",
)


def summarize_py_spy(raw_output: Path) -> str:
    """Thread time by pipeline step (blocked time included), and the top on-CPU functions."""
    steps: Counter[str] = Counter()
    waiting: Counter[str] = Counter()
    on_cpu: Counter[str] = Counter()
    for frames, count in _stacks(raw_output):
        step = _step(frames)
        if step == "main thread" and frames[-1].startswith("Condition.wait"):
            continue  # the main thread waiting for the job threads
        steps[step] += count
        if frames[-1].startswith(WAITING):
            waiting[step] += count
        else:
            on_cpu[frames[-1]] += count
    lines = [f"{raw_output.relative_to(REPO)}: seconds by step (of which blocked):"]
    for step, count in steps.most_common():
        lines.append(f"  {step:<32} {_seconds(count):6.2f} s  ({_seconds(waiting[step]):.2f} s)")
    cpu_total = sum(on_cpu.values())
    lines.append(f"on CPU: {_seconds(cpu_total):.2f} s, by function (self):")
    lines += [f"  {count / cpu_total:6.1%}  {name}" for name, count in on_cpu.most_common(TOP)]
    return "\n".join(lines)


def _stacks(raw_output: Path) -> Iterator[tuple[list[str], int]]:
    for line in raw_output.read_text(encoding="utf-8").splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            yield [_function(frame) for frame in stack.split(";")], int(count)


def _step(frames: list[str]) -> str:
    names = [frame.split(" (")[0] for frame in frames]
    for name in names:
        for step, key in STEPS:
            if name == key or (key.endswith(".") and name.startswith(key)):
                return step
    return "job: other" if any(name in IN_A_JOB for name in names) else "main thread"


def _seconds(samples: int) -> float:
    return samples / SAMPLES_PER_SECOND


def _function(frame: str) -> str:
    found = FRAME.match(frame.strip())
    if found is None:
        return frame.strip()
    path = found["file"]
    for marker in ("site-packages/", "lib/python3.11/", f"{REPO}/"):
        path = path.split(marker, 1)[-1]
    return f"{found['function']} ({path})"


def profile_transform(query: QueryDef, sample: list[Answer], output: Path) -> str:
    try:
        from pyinstrument import Profiler
    except ImportError:
        raise BenchError("--profile needs pyinstrument: pip install pyinstrument") from None
    profiler = Profiler(interval=0.0005)
    with profiler:
        transform_rate(query, sample, repeats=3)
    text = profiler.output_text(unicode=False, color=False)
    output.write_text(text, encoding="utf-8")
    return text
