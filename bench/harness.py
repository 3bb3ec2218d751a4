"""The archiver as a measured child process: its environment, query files, wall time, peak RSS.

Peak RSS is the child's own high-water mark (VmHWM), read from /proc while it runs; CPU time
comes from the kernel's accounting of that one child (`os.wait4`).
"""

from __future__ import annotations

import os
import re
import resource
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
ACCOUNT = 1234567
OUTPUT_TAIL_CHARS = 3000
RSS_POLL_SECONDS = 0.02


class BenchError(RuntimeError):
    """A measurement could not be taken; the message says which and why."""


@dataclass(frozen=True)
class ChildRun:
    returncode: int
    seconds: float
    peak_rss_bytes: int
    cpu_seconds: float
    output: str
    started: float  # time.monotonic() just before the process was started


def archiver_env(
    *,
    source: Path,
    nerdgraph_url: str,
    api_key: str,
    influx_url: str,
    state_db: Path,
    queries_dir: Path,
) -> dict[str, str]:
    """The child's environment; `source` is the checkout whose `archiver` package runs."""
    return {
        **os.environ,
        "PYTHONPATH": str(source),
        "NEW_RELIC_API_KEY": api_key,
        "NEW_RELIC_ACCOUNT_ID": str(ACCOUNT),
        "NEW_RELIC_NERDGRAPH_URL": nerdgraph_url,
        "INFLUX_URL": influx_url,
        "ARCHIVER_DB_URL": f"sqlite:///{state_db}",
        "ARCHIVER_QUERIES_DIR": str(queries_dir),
        "ARCHIVER_LOG_LEVEL": "INFO",
    }


def write_query(folder: Path, name: str, content: Mapping[str, object]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"name": name, **content}, sort_keys=False), encoding="utf-8")
    return path


def archiver_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "archiver", *args]


def run_measured(
    argv: Sequence[str], env: Mapping[str, str], cwd: Path, log_path: Path, timeout: float
) -> ChildRun:
    """Run `argv` to completion (killed after `timeout` s); output goes to `log_path`."""
    started = time.monotonic()
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            list(argv), env=dict(env), cwd=cwd, stdin=subprocess.DEVNULL, stdout=log, stderr=log
        )
    reaped: dict[str, object] = {}
    waiter = threading.Thread(target=lambda: reaped.update(_wait4(process.pid)), daemon=True)
    waiter.start()
    peak_rss = 0
    while waiter.is_alive():
        peak_rss = max(peak_rss, _peak_rss(process.pid))
        waiter.join(RSS_POLL_SECONDS)
        if time.monotonic() - started > timeout:
            process.kill()
            waiter.join()
            raise BenchError(f"{' '.join(argv[1:])} did not finish within {timeout:g} s")
    seconds = time.monotonic() - started
    process.returncode = os.waitstatus_to_exitcode(reaped["status"])  # already reaped
    output = log_path.read_text(encoding="utf-8", errors="replace")[-OUTPUT_TAIL_CHARS:]
    usage = reaped["usage"]
    cpu = usage.ru_utime + usage.ru_stime
    return ChildRun(process.returncode, seconds, peak_rss, cpu, output, started)


def _wait4(pid: int) -> dict[str, object]:
    _, status, usage = os.wait4(pid, 0)
    return {"status": status, "usage": usage}


def _peak_rss(pid: int) -> int:
    """The process's peak RSS so far (VmHWM), in bytes; 0 once it has exited.

    Not `ru_maxrss`: a child's counts the RSS of the parent it was forked from (the kernel
    carries the pre-exec high-water mark over), here the benchmark with its precomputed data.
    """
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return 0
    found = re.search(r"^VmHWM:\s+(\d+) kB", status, re.MULTILINE)
    return int(found.group(1)) * 1024 if found else 0


def process_cpu_seconds(pid: int | None = None) -> float:
    """User + system CPU time of a running process (this one by default), from /proc."""
    if pid is None:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    utime, stime = int(fields[11]), int(fields[12])  # fields 14 and 15 of proc(5)
    return (utime + stime) / os.sysconf("SC_CLK_TCK")


def require_success(what: str, run: ChildRun) -> ChildRun:
    if run.returncode != 0:
        raise BenchError(f"{what} exited with {run.returncode}:\n{run.output}")
    return run
