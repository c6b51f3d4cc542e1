"""The timed region of one step: the single definition the run loop and the benchmarks share.

A step is timed between two device fences (docs/measurement.md, "Step time"): ``problem.block``
on the parameters before the call (so work queued by the previous step or by batch
preparation is not charged to this one), then the backend's prepared step, then
``problem.block`` on everything the step returned (so asynchronous dispatch in JAX or on a
CUDA stream is waited for). The clock is :func:`time.perf_counter` (monotonic, the highest
resolution available). Nothing else happens inside: batch preparation, divergence checks,
logging and memory bookkeeping come before or after.

``benchmarks/step_cost.py`` times steps through this same function, so the step-cost table
measures exactly what a run's ``step_time_median_s`` measures.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, NamedTuple


class TimedStep(NamedTuple):
    """What one timed step returned, and its duration in seconds."""

    params: Any
    state: Any
    stats: dict[str, Any]
    seconds: float


def timed_step(
    problem: Any, step_fn: Any, params: Any, state: Any, batch: Any, clock: Callable[[], float] = time.perf_counter
) -> TimedStep:
    """``step_fn(params, state, batch)`` between two device fences, timed by ``clock`` (runs:
    always :func:`time.perf_counter`; the step-cost benchmark may pass :func:`time.thread_time`)."""
    problem.block(params)
    start = clock()
    params, state, stats = step_fn(params, state, batch)
    problem.block(params, stats)
    return TimedStep(params, state, stats, clock() - start)
