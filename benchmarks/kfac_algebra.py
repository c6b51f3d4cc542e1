"""K-FAC's dense linear algebra against its step and floor (the K-FAC rows of ``benchmarks.method_algebra``).

The probes (the preconditioner every step, the float64 inverses on refresh steps, the factor
statistics and their running averages on statistics steps) live in
``benchmarks.method_algebra`` with the other methods'; ``benchmarks.step_cost`` times them in its
rounds and reports ``step / (floor + algebra)``. This entry point keeps the K-FAC table with
the three pieces apart::

    OMP_NUM_THREADS=1 python -m benchmarks.kfac_algebra --threads 1 [--backend torch jax]
                                                         [--problem digits-mlp digits-wide]
"""

from __future__ import annotations

import argparse

from benchmarks.method_algebra import KFACProbe, _ops, net_of_call, probes_for, refreshes_per_step
from benchmarks.step_cost import measure, measurement_arguments, set_threads

__all__ = ["CONFIGS", "KFACProbe", "_AlgebraProbe", "_ops", "refreshes_per_step", "report"]

#: The K-FAC configurations measured: name in the table -> preset (None: the card's defaults).
CONFIGS: dict[str, str | None] = {"kfac": None, "kfac:amortised": "amortised"}

#: The former name of :class:`benchmarks.method_algebra.KFACProbe`.
_AlgebraProbe = KFACProbe


def report(backend: str, problem: str, rounds: int, warmup: int) -> list[str]:
    measured = measure(backend, problem, list(CONFIGS), rounds, warmup, extra=probes_for(list(CONFIGS)))
    lanes = net_of_call(measured.extra)  # as the adapters' algebra_s: less the null lane
    precondition = lanes.get("algebra:kfac-precondition", float("nan"))
    inverses = lanes.get("algebra:kfac-inverses", float("nan"))
    stats = lanes.get("algebra:kfac-stats", float("nan"))
    lines = []
    for cost in measured.costs:
        if cost.adapter not in CONFIGS or cost.status != "ok":
            continue
        lines.append(
            f"| {backend} | {problem} | {cost.adapter} | {cost.median_s * 1e3:.3f} ms | {cost.ratio_to_sgd:.2f} | "
            f"{cost.floor_s * 1e3:.3f} ms | {cost.efficiency:.2f} | {precondition * 1e3:.3f} ms | "
            f"{inverses * 1e3:.3f} ms | {stats * 1e3:.3f} ms | {cost.algebra_s * 1e3:.3f} ms | "
            f"{cost.efficiency_algebra:.2f} |"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description="K-FAC's linear algebra against its step and floor.")
    measurement_arguments(parser)
    args = parser.parse_args()
    set_threads(args.threads)
    print(
        "| backend | problem | adapter | median step | ratio to SGD | floor | efficiency | precondition "
        "| inverses (one refresh) | statistics (one update) | algebra / step | step / (floor + algebra) |"
    )
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for backend in args.backend or ["torch", "jax"]:
        for problem in args.problem:
            print("\n".join(report(backend, problem, args.rounds, args.warmup)), flush=True)


if __name__ == "__main__":
    main()
