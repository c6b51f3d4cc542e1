"""Floating-point operations of one optimizer step, counted by PyTorch itself.

``torch.utils.flop_counter.FlopCounterMode`` intercepts the aten operators that carry a FLOP
formula (matrix products, convolutions, attention) and sums them; elementwise operators count
zero, so the figure is the matrix-multiply work of the step, the part that scales with the
model. A step is counted once, untimed, on a throwaway copy of the parameters and a throwaway
optimizer state (an adapter's state may be consumed by its step), before the timed loop.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode


def step_flops(step_fn: Any, params: torch.Tensor, state: Any, batch: Any) -> float:
    """FLOPs of ``step_fn(params, state, batch)`` (one call, outputs discarded)."""
    with torch.no_grad():
        copy = params.detach().clone()
    with FlopCounterMode(display=False) as counter:
        step_fn(copy, state, batch)
    return float(counter.get_total_flops())
