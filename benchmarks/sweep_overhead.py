"""Sweep throughput: the fixed cost a sweep adds to every run, for the local and Ray executors.

For each executor a sweep of ``--runs`` short runs (``tiny-ce``, SGD, ``--steps`` steps, one
seed each) goes through the real path: fresh worker process per run, result back to the
parent as JSON, atomic write to a fresh SQLite database. Per run:

* ``run``: wall time inside ``harness.runner.execute`` (build the problem, train, evaluate);
* ``worker start``: from the lane dispatching the job to the worker starting ``execute``
  (fork from the warm launcher, or a new interpreter with ``--isolation spawn``);
* ``transfer``: from the end of ``execute`` to the parent holding the parsed result;
* ``db write``: the parent's check-and-insert of the run and its metric rows;
* ``overhead``: everything but ``run`` (start + transfer + write, and on Ray the task's
  scheduling from submission to the driver receiving it).

Start-up (launcher imports, probing the device, ``ray.init``) happens once per sweep and is
reported separately as ``startup``. Goal (issue 8): overhead <= 2 s per run on CPU.

Run directly for the table::

    python -m benchmarks.sweep_overhead [--runs 24] [--steps 1] [--workers 2]
                                        [--executor local spawn ray]

asv: ``SweepOverhead.track_overhead_per_run`` (median seconds per run, by executor) and
``track_startup`` (seconds per sweep).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, ClassVar


def _plan(runs: int, steps: int, suite: str = "tiny-ce") -> Any:
    from harness.plans import expand
    from harness.sweep import load_config

    return expand(
        load_config(
            {
                "name": f"overhead-{suite}",
                "suites": [suite],
                "optimizers": ["sgd"],
                "seeds": list(range(runs)),
                "steps": steps,
                "stop_at_target": False,
                "timeout_s": 600,
            }
        )
    )


def _executor(kind: str, workers: int) -> Any:
    if kind == "ray":
        from harness.executors.ray_executor import RayExecutor

        return RayExecutor(devices=("cpu",), workers=workers)
    from harness.executors.local import LocalExecutor

    return LocalExecutor(("cpu",), workers, isolation="spawn" if kind == "spawn" else "fork")


def measure(kind: str, runs: int = 24, steps: int = 1, workers: int = 2, suite: str = "tiny-ce") -> dict[str, float]:
    """Median per-run figures (seconds) of one sweep on executor ``kind`` (local, spawn, ray)."""
    from db.store import open_store
    from harness.orchestrator import run_sweep

    with tempfile.TemporaryDirectory(prefix="ngbench-overhead-") as tmp:
        store = open_store(Path(tmp) / "overhead.db")
        t0, started = time.perf_counter(), time.time()
        summary = run_sweep(_plan(runs, steps, suite), store, _executor(kind, workers))
        wall = time.perf_counter() - t0
        store.dispose()
    outs = [o for o in summary.outcomes if o.run_seconds is not None]
    if len(outs) != runs:
        raise RuntimeError(f"{kind}: {runs - len(outs)} run(s) without timings: {summary.statuses}")

    def med(values: list[float]) -> float:
        return float(statistics.median(values))

    run = [o.run_seconds or 0.0 for o in outs]
    start = [o.timing["exec_start"] - o.timing["dispatched"] for o in outs]
    transfer = [o.timing["received"] - o.timing["exec_end"] for o in outs]
    write = [o.timing["stored"] - o.timing["store_start"] for o in outs]
    if kind == "ray":  # the driver's view: task submission to the driver holding the result
        total = [o.timing["driver_received"] - o.timing["submitted"] for o in outs]
    else:
        total = [o.timing["received"] - o.timing["dispatched"] for o in outs]
    overhead = [t - r + w for t, r, w in zip(total, run, write)]
    first = min(o.timing.get("submitted", o.timing["dispatched"]) for o in outs)
    return {
        "runs": float(runs),
        "run": med(run),
        "worker_start": med(start),
        "transfer": med(transfer),
        "db_write": med(write),
        "overhead": med(overhead),
        "overhead_p90": float(sorted(overhead)[int(0.9 * (len(overhead) - 1))]),
        "startup": first - started,
        "wall": wall,
        "throughput": runs / max(wall - (first - started), 1e-9),
    }


class SweepOverhead:
    """asv: per-run overhead and per-sweep start-up of the local and Ray executors."""

    params: ClassVar[list[str]] = ["local", "ray"]
    param_names: ClassVar[list[str]] = ["executor"]
    timeout = 600.0
    unit = "seconds"

    def setup_cache(self) -> dict[str, dict[str, float]]:
        out = {"local": measure("local", runs=16)}
        try:
            out["ray"] = measure("ray", runs=16)
        except Exception:  # ray missing or cannot start: the local figure still counts
            out["ray"] = {}
        return out

    def track_overhead_per_run(self, cache: dict[str, dict[str, float]], executor: str) -> float:
        return cache[executor].get("overhead", float("nan"))

    track_overhead_per_run.unit = "seconds"  # type: ignore[attr-defined]

    def track_startup(self, cache: dict[str, dict[str, float]], executor: str) -> float:
        return cache[executor].get("startup", float("nan"))

    track_startup.unit = "seconds"  # type: ignore[attr-defined]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=24)
    parser.add_argument("--steps", type=int, default=1)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--suite", default="tiny-ce")
    parser.add_argument("--executor", nargs="+", default=["local", "spawn", "ray"], choices=["local", "spawn", "ray"])
    args = parser.parse_args()
    cols = ("run", "worker_start", "transfer", "db_write", "overhead", "overhead_p90")
    print(f"{args.runs} runs of {args.suite} sgd x {args.steps} step(s), {args.workers} workers, CPU; medians per run")
    print(f"{'executor':<12}" + "".join(f"{c:>14}" for c in (*cols, "startup", "steady rate")))
    warm_run = None
    for kind in args.executor:
        r = measure(kind, args.runs, args.steps, args.workers, args.suite)
        if kind == "local":
            warm_run = r["run"]
        cells = [f"{r[c] * 1e3:11.1f} ms" for c in cols]
        cells += [f"{r['startup']:12.2f} s", f"{r['throughput']:8.2f} run/s"]
        label = {"local": "local", "spawn": "local-spawn", "ray": "ray"}[kind]
        print(f"{label:<12}" + "".join(f"{c:>14}" for c in cells))
        if kind == "spawn" and warm_run is not None:
            print(
                f"{'':<12}(spawn: a new interpreter imports torch/sklearn inside the run; cold-start cost "
                f"{r['run'] - warm_run:.2f} s per run on top of the overhead column)"
            )


if __name__ == "__main__":
    main()
