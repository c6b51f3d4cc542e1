"""Site build time for a generated database of 10,000 runs with 200 metric points each.

Goal (issue 7): ``ngbench site build`` renders such a database in at most 30 s on the project's
2-core machine. The database comes from :mod:`leaderboard.synthetic` (31 nightly sweeps of
6 suites x 9 optimizers x 2 backends x 3 seeds, curves, statuses, reports, approximation rows).

asv runs :class:`SiteBuild` (``asv run --bench site_build``); to measure directly::

    python benchmarks/site_build.py [--runs 10000] [--points 200] [--jobs N] [--repeat 3]

which prints the build time of each repeat and the time per phase.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

RUNS = 10_000
POINTS = 200


def make_database(directory: Path, runs: int = RUNS, points: int = POINTS) -> Path:
    from db.store import open_store
    from leaderboard.synthetic import generate

    path = directory / "results.db"
    store = open_store(path)
    generate(store, runs=runs, points=points)
    store.dispose()
    return path


def build_once(db: Path, out: Path, jobs: int | None = None) -> Any:
    from db.store import open_store
    from leaderboard.site import build

    store = open_store(db)
    try:
        return build(store, out, jobs=jobs)
    finally:
        store.dispose()


class SiteBuild:
    """``ngbench site build`` (library call, no registry lookup) on the generated database."""

    timeout = 900
    number = 1
    repeat = 1
    rounds = 1
    warmup_time = 0.0

    def setup_cache(self) -> str:
        directory = Path(tempfile.mkdtemp(prefix="ngbench-site-bench-"))
        return str(make_database(directory))

    def setup(self, db: str) -> None:
        self.out = Path(tempfile.mkdtemp(prefix="ngbench-site-out-")) / "site"

    def time_build_10k_runs(self, db: str) -> None:
        build_once(Path(db), self.out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Measure the site build time on a generated database.")
    parser.add_argument("--runs", type=int, default=RUNS)
    parser.add_argument("--points", type=int, default=POINTS)
    parser.add_argument("--jobs", type=int, default=None, help="worker processes (default: CPU count, at most 4)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--db", type=Path, default=None, help="reuse this generated database")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="ngbench-site-bench-") as tmp:
        directory = Path(tmp)
        if args.db is None:
            t0 = time.perf_counter()
            db = make_database(directory, args.runs, args.points)
            print(f"generated {args.runs} runs x {args.points} points in {time.perf_counter() - t0:.1f} s")
        else:
            db = args.db
        seconds = []
        for i in range(args.repeat):
            report = build_once(db, directory / f"site{i}", args.jobs)
            seconds.append(report.seconds)
            phases = ", ".join(f"{k} {v:.1f}" for k, v in report.timings.items())
            print(f"build {i + 1}: {report.seconds:.1f} s ({report.pages} pages, {report.plots} plots; {phases})")
        print(f"median build time: {statistics.median(seconds):.1f} s over {len(seconds)} builds")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
