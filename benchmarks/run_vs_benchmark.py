"""Each adapter's step as a stored run times it and as the step-cost table times it, in one process.

The run loop is :func:`harness.runner.execute` itself (``RunSpec(suite, adapter, steps=N,
stop_at_target=False, device="cpu")``, its ``step_time_median_s``); the table is
:func:`benchmarks.step_cost.measure` with each ``--block`` given. Rounds interleave the two so
that machine noise hits both alike, and each figure is the median over rounds, printed with its
ratio to SGD from the same loop. ``--clock cpu`` swaps the timer of ``harness.timing`` for the
thread CPU clock, which leaves out the time the process waits for a core on a loaded machine.

Run (docs/profiling.md, "Run against benchmark")::

    OMP_NUM_THREADS=1 python -m benchmarks.run_vs_benchmark [--rounds 2] [--steps 300]
        [--block 1 10] [--clock wall|cpu] [--adapter sgd adamw ief sf fngd adamqlr]
"""

from __future__ import annotations

import argparse
import time
import types

import numpy as np

import harness.timing
from benchmarks.step_cost import measure
from harness.runner import RunSpec, execute

SUITE = "digits-mlp"


def run_medians(adapters: list[str], steps: int) -> dict[str, float]:
    """``step_time_median_s`` of one stored-run-style execution per adapter."""
    out = {}
    for name in adapters:
        result = execute(RunSpec(SUITE, name, backend="torch", steps=steps, device="cpu", stop_at_target=False))
        if result.step_time_median_s is None:
            raise RuntimeError(f"{name}: {result.status} {result.error}")
        out[name] = result.step_time_median_s
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Run loop against step-cost benchmark, one process.")
    parser.add_argument("--adapter", nargs="+", default=["sgd", "adamw", "ief", "sf", "fngd", "adamqlr"])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=300, help="steps of each run")
    parser.add_argument("--block", type=int, nargs="+", default=[1, 10], help="benchmark turn lengths")
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    if args.clock == "cpu":
        harness.timing.time = types.SimpleNamespace(perf_counter=time.thread_time)  # type: ignore[assignment]
    adapters = args.adapter if "sgd" in args.adapter else ["sgd", *args.adapter]
    loops = ["run", *(f"block {b}" for b in args.block)]
    medians: dict[str, dict[str, list[float]]] = {loop: {a: [] for a in adapters} for loop in loops}
    for _ in range(args.rounds):
        for name, value in run_medians(adapters, args.steps).items():
            medians["run"][name].append(value)
        for block in args.block:
            for cost in measure("torch", SUITE, adapters, rounds=100, warmup=10, block=block, algebra=False).costs:
                medians[f"block {block}"][cost.adapter].append(cost.median_s)
    print(f"| loop ({args.clock} clock, {args.rounds} rounds) | " + " | ".join(adapters) + " |")
    print("|---|" + "---:|" * len(adapters))
    for loop in loops:
        sgd = float(np.median(medians[loop]["sgd"]))
        cells = [f"{np.median(v) * 1e3:.3f} ms ({np.median(v) / sgd:.2f})" for v in medians[loop].values()]
        print(f"| {loop} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
