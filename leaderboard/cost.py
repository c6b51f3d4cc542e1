"""Gradient equivalents per step: a run's passes weighed by their cost relative to one gradient.

One *gradient equivalent* is the cost of one forward and one backward pass over the batch, the
physical floor of a first-order step (SGD's step is exactly 1.0). Each pass kind the oracle
counts (docs/measurement.md, "Passes per step") gets the share of a gradient its arithmetic
costs. The weights come from the matrix products of a dense layer ``s = W a`` on a batch, which
dominate the FLOPs of every built-in model:

* ``forward``: one product ``W a`` per layer, **1/3** of a gradient;
* ``backward``: two products per layer, the input cotangent ``W^T e`` and the weight gradient
  ``e a^T``, **2/3** (the usual "a backward costs two forwards", Griewank & Walther 2008,
  Sec. 4.6; Kaplan et al. 2020, Sec. 2.1: 2N FLOPs per token forward, 4N backward);
* ``vjp``: a reverse pass with an arbitrary output cotangent, the same two products, **2/3**;
* ``jvp``: the tangent of ``s``, ``W' a + W a'``, two products per layer, **2/3** (the primal
  is the forward the oracle already books; where an implementation recomputes it, that is
  kernel engineering, not the method's arithmetic);
* ``per_sample``: a vectorised per-sample gradient is one forward and one backward whose weight
  gradients stay unsummed (``B`` outer products cost what their sum costs), **1**.

A reverse pass that skips the weight gradient (the tap cotangents of EGN's taps Gram and of
K-FAC's and SF's sampled-label passes) is still booked as a backward, so the figure is an upper
bound for them. Elementwise work, solves and factor inverses are not passes and are not
counted here: they are in the measured FLOPs per step (docs/measurement.md, "FLOPs"), which is
why both figures are shown.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

#: Cost of one pass of each kind, in gradients (one forward + one backward = 1).
PASS_WEIGHTS: Mapping[str, float] = {
    "forward": 1.0 / 3.0,
    "backward": 2.0 / 3.0,
    "vjp": 2.0 / 3.0,
    "jvp": 2.0 / 3.0,
    "per_sample": 1.0,
}


def grad_equivalents(passes: Any) -> float:
    """``sum_kind weight(kind) * passes[kind]``: passes per step in gradients; NaN when nothing
    was counted (no passes stored, or a kind without a weight: a figure not known is not 0)."""
    if not isinstance(passes, Mapping) or not passes:
        return math.nan
    total = 0.0
    for kind, count in passes.items():
        if count is None:
            return math.nan
        value = float(count)
        if not math.isfinite(value):
            return math.nan
        if value == 0.0:
            continue
        if kind not in PASS_WEIGHTS:
            return math.nan
        total += PASS_WEIGHTS[kind] * value
    return total
