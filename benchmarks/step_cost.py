"""Per-step cost of every adapter, as time and as a ratio to SGD's step in the same process.

Protocol (as docs/measurement.md, "Anchor step costs"): every adapter gets its own problem (same suite,
seed and data) and its own trajectory from the same initial parameters; adapters are called
**round-robin**, one step each per round on that round's batch, so machine noise hits all of
them alike. Each step runs through the backend's prepared step (jitted in JAX) between device
fences. The first ``warmup`` rounds (compilation, allocator warm-up) are discarded and reported
as compile time; the figure is the median over the timed rounds, and the ratio divides it by
SGD's median from the same rounds. Passes per step come from the oracle's counters.

Problems: ``digits-mlp`` (26,122 parameters, batch 32) and ``digits-wide`` (a 64-320-256-10
tanh MLP on the same data, 105,546 parameters, batch 32: the ~10^5-trainable-parameter size of
parameter-efficient fine-tuning, where the iEF paper reports EF/iEF at AdamW's speed).

Run directly for the table (both backends if installed)::

    python -m benchmarks.step_cost [--backend torch jax] [--problem digits-mlp digits-wide]
                                   [--rounds 100] [--warmup 10] [--threads 2]

asv: ``StepCost.track_ratio_to_sgd`` and ``track_step_time`` per (backend, problem, adapter).
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from suites import get_suite
from suites.layers import Linear, ModelSpec, Tanh
from suites.spec import Suite


def _wide_digits() -> Suite:
    base = get_suite("digits-mlp")
    model = ModelSpec((64,), (Linear(64, 320), Tanh(), Linear(320, 256), Tanh(), Linear(256, 10)))
    return base.replace(name="digits-wide", model=model, description="benchmark-only: 64-320-256-10 tanh MLP")


PROBLEMS = {"digits-mlp": lambda: get_suite("digits-mlp"), "digits-wide": _wide_digits}


@dataclass
class Cost:
    backend: str
    problem: str
    adapter: str
    params: int
    median_s: float
    p10_s: float
    p90_s: float
    compile_s: float
    ratio_to_sgd: float
    passes: dict[str, float]
    status: str = "ok"


def measure(
    backend: str, problem: str, adapters: list[str] | None = None, rounds: int = 100, warmup: int = 10
) -> list[Cost]:
    """Round-robin step timing of ``adapters`` (default: all in ``backend``) on ``problem``."""
    from harness import registry

    module = registry.backend_module(backend)
    available = registry.adapters(backend)
    names = adapters or list(available)
    if "sgd" not in names:
        names = ["sgd", *names]
    suite = PROBLEMS[problem]()
    runners: dict[str, dict[str, Any]] = {}
    for name in names:
        cls = available[name]
        prob = module.build_problem(suite, seed=0, dtype="float32", device="cpu")
        adapter = cls()
        runners[name] = {
            "problem": prob,
            "step": prob.make_step(adapter),
            "params": prob.params0,
            "state": adapter.init(prob, cls.resolve()),
            "times": [],
            "warm": [],
            "error": None,
        }
    batches = {name: [r["problem"].device_batch(i) for i in range(rounds + warmup)] for name, r in runners.items()}
    counts0: dict[str, dict[str, int]] = {}
    for i in range(rounds + warmup):
        if i == warmup:
            counts0 = {n: r["problem"].counters.snapshot() for n, r in runners.items()}
        for name, r in runners.items():
            if r["error"] is not None:
                continue
            prob = r["problem"]
            try:
                prob.block(r["params"])
                t0 = time.perf_counter()
                r["params"], r["state"], stats = r["step"](r["params"], r["state"], batches[name][i])
                prob.block(r["params"], stats)
                dt = time.perf_counter() - t0
            except Exception as exc:  # a failing adapter is reported, not fatal to the table
                r["error"] = f"{type(exc).__name__}: {exc}"
                continue
            (r["warm"] if i < warmup else r["times"]).append(dt)
    out = []
    sgd_median = float(np.median(runners["sgd"]["times"]))
    for name, r in runners.items():
        prob = r["problem"]
        if r["error"] is not None or not r["times"]:
            out.append(Cost(backend, problem, name, prob.num_params, *[float("nan")] * 5, {}, r["error"] or "no steps"))
            continue
        times = np.asarray(r["times"])
        med = float(np.median(times))
        after = prob.counters.snapshot()
        passes = {k: (after[k] - counts0[name].get(k, 0)) / len(times) for k in after}
        compile_s = float(sum(max(0.0, t - med) for t in r["warm"]))
        out.append(
            Cost(
                backend,
                problem,
                name,
                prob.num_params,
                med,
                float(np.percentile(times, 10)),
                float(np.percentile(times, 90)),
                compile_s,
                med / sgd_median,
                passes,
            )
        )
    return out


def format_table(costs: list[Cost]) -> str:
    lines = [
        "| backend | problem | adapter | params | median step | p10–p90 | ratio to SGD | compile "
        "| passes (f/b/jvp/vjp/ps) |",
        "|---|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for c in costs:
        if c.status != "ok":
            lines.append(f"| {c.backend} | {c.problem} | {c.adapter} | {c.params} | failed: {c.status} | | | | |")
            continue
        p = c.passes
        passes = "/".join(f"{p.get(k, 0):.2g}" for k in ("forward", "backward", "jvp", "vjp", "per_sample"))
        lines.append(
            f"| {c.backend} | {c.problem} | {c.adapter} | {c.params} | {c.median_s * 1e3:.3f} ms | "
            f"{c.p10_s * 1e3:.2f}–{c.p90_s * 1e3:.2f} ms | {c.ratio_to_sgd:.2f} | {c.compile_s:.2f} s | {passes} |"
        )
    return "\n".join(lines)


def _asv_params() -> tuple[list[str], list[str], list[str]]:
    from backends.methods import BUILTIN_METHODS
    from harness import registry

    backends = [b for b in ("torch", "jax") if registry.backend_available(b)]
    return backends, list(PROBLEMS), list(BUILTIN_METHODS)


class StepCost:
    """asv: one measurement per (backend, problem) shared by all adapters of that pair."""

    params = _asv_params()
    param_names = ("backend", "problem", "adapter")
    timeout = 900
    _cache: ClassVar[dict[tuple[str, str], dict[str, Cost]]] = {}

    def setup(self, backend: str, problem: str, adapter: str) -> None:
        key = (backend, problem)
        if key not in self._cache:
            self._cache[key] = {c.adapter: c for c in measure(backend, problem, rounds=60, warmup=8)}
        if adapter not in self._cache[key]:
            raise NotImplementedError  # asv records the combination as skipped
        self.cost = self._cache[key][adapter]

    def track_ratio_to_sgd(self, backend: str, problem: str, adapter: str) -> float:
        return self.cost.ratio_to_sgd

    track_ratio_to_sgd.unit = "ratio"  # type: ignore[attr-defined]

    def track_step_time(self, backend: str, problem: str, adapter: str) -> float:
        return self.cost.median_s

    track_step_time.unit = "seconds"  # type: ignore[attr-defined]

    def track_passes_per_step(self, backend: str, problem: str, adapter: str) -> float:
        p = self.cost.passes
        return float(p.get("forward", 0) + p.get("backward", 0) + p.get("jvp", 0) + p.get("vjp", 0))

    track_passes_per_step.unit = "passes"  # type: ignore[attr-defined]


def main() -> None:
    parser = argparse.ArgumentParser(description="Per-step cost of every adapter (ratio to SGD).")
    parser.add_argument("--backend", nargs="+", default=None)
    parser.add_argument("--problem", nargs="+", default=list(PROBLEMS))
    parser.add_argument("--adapter", nargs="+", default=None)
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    args = parser.parse_args()
    from harness import registry

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    backends = args.backend or [b for b in ("torch", "jax") if registry.backend_available(b)]
    costs: list[Cost] = []
    for backend in backends:
        for problem in args.problem:
            costs.extend(measure(backend, problem, args.adapter, args.rounds, args.warmup))
    print(format_table(costs))


if __name__ == "__main__":
    main()
