"""Profile one adapter's step: where its time goes, in Python and in the framework's operators.

Builds the problem and the adapter exactly as ``benchmarks/step_cost.py`` does (seed 0,
float32, CPU), runs ``--warmup`` steps through :func:`harness.timing.timed_step`, then profiles
``--steps`` more with one of:

* ``cprofile``: Python's deterministic profiler, sorted by cumulative or own time (``--sort``):
  Python dispatch overhead, helper calls, objects built per step;
* ``torch``: ``torch.profiler`` operator table (self CPU time, calls per step): which aten
  operators run, how many times, and which copies or dtype conversions they are;
* ``ops``: every aten operator one step dispatches, in order, with its operands' shapes and
  dtypes (a ``TorchDispatchMode``), and the count per operator: on small models a torch step
  costs about its operator count times the per-operator dispatch overhead, so this is the
  list to shorten;
* ``time``: no profiler, the steps' median time and thread CPU time (a quick check of a change).

Run (one thread, as the step-cost table)::

    OMP_NUM_THREADS=1 python -m benchmarks.profile_step sf --problem digits-mlp --mode torch
    OMP_NUM_THREADS=1 python -m benchmarks.profile_step adamqlr --mode cprofile --sort tottime

For a sampling profile of the same loop with native frames, run it under py-spy::

    py-spy record --native -r 2000 -o sf.svg -- python -m benchmarks.profile_step sf --mode time --steps 3000

docs/profiling.md gives the procedure and what it found.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import time
from collections import Counter
from typing import Any

import numpy as np

from benchmarks.step_cost import PROBLEMS
from harness.timing import timed_step


def build(backend: str, problem: str, adapter: str) -> tuple[Any, Any, Any, Any, list[Any]]:
    """``(problem, step, params, state, batches)`` for ``adapter`` on ``problem``."""
    from harness import registry

    module = registry.backend_module(backend)
    cls = registry.adapters(backend)[adapter]
    prob = module.build_problem(PROBLEMS[problem](), seed=0, dtype="float32", device="cpu")
    instance = cls()
    state = instance.init(prob, cls.resolve())
    return prob, prob.make_step(instance), prob.params0, state, []


def run_steps(prob: Any, step: Any, params: Any, state: Any, first: int, count: int) -> tuple[Any, Any, list[float]]:
    """``count`` steps from step index ``first`` (batches built outside the timed region)."""
    times = []
    for i in range(first, first + count):
        batch = prob.device_batch(i)
        params, state, _, dt = timed_step(prob, step, params, state, batch)
        times.append(dt)
    return params, state, times


def operator_trace(step: Any, params: Any, state: Any, batch: Any) -> list[tuple[str, list[str]]]:
    """The aten operators one torch step dispatches: ``(name, ["shape dtype", ...])`` in order."""
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode

    trace: list[tuple[str, list[str]]] = []

    class _Trace(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
            operands = [f"{tuple(a.shape)} {str(a.dtype).removeprefix('torch.')}" for a in args if torch.is_tensor(a)]
            trace.append((func.overloadpacket.__name__, operands))
            return func(*args, **(kwargs or {}))

    with _Trace():
        step(params, state, batch)
    return trace


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Profile one adapter's step.")
    parser.add_argument("adapter")
    parser.add_argument("--backend", default="torch")
    parser.add_argument("--problem", default="digits-mlp", choices=sorted(PROBLEMS))
    parser.add_argument("--mode", default="cprofile", choices=("cprofile", "torch", "ops", "time"))
    parser.add_argument("--warmup", type=int, default=60, help="untimed steps first (past FNGD's solve epoch)")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--sort", default="cumulative", help="cProfile sort key (cumulative, tottime)")
    parser.add_argument("--limit", type=int, default=40, help="rows printed")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    args = parser.parse_args(argv)
    if args.backend == "torch":
        import torch

        torch.set_num_threads(args.threads)
    prob, step, params, state, _ = build(args.backend, args.problem, args.adapter)
    params, state, _ = run_steps(prob, step, params, state, 0, args.warmup)
    if args.mode == "cprofile":
        profiler = cProfile.Profile()
        profiler.enable()
        run_steps(prob, step, params, state, args.warmup, args.steps)
        profiler.disable()
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats(args.sort).print_stats(args.limit)
        print(out.getvalue())
    elif args.mode == "torch":
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU]) as prof:
            run_steps(prob, step, params, state, args.warmup, args.steps)
        print(f"per step: divide counts and totals by {args.steps}")
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.limit))
    elif args.mode == "ops":
        ops = operator_trace(step, params, state, prob.device_batch(args.warmup))
        for i, (name, operands) in enumerate(ops):
            print(f"{i:4d} {name} {operands}")
        print(f"{len(ops)} aten operators per step:", Counter(name for name, _ in ops).most_common())
    else:
        cpu0 = time.thread_time()
        _, _, times = run_steps(prob, step, params, state, args.warmup, args.steps)
        cpu = (time.thread_time() - cpu0) / args.steps
        print(f"{args.adapter} on {args.problem}: median {np.median(times) * 1e3:.3f} ms, cpu {cpu * 1e3:.3f} ms/step")


if __name__ == "__main__":
    main()
