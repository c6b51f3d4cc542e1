"""What each pass the oracle counts costs on a problem, and an adapter's floor built from them.

An adapter's **floor** is the time its counted passes cost when each is run on its own through
the same prepared step and timed region as the adapter (``harness.timing.timed_step``)::

    floor = sum_k  passes_per_step[k] * cost[k],      k in forward, backward, jvp, vjp, per_sample

and its **efficiency** is ``step time / floor``: 1.0 means the step costs no more than the passes
the method needs; above 1.0 is the adapter's own overhead (Python dispatch, tensors built per
step, linear algebra, work done twice). The dense linear algebra of a method (a sample-space
solve, K-FAC's factor inverses, EGN's ``B C`` system) is not in the floor: it is part of what the
efficiency shows, and the table names it per method where it is large.

The cost of each pass kind comes from *probes*: steps that ask the oracle one question and leave
the parameters unchanged (the answer goes into the step's statistics, so XLA cannot drop it).
Each probe's passes are read from the oracle's counters, not assumed (a gradient is one forward
and one backward; a JVP on its own is one ``jvp``), and the per-kind costs solve
``probe_time = counts @ cost`` by least squares. Probes run round-robin with the adapters in
the same process (``benchmarks/step_cost.py``), so machine noise hits both alike.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

#: The pass kinds the oracle counts (``backends.spec.PassCounters``), in table order.
PASS_KINDS: tuple[str, ...] = ("forward", "backward", "jvp", "vjp", "per_sample")

#: One oracle question per probe; its passes are whatever the counters record for it.
QUERIES: dict[str, Callable[[Any, Any], Any]] = {
    "forward": lambda oracle, params: oracle.loss_value(),
    "gradient": lambda oracle, params: oracle.grad(),
    "jvp": lambda oracle, params: oracle.jvp(params),
    "vjp": lambda oracle, params: oracle.vjp(oracle.logit_grads()),
    "per_sample": lambda oracle, params: oracle.per_sample_grads(),
}


class Probe:
    """A step that asks the oracle ``query`` and returns the parameters unchanged."""

    def __init__(self, query: str) -> None:
        self.name = f"probe:{query}"
        self._ask = QUERIES[query]

    def init(self, problem: Any, hparams: Any) -> None:
        return None

    def step(self, problem: Any, params: Any, state: Any, batch: Any) -> tuple[Any, Any, dict[str, Any]]:
        answer = self._ask(problem.oracle(params, batch), params)
        return params, state, {"probe": answer.sum()}


def pass_costs(counts: Mapping[str, Mapping[str, float]], times: Mapping[str, float]) -> dict[str, float]:
    """Per-kind cost from probes: least squares of ``times[p] = sum_k counts[p][k] cost[k]``.

    ``counts[p]`` are probe ``p``'s passes per step (from the counters), ``times[p]`` its median
    step time. Kinds no probe exercises are left out.
    """
    probes = [p for p in times if p in counts]
    kinds = [k for k in PASS_KINDS if any(counts[p].get(k, 0) for p in probes)]
    if not probes or not kinds:
        return {}
    matrix = np.array([[counts[p].get(k, 0.0) for k in kinds] for p in probes], dtype=float)
    rhs = np.array([times[p] for p in probes], dtype=float)
    solution, *_ = np.linalg.lstsq(matrix, rhs, rcond=None)
    return {k: max(0.0, float(c)) for k, c in zip(kinds, solution, strict=True)}


def floor(passes_per_step: Mapping[str, float], costs: Mapping[str, float]) -> float:
    """``sum_k passes_per_step[k] * costs[k]`` over the kinds with a measured cost (NaN if a
    counted kind has none)."""
    total = 0.0
    for kind, count in passes_per_step.items():
        if not count:
            continue
        if kind not in costs:
            return float("nan")
        total += count * costs[kind]
    return total


def probe_names(queries: Sequence[str] = tuple(QUERIES)) -> list[str]:
    return [f"probe:{q}" for q in queries]
