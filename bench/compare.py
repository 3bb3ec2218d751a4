"""Two checkouts of the archiver, run in turn on the same answers: which one is faster here, now.

On a shared VM the machine's speed moves by a third within minutes, so two `make bench` runs a
few minutes apart cannot tell a 10% change. Here each row's answers are computed once, and the
archivers of the two checkouts run one after the other, `--rounds` times each (which one goes
first alternates), each run into a fresh influxd; each side keeps its best points/s and its
least CPU per point. No limit is measured.

    python bench/compare.py ../before            # this checkout against ../before
    python bench/compare.py ../before --source ../after --rows d,e --rounds 5
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench import matrix, measures  # noqa: E402
from bench.fastfake import PrecomputedNerdGraph  # noqa: E402
from bench.harness import ACCOUNT, BenchError  # noqa: E402
from bench.run import NR_RETENTION, Bench, Try  # noqa: E402
from fakes.nerdgraph import Reply  # noqa: E402

DEFAULT_ROWS = "a,b,c,d,e,f,g"


@dataclass(frozen=True)
class Side:
    """One checkout's tries on one row."""

    tries: list[Try]

    @property
    def points_per_second(self) -> float:
        return max(t.points_per_second for t in self.tries)

    @property
    def us_per_point(self) -> float:
        return min(t.cpu_seconds["archiver"] / t.points * 1e6 for t in self.tries)

    @property
    def peak_rss_mib(self) -> float:
        return max(t.peak_rss_bytes for t in self.tries) / 2**20


def compare_row(
    bench: Bench, shape: matrix.Shape, sources: tuple[Path, Path], rounds: int
) -> tuple[Side, Side]:
    """Both checkouts' tries on `shape`, in turn, on the same precomputed answers."""
    length = shape.short_span if bench.short else shape.span
    folder, query = bench.query_of(shape, f"bench_{shape.key}")
    since, until = bench.span(length)
    replies: dict[str, Reply] = {}
    keep = None if shape.live else replies
    for _ in measures.runner_answers(query, since, until, lambda q: bench.answer(q, keep)):
        pass
    tries: tuple[list[Try], list[Try]] = ([], [])
    for number in range(rounds):
        for side in (0, 1) if number % 2 == 0 else (1, 0):
            bench.source = sources[side]
            attempt = bench.runs  # a database of its own in the shared influxd (--short)
            tries[side].append(
                bench.archiver_try(shape, query, folder, (since, until), replies, attempt, None)
            )
    points = {t.points for side in tries for t in side}
    if len(points) != 1:
        raise BenchError(f"row {shape.key}: the two archivers wrote {sorted(points)} points")
    return Side(tries[0]), Side(tries[1])


def report(results: list[tuple[str, Side, Side]], names: tuple[str, str]) -> str:
    header = (
        f"{'row':4} {'points/s ' + names[0]:>22} {'points/s ' + names[1]:>22} {'ratio':>6}"
        f" {'us/pt ' + names[0]:>14} {'us/pt ' + names[1]:>14} {'peak RSS':>17}"
    )
    lines = [header]
    for key, before, after in results:
        lines.append(
            f"{key:4} {before.points_per_second:>22,.0f} {after.points_per_second:>22,.0f}"
            f" {after.points_per_second / before.points_per_second:>6.2f}"
            f" {before.us_per_point:>14.2f} {after.us_per_point:>14.2f}"
            f" {before.peak_rss_mib:>7.0f} / {after.peak_rss_mib:>3.0f} MiB"
        )
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("other", type=Path, help="the checkout to compare with (the baseline)")
    parser.add_argument(
        "--source", type=Path, default=REPO, help="the checkout measured against it (this one)"
    )
    parser.add_argument("--rows", default=DEFAULT_ROWS, help=f"rows to run ({DEFAULT_ROWS})")
    parser.add_argument("--rounds", type=int, default=3, help="tries of each checkout (3)")
    parser.add_argument(
        "--short", action="store_true", help="small spans, one influxd: a smoke test"
    )
    parser.add_argument(
        "--timeout", type=float, default=900, help="seconds allowed per archiver run (900)"
    )
    args = parser.parse_args(argv)
    for checkout in (args.other, args.source):
        if not (checkout / "archiver" / "__main__.py").is_file():
            parser.error(f"{checkout}: not a checkout of nr-archiver (no archiver/__main__.py)")
    try:
        args.shapes = matrix.select(args.rows)
    except ValueError as exc:
        parser.error(str(exc))
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sources = (args.other.resolve(), args.source.resolve())
    names = ("before", "after")
    print(f"before: {sources[0]}\nafter: {sources[1]}", flush=True)
    results = []
    with (
        tempfile.TemporaryDirectory(prefix="nr-archiver-compare-") as tmp,
        PrecomputedNerdGraph(accounts={ACCOUNT}, retention=NR_RETENTION).start() as fake,
    ):
        bench = Bench(Path(tmp), fake, args.timeout, sources[1], short=args.short)
        try:
            with bench.shared_influxd():
                for shape in args.shapes:
                    before, after = compare_row(bench, shape, sources, max(1, args.rounds))
                    results.append((shape.key, before, after))
                    print(report(results[-1:], names).splitlines()[-1], flush=True)
        except BenchError as exc:
            print(f"comparison failed: {exc}", file=sys.stderr)
            return 1
    print()
    print(report(results, names))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
