"""`bench/run.py --short`: the bench itself works and reports every row of the matrix.

No timing threshold: the figures of a short run on a shared machine mean nothing. What is
checked is that every row ran, wrote the points its limit was measured with (the bench
refuses otherwise), and that every request was one the bench planned (its windows come from
the runner's own sizing, so a change there cannot silently make the fake answer live).
"""

from __future__ import annotations

import json

import pytest

from bench import compare, matrix, run


def test_short_bench_reports_every_row_with_sane_figures(tmp_path, capsys):
    output = tmp_path / "bench.json"
    assert run.main(["--short", "--output", str(output)]) == 0
    document = json.loads(output.read_text())
    assert list(document["rows"]) == list(matrix.KEYS)
    for key, row in document["rows"].items():
        best = row["best"]
        assert best["points"] == row["limit_points"] * (1 if key != "live" else 4), key
        assert row["points_per_second"] > 0 and row["limit_points_per_second"] > 0, key
        assert row["ratio"] == row["points_per_second"] / row["limit_points_per_second"]
        assert row["archiver_us_per_point"] > 0 and row["influxd_us_per_point"] >= 0, key
        assert 0 < row["peak_rss_bytes"] < 2**30, key
        # the first request to New Relic comes after the process started, before it ended
        assert 0 < row["start_seconds"] == best["start_seconds"] < best["seconds"], key
        limit_seconds = best["points"] / row["limit_points_per_second"]
        assert row["ceiling"] == limit_seconds / (best["start_seconds"] + limit_seconds), key
        planned = 0 if key == "live" else best["nr_requests"]
        assert best["precomputed_answers"] == planned, key
    assert document["rss_ratio_live_30d_a_7d"] > 0
    printed = capsys.readouterr().out
    assert all(f"\n{key} " in printed for key in matrix.KEYS)


def test_latency_can_be_set_for_the_rows_run(capsys):
    args = run.parse_args(["--rows", "f,g", "--latency", "0.25"])
    assert [(shape.key, shape.latency) for shape in args.shapes] == [("f", 0.25), ("g", 0.25)]
    assert args.shapes[0].title.endswith("; --latency 250 ms")
    assert run.parse_args(["--rows", "g"]).shapes[0].latency == matrix.LATENCY_SECONDS
    with pytest.raises(SystemExit):
        run.parse_args(["--latency", "-1"])
    assert "--latency: seconds, at least 0" in capsys.readouterr().err


def test_compare_runs_both_checkouts_in_turn_on_the_same_answers(capsys):
    """`bench/compare.py`: here a checkout against itself, so both sides write the same
    points (it refuses otherwise) and each side reports its own tries."""
    assert compare.main([str(run.REPO), "--short", "--rows", "a", "--rounds", "2"]) == 0
    printed = capsys.readouterr().out
    assert f"before: {run.REPO}\nafter: {run.REPO}\n" in printed
    [line] = [line for line in printed.splitlines()[-2:] if line.startswith("a ")]
    before, after, ratio = line.split()[1:4]
    assert int(before.replace(",", "")) > 0 and int(after.replace(",", "")) > 0
    shown = int(after.replace(",", "")) / int(before.replace(",", ""))
    assert abs(float(ratio) - shown) <= 0.006  # after / before, to two decimals
