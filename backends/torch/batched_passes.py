"""Several passes of one oracle in one vectorised call (``torch.func.vmap`` over its methods).

The oracle counts a vmapped call once; these helpers add the rest, so the counters still say
one pass per vector. Used by K-FAC (the ``C`` backward passes of the exact factor estimator)
and EGN (the ``C`` backward passes of the taps Gram). K-FAC's two JVPs run one after the other
in an eager step (:func:`output_tangents`).
"""

from __future__ import annotations

import torch
from torch import Tensor

from backends.spec import Oracle, Problem


def output_tangents(problem: Problem, oracle: Oracle, vectors: list[Tensor]) -> list[Tensor]:
    """``Jz v`` (each ``(B, C)``) for every ``v`` in ``vectors``.

    Eager: one dual-tensor JVP per vector (``TorchOracle.jvp``). ``torch.func.vmap`` of the
    JVPs needs ``torch.func.jvp`` inside it, whose functional wrapping made the pair cost 1.7-2.2x
    two plain JVPs on the benchmark MLPs, for the same numbers (docs/profiling.md, "K-FAC (torch)").
    Under ``torch.compile``: one vmapped forward-mode pass, which Dynamo traces whole.
    """
    if len(vectors) == 1 or not torch.compiler.is_compiling():
        return [oracle.jvp(v) for v in vectors]
    tangents = torch.func.vmap(oracle.jvp)(torch.stack(vectors))
    problem.counters.add("jvp", len(vectors) - 1)
    return list(tangents)


def tap_grads_many(problem: Problem, oracle: Oracle, cotangents: Tensor) -> list[Tensor]:
    """Tap cotangents for ``k`` logit cotangents ``(k, B, C)``: per tapped layer a ``(k, B, ...)`` tensor.

    One vmapped reverse pass through the oracle's recorded forward (which must run outside the
    vmap, hence the ``tap_inputs()`` call first).
    """
    oracle.tap_inputs()
    grads = torch.func.vmap(oracle.tap_grads_for)(cotangents)
    problem.counters.add("backward", cotangents.shape[0] - 1)
    return list(grads)
