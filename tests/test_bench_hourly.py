"""`bench/run.py --rows hourly2000` (bench/hourly.py): the measurement itself, on a few files.

No timing threshold (a shared machine); checked: every file was exported with one request
each, none was refused by the fake's New Relic rules, and requests per minute are counted.
"""

from __future__ import annotations

from pathlib import Path

from bench import hourly

REPO = Path(__file__).resolve().parents[1]


def test_peak_per_minute_counts_the_busiest_60_seconds() -> None:
    assert hourly.peak_per_minute([]) == 0
    assert hourly.peak_per_minute([0.0, 10.0, 59.9, 60.0, 61.0, 200.0]) == 4  # 10 … 61
    assert hourly.peak_per_minute([5.0, 1.0, 3.0]) == 3


def test_a_small_hourly_run_exports_every_file_with_one_request_each(tmp_path: Path) -> None:
    figures = hourly.measure(tmp_path, REPO, timeout=300, files=12)

    assert (figures.requests, figures.refused) == (12, 0)
    # Bench10: 10 facets, in each of the 57 one-minute buckets (58 should a minute begin
    # between writing the files and running them)
    assert figures.points in {12 * 10 * 57, 12 * 10 * 58}
    assert 0 < figures.peak_per_minute <= 12
    assert figures.ok
    assert "12 query files" in figures.line() and ": ok" in figures.line()
