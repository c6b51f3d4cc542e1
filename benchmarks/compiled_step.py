"""Compiled against eager PyTorch (and JAX's jitted step): compile time and steady step time.

Protocol (docs/measurement.md, "Compiled PyTorch"): for each adapter, one lane per variant —
``torch`` (the eager step), ``torch-compiled`` (the step under ``torch.compile``, as
``ngbench run --torch-compile`` runs it) and, with ``--jax``, ``jax`` (the jitted step) — each
with its own problem and trajectory from the same initial parameters, called **round-robin**,
one step each per round on that round's batch, through the run loop's timed region
(:func:`harness.timing.timed_step`). A step is warm-up exactly as in a run: one during which
the step compiled, or the first one. ``compile_s`` is the warm-up steps' excess over the lane's
median step (what a run books as ``compile_time_s``); the figure is the median over the other
steps. ``graph_breaks`` counts where Dynamo had to leave the graph for eager Python.

Run::

    OMP_NUM_THREADS=1 python -m benchmarks.compiled_step [--problem digits-mlp] [--rounds 200]
        [--adapter sgd adamw ef sf adamqlr] [--jax]
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any

import numpy as np

from benchmarks.step_cost import PROBLEMS, Lane
from harness import registry
from harness.timing import timed_step


@dataclass
class Row:
    """One adapter: per variant, the median step, the compile time and the warm-up steps."""

    adapter: str
    median_s: dict[str, float]
    compile_s: dict[str, float]
    warmup_steps: dict[str, int]
    graph_breaks: int


def _lane(backend: str, suite: Any, name: str, compiled: bool = False) -> Lane:
    cls = registry.get_adapter(name, backend)
    prob = registry.backend_module(backend).build_problem(suite, seed=0, dtype="float32", device="cpu")
    adapter = cls()
    step = prob.make_step(adapter, compiled=True) if compiled else prob.make_step(adapter)
    return Lane(prob, step, prob.params0, adapter.init(prob, cls.resolve()))


def measure(name: str, problem: str = "digits-mlp", rounds: int = 200, with_jax: bool = False) -> Row:
    """Round-robin timing of ``name``'s eager, compiled (and jitted) steps on ``problem``."""
    import torch._dynamo

    torch._dynamo.reset()  # every adapter compiles from scratch (no graph of another one reused)
    torch._dynamo.utils.counters.clear()
    suite = PROBLEMS[problem]()
    lanes = {"torch": _lane("torch", suite, name), "torch-compiled": _lane("torch", suite, name, compiled=True)}
    if with_jax:
        lanes["jax"] = _lane("jax", suite, name)
    for i in range(rounds):
        for lane in lanes.values():
            batch = lane.problem.device_batch(i)
            before = lane.step.compile_count
            lane.params, lane.state, _, dt = timed_step(lane.problem, lane.step, lane.params, lane.state, batch)
            warm = lane.step.compile_count > before or (i == 0 and lane.step.compile_count == 0)
            (lane.warm if warm else lane.times).append(dt)
    medians = {k: float(np.median(lane.times)) for k, lane in lanes.items()}
    return Row(
        adapter=name,
        median_s=medians,
        compile_s={k: float(sum(max(0.0, t - medians[k]) for t in lane.warm)) for k, lane in lanes.items()},
        warmup_steps={k: len(lane.warm) for k, lane in lanes.items()},
        graph_breaks=int(sum(torch._dynamo.utils.counters["graph_break"].values())),
    )


def format_table(rows: list[Row], problem: str) -> str:
    variants = list(rows[0].median_s)
    head = ["adapter", *(f"{v} step ms" for v in variants), "compiled/eager"]
    head += [f"{v} compile s (warm-up steps)" for v in variants if v != "torch"] + ["graph breaks"]
    lines = [f"{problem}, one thread", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r.adapter, *(f"{r.median_s[v] * 1e3:.3f}" for v in variants)]
        cells.append(f"{r.median_s['torch-compiled'] / r.median_s['torch']:.2f}")
        cells += [f"{r.compile_s[v]:.1f} ({r.warmup_steps[v]})" for v in variants if v != "torch"]
        cells.append(str(r.graph_breaks))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description="Compiled against eager PyTorch: compile time and step time.")
    parser.add_argument("--problem", default="digits-mlp", choices=list(PROBLEMS))
    parser.add_argument("--adapter", nargs="+", default=["sgd", "adamw", "ef", "sf", "adamqlr"])
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--jax", action="store_true", help="add JAX's jitted step as a third lane")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    rows, failed = [], []
    for name in args.adapter:
        try:
            rows.append(measure(name, args.problem, args.rounds, args.jax))
        except Exception as exc:  # a step that cannot compile is a finding, not the end of the table
            failed.append(f"{name}: {str(exc).strip().splitlines()[-1]}")
            print(failed[-1], flush=True)
            continue
        print(format_table(rows[-1:], args.problem).splitlines()[-1], flush=True)
    if rows:
        print(format_table(rows, args.problem))
    print("\n".join(failed))


if __name__ == "__main__":
    main()
