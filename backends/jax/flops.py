"""Floating-point operations of one optimizer step, from XLA's cost analysis.

The jitted step is lowered and compiled for the run's arguments and XLA's
``cost_analysis()["flops"]`` is read: every operation of the optimized HLO, elementwise ones
included, and both branches of a ``lax.cond`` (so an amortised update such as K-FAC's periodic
inverse counts as if taken every step). Nothing is executed; the compile is untimed and happens
before the timed loop.
"""

from __future__ import annotations

from typing import Any


def step_flops(step_fn: Any, params: Any, state: Any, batch: Any) -> float | None:
    """FLOPs of one call of the jitted ``step_fn`` (a :class:`~backends.jax.counting.CountedJit`)."""
    analysis = step_fn.cost_analysis(params, state, batch)
    if isinstance(analysis, list | tuple):
        analysis = analysis[0] if analysis else {}
    flops = (analysis or {}).get("flops")
    return float(flops) if flops is not None and flops >= 0 else None
