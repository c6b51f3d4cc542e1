"""Several passes of one oracle in one vectorised call (``jax.vmap`` over its methods), JAX.

The counterpart of ``backends/torch/batched_passes.py``: the oracle books a vmapped call once
(vmap traces its Python once); these helpers book the rest, so the counters still say one pass
per vector, as in torch. Used by K-FAC (the two JVPs of its quadratic model; the ``C`` backward
passes of the exact factor estimator) and EGN (the ``C`` backward passes of the taps Gram).
"""

from __future__ import annotations

import jax

from backends.spec import Oracle, Problem

Array = jax.Array


def output_tangents(problem: Problem, oracle: Oracle, vectors: list[Array]) -> list[Array]:
    """``Jz v`` (each ``(B, C)``) for every ``v`` in ``vectors``: one vmapped forward-mode pass."""
    if len(vectors) == 1:
        return [oracle.jvp(vectors[0])]
    tangents = jax.vmap(oracle.jvp)(jax.numpy.stack(vectors))
    problem.counters.add("jvp", len(vectors) - 1)
    return list(tangents)


def tap_grads_many(problem: Problem, oracle: Oracle, cotangents: Array) -> list[Array]:
    """Tap cotangents for ``k`` logit cotangents ``(k, B, C)``: per tapped layer a ``(k, B, ...)`` array.

    One vmapped reverse pass through the oracle's linearised forward (which is recorded outside
    the vmap, hence the ``tap_inputs()`` call first).
    """
    oracle.tap_inputs()
    grads = jax.vmap(oracle.tap_grads_for)(cotangents)
    problem.counters.add("backward", cotangents.shape[0] - 1)
    return list(grads)
