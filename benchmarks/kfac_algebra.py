"""K-FAC's dense linear algebra at the sizes of a problem, timed in the same rounds as its steps.

The step-cost floor (``benchmarks/pass_costs.py``) holds only the counted passes, so K-FAC's
efficiency there includes the linear algebra the method needs on top of them:

* the **preconditioner**, every step: per tapped layer ``left @ X @ right`` with ``X = [W, b]``,
  ``2 d_out d_in (d_out + d_in)`` flops (``backends.kfac_maths.precondition``);
* the **inverses**, on refresh steps only: per layer the damped factors' Cholesky inverses
  in float64 (``backends.kfac_maths.layer_inverse``).

Two probe steppers run each on its own, through the same prepared step and timed region as the
adapters (jitted in JAX), on factors of the problem's shapes; :func:`measure` runs them
round-robin with SGD, K-FAC and its ``amortised`` preset (``benchmarks.step_cost.measure``)
and reports, per adapter, the algebra per step (``precondition + inverses x refreshes per
step``, the refresh rate from the card's schedule over the timed rounds) and the efficiency
against ``floor + algebra``::

    OMP_NUM_THREADS=1 python -m benchmarks.kfac_algebra --threads 1 [--backend torch jax]
                                                         [--problem digits-mlp digits-wide]
"""

from __future__ import annotations

import argparse
import importlib
from typing import Any

import numpy as np

from backends import kfac_maths
from backends.methods import kfac
from benchmarks.step_cost import PROBLEMS, measure

#: The K-FAC configurations measured: name in the table -> preset (None: the card's defaults).
CONFIGS: dict[str, str | None] = {"kfac": None, "kfac:amortised": "amortised"}


def _ops(problem: Any) -> Any:
    """The array operations of the problem's framework (``backends.<framework>.ops``)."""
    framework = type(problem).__module__.split(".")[1]
    module = importlib.import_module(f"backends.{framework}.ops")
    return getattr(module, f"{framework.upper()}_OPS")


def _spd(rng: np.random.Generator, dim: int) -> np.ndarray:
    m = rng.standard_normal((dim, 4 * dim)) / (4 * dim) ** 0.5
    return m @ m.T + 0.1 * np.eye(dim)


class _AlgebraProbe:
    """A step that runs one piece of K-FAC's linear algebra and returns the parameters unchanged."""

    def __init__(self, piece: str) -> None:
        self.name = f"algebra:{piece}"
        self.piece = piece

    def init(self, problem: Any, hparams: Any) -> Any:
        rng = np.random.default_rng(0)
        factors = []
        for layer in problem.layout.tapped:
            out_dim = layer.weight.shape[0]
            dim_a = layer.weight.size // out_dim + (1 if layer.bias is not None else 0)
            factors.append((problem.from_numpy(_spd(rng, dim_a)), problem.from_numpy(_spd(rng, out_dim))))
        ops = _ops(problem)
        damping = ops.asarray(0.1, ops.float64, factors[0][0])
        inverses = tuple(kfac_maths.layer_inverse(ops, A, G, damping, 1) for A, G in factors)
        return (tuple(factors), inverses, damping)

    def step(self, problem: Any, params: Any, state: Any, batch: Any) -> tuple[Any, Any, dict[str, Any]]:
        ops = _ops(problem)
        factors, inverses, damping = state
        if self.piece == "precondition":
            out = kfac_maths.precondition(ops, problem.layout, inverses, params, 1.0)
            return params, state, {"probe": out.sum()}
        fresh = [kfac_maths.layer_inverse(ops, A, G, damping, 1) for A, G in factors]
        return params, state, {"probe": sum(inv.left.sum() + inv.right.sum() for inv in fresh)}


def refreshes_per_step(preset: str | None, rounds: int, warmup: int, overrides: dict[str, Any] | None = None) -> float:
    """Inverse refreshes per timed step of a configuration (the card's schedule)."""
    hp = kfac.CARD.Hyperparams(**{**kfac.CARD.presets.get(preset or "", {}), **(overrides or {})})
    return sum(kfac.refresh_inverses(t, hp) for t in range(warmup, warmup + rounds)) / rounds


def report(backend: str, problem: str, rounds: int, warmup: int) -> list[str]:
    probes = {p.name: p for p in (_AlgebraProbe("precondition"), _AlgebraProbe("inverses"))}
    measured = measure(backend, problem, list(CONFIGS), rounds, warmup, extra=probes)
    precondition = measured.extra.get("algebra:precondition", float("nan"))
    inverses = measured.extra.get("algebra:inverses", float("nan"))
    lines = []
    for cost in measured.costs:
        if cost.adapter not in CONFIGS or cost.status != "ok":
            continue
        algebra = precondition + inverses * refreshes_per_step(CONFIGS[cost.adapter], rounds, warmup)
        lines.append(
            f"| {backend} | {problem} | {cost.adapter} | {cost.median_s * 1e3:.3f} ms | {cost.ratio_to_sgd:.2f} | "
            f"{cost.floor_s * 1e3:.3f} ms | {cost.efficiency:.2f} | {precondition * 1e3:.3f} ms | "
            f"{inverses * 1e3:.3f} ms | {algebra * 1e3:.3f} ms | {cost.median_s / (cost.floor_s + algebra):.2f} |"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description="K-FAC's linear algebra against its step and floor.")
    parser.add_argument("--backend", nargs="+", default=["torch", "jax"])
    parser.add_argument("--problem", nargs="+", default=list(PROBLEMS))
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    args = parser.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    print(
        "| backend | problem | adapter | median step | ratio to SGD | floor | efficiency | precondition "
        "| inverses (one refresh) | algebra / step | step / (floor + algebra) |"
    )
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for backend in args.backend:
        for problem in args.problem:
            print("\n".join(report(backend, problem, args.rounds, args.warmup)), flush=True)


if __name__ == "__main__":
    main()
