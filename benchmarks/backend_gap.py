"""The same method on eager PyTorch against JAX: how much of the gap an adapter could close.

The step-cost table measures each backend's step, its floor (what the counted passes cost on
their own, ``benchmarks.pass_costs``) and its dense linear algebra (``benchmarks.method_algebra``)
in one process per backend. For one (problem, adapter) measured on both backends this module
puts them side by side::

    gap    = torch step / JAX step
    passes = torch floor / JAX step
    bound  = (torch floor + torch algebra) / JAX step

``bound`` is what the torch step would be, relative to JAX's, if it cost exactly its passes and
its linear algebra and nothing else (efficiency 1.0 against floor + algebra). The algebra is the
lanes' figure timed alone, the smaller of the two the table gives, so the bound errs low. Each
backend is measured in rounds of its own (with JAX's lanes in the same turns torch SGD's step
measured 1.1-1.25x slower), so the ratios span the minutes between the two backends' rounds:
read them over several tables.

Verdicts, against the goal ``GOAL`` (1.2): ``met`` (the torch step within it, or JAX slower);
``passes`` (torch's counted passes alone exceed it: each autograd or forward-mode pass
dispatches its operators one at a time, and no eager torch adapter can get there; compiled
PyTorch, ``ngbench run --torch-compile``, is the protocol's answer); ``algebra`` (the passes fit,
the passes and the method's linear algebra as its lanes run it do not: out of reach unless the
algebra runs in fewer operators, which is what compiling the step does); ``adapter`` (the bound
fits and the step does not: the difference is the adapter's to remove).
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

#: The goal: the torch step within this factor of JAX's for the same method (where JAX is faster).
GOAL = 1.2


class Gap(NamedTuple):
    problem: str
    adapter: str
    torch_s: float
    jax_s: float
    #: torch step / JAX step.
    gap: float
    #: torch floor / JAX step: torch's counted passes alone against JAX's whole step.
    passes: float
    #: (torch floor + torch algebra) / JAX step: the gap at efficiency 1.0.
    bound: float
    #: ``met``, ``passes``, ``algebra`` or ``adapter`` (module docstring).
    verdict: str


def verdict(gap: float, passes: float, bound: float, goal: float = GOAL) -> str:
    if gap <= goal:
        return "met"
    if passes > goal:
        return "passes"
    return "algebra" if bound > goal else "adapter"


def gaps(costs: list[Any], goal: float = GOAL) -> list[Gap]:
    """One :class:`Gap` per (problem, adapter) measured without failure on both backends, in
    the order of the torch rows. ``costs``: ``benchmarks.step_cost_table.Cost`` rows."""
    ok = {(c.backend, c.problem, c.adapter): c for c in costs if c.status == "ok"}
    out = []
    for (backend, problem, adapter), torch_row in ok.items():
        jax_row = ok.get(("jax", problem, adapter))
        if backend != "torch" or jax_row is None:
            continue
        algebra = 0.0 if math.isnan(torch_row.algebra_s) else torch_row.algebra_s
        gap = torch_row.median_s / jax_row.median_s
        bound = (torch_row.floor_s + algebra) / jax_row.median_s
        passes = torch_row.floor_s / jax_row.median_s
        out.append(
            Gap(
                problem,
                adapter,
                torch_row.median_s,
                jax_row.median_s,
                gap,
                passes,
                bound,
                verdict(gap, passes, bound, goal),
            )
        )
    return out


def format_gaps(rows: list[Gap]) -> str:
    lines = [
        "| problem | adapter | torch step | JAX step | torch / JAX | torch floor / JAX step "
        "| (torch floor + algebra) / JAX step | verdict |",
        "|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r.problem} | {r.adapter} | {r.torch_s * 1e3:.3f} ms | {r.jax_s * 1e3:.3f} ms | {r.gap:.2f} | "
            f"{r.passes:.2f} | {r.bound:.2f} | {r.verdict} |"
        )
    return "\n".join(lines)
