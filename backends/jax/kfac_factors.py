"""K-FAC's Kronecker factors in JAX: statistics, damped inverses, preconditioning, densification.

The same conventions and normalisations as ``backends/torch/kfac_factors.py`` (parity is tested).
For a tapped layer with weight ``W`` (``out x k``; Conv2d weights ``(out, in, kh, kw)`` read as
``out x (in kh kw)``) and bias ``b``, ``Wb = [W, b]`` (``out x (k+1)``); ``T`` is the number of
locations the layer is applied at (1 for a Linear layer on 2-D inputs, ``H_out W_out`` for
Conv2d, the sequence length for a Linear layer on ``(B, S, k)`` inputs). With ``abar_{n,t}`` the
layer input at location ``t`` (Conv2d: the im2col patch, channel-major like the weight) extended
by a 1 for the bias and ``e_{n,t}`` the pre-activation gradient of the per-sample loss ``l_n``::

    A = 1/(B T) sum_{n,t} abar abar^T,        G = 1/(B T) sum_{n,t} e e^T,
    F_layer ~= T * (G kron A)                 in the row-major order of vec(Wb)

(Martens & Grosse 2015, Sec. 3, eqs. (1)-(2); Grosse & Martens 2016 (KFC), Sec. 3.1, with
kfac-jax's normalisation: ``Conv2DTwoKroneckerFactored`` divides both factors by
``batch_size * num_locations`` and carries ``fixed_scale = num_locations``). With several
cotangent passes per batch (the exact estimator: one per column of the output Hessian's square
root) ``G`` sums over the passes.

Damping: the factored Tikhonov form (Martens & Grosse 2015, Sec. 6.3)::

    T (G + (c / pi) I) kron (A + c pi I),   c = sqrt(gamma^2 / T),
    pi = sqrt((tr A / dim A) / (tr G / dim G))

(kfac-jax ``pi_adjusted_kronecker_factors``, "avg_diag" norm; both factors become ``c I`` when a
trace vanishes), or exactly in the eigenbases (``form="exact"``, kfac-jax ``use_exact_inverses``):
``(T (s_G s_A^T) + gamma^2)^{-1}`` elementwise in ``U_G^T X U_A``. Inverses are computed in
float64 (Cholesky / ``eigh``) and stored in the factors' dtype.

Everything here is a pure function of arrays with static shapes (jit-friendly); ``T`` is a
Python int derived from the model spec (:func:`layer_locations`).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from backends import kfac_maths, layer_kinds
from backends.jax.ops import JAX_OPS
from backends.layout import ParamLayout, TappedLayer

Array = jax.Array


class LayerStats(NamedTuple):
    """One layer's factors ``A`` (``(k+1) x (k+1)``, bias last) and ``G`` (``out x out``)."""

    A: Array
    G: Array


#: How to apply a block's damped inverse (``backends.kfac_maths``).
LayerInverse = kfac_maths.LayerInverse


# --------------------------------------------------------------------------- shapes


def layer_locations(layout: ParamLayout, layer: TappedLayer) -> int:
    """``T``: the locations a tapped layer is applied at, per sample (from the spec's shapes)."""
    return layer_kinds.rule(layer).positions(tuple(layout.spec.shapes[layer.layer_index + 1]))


def factor_dims(layer: TappedLayer) -> tuple[int, int]:
    """``(dim A, dim G)``: ``k (+1 with a bias)`` and ``out``."""
    out_dim = layer.weight.shape[0]
    k = layer.weight.size // out_dim
    return k + (1 if layer.bias is not None else 0), out_dim


def zero_stats(layout: ParamLayout, dtype: jnp.dtype) -> tuple[LayerStats, ...]:
    """All-zero factors of every tapped layer (the fixed-shape state before the first step)."""
    out = []
    for layer in layout.tapped:
        da, dg = factor_dims(layer)
        out.append(LayerStats(jnp.zeros((da, da), dtype), jnp.zeros((dg, dg), dtype)))
    return tuple(out)


def zero_inverses(layout: ParamLayout, dtype: jnp.dtype, form: str) -> tuple[LayerInverse, ...]:
    """All-zero inverses of the shapes :func:`layer_inverse` returns for ``form``."""
    out = []
    for layer in layout.tapped:
        da, dg = factor_dims(layer)
        scale = jnp.zeros((dg, da), dtype) if form == "exact" else None
        out.append(LayerInverse(jnp.zeros((dg, dg), dtype), jnp.zeros((da, da), dtype), scale))
    return tuple(out)


# --------------------------------------------------------------------------- statistics


def input_factor(layer: TappedLayer, a: Array) -> Array:
    """``A = 1/(B T) sum abar abar^T`` (the bias coordinate last; the layer kind's factor,
    ``backends.layer_kinds``)."""
    return layer_kinds.rule(layer).input_factor(JAX_OPS, layer, a)


def output_factor(layer: TappedLayer, e: Array) -> Array:
    """``G = 1/(B T) sum e e^T`` summed over passes; ``e`` has a leading pass axis ``(P, B, ...)``."""
    return layer_kinds.rule(layer).output_factor(JAX_OPS, layer, [e[j] for j in range(e.shape[0])])


def layer_stats(layout: ParamLayout, inputs: list[Array], grads: list[Array]) -> list[LayerStats]:
    """Factors of every tapped layer; ``grads[i]`` is layer ``i``'s ``e`` stacked over passes."""
    return [
        LayerStats(input_factor(layer, inputs[i]), output_factor(layer, grads[i]))
        for i, layer in enumerate(layout.tapped)
    ]


# --------------------------------------------------------------------------- damping and inverses


def pi_damped_factors(A: Array, G: Array, identity_weight: Array) -> tuple[Array, Array]:
    """Factored Tikhonov damping, Sec. 6.3 (``backends.kfac_maths.pi_damped_factors``)."""
    return kfac_maths.pi_damped_factors(JAX_OPS, A, G, identity_weight)


def layer_inverse(stats: LayerStats, damping: Array, locations: int, form: str = "pi") -> LayerInverse:
    """The damped inverse of one block ``T (G kron A) + damping I`` (``backends.kfac_maths``)."""
    return kfac_maths.layer_inverse(JAX_OPS, stats.A, stats.G, damping, locations, form)


apply_inverse = kfac_maths.apply_inverse


# --------------------------------------------------------------------------- flat vectors


def layer_matrix(layer: TappedLayer, vec: Array) -> Array:
    """``[W, b]`` of ``layer`` in the flat vector ``vec`` as an ``out x (k+1)`` matrix."""
    return kfac_maths.layer_matrix(JAX_OPS, layer, vec)


def precondition(
    layout: ParamLayout,
    inverses: tuple[LayerInverse, ...] | list[LayerInverse],
    vec: Array,
    untapped_scale: float | Array = 1.0,
) -> Array:
    """The block-diagonal K-FAC inverse applied to a flat vector; untapped entries times ``untapped_scale``."""
    return kfac_maths.precondition(JAX_OPS, layout, inverses, vec, untapped_scale)


# --------------------------------------------------------------------------- dense references


canonical_index = kfac_maths.canonical_index


def densify_kron(layer: TappedLayer, left: Array, right: Array) -> Array:
    """``left kron right`` (row-major ``vec(Wb)`` order) permuted into the canonical layout (the
    kind's ``to_dense``, ``backends.layer_kinds``)."""
    return layer_kinds.rule(layer).to_dense(JAX_OPS, layer, right, left, 1)


def dense_kfac(layout: ParamLayout, stats: list[LayerStats] | tuple[LayerStats, ...]) -> Array:
    """The block-diagonal K-FAC matrix ``T (G kron A)`` per layer (untapped parameters: zero blocks)."""
    ref = stats[0].A
    out = jnp.zeros((layout.size, layout.size), ref.dtype)
    for layer, st in zip(layout.tapped, stats, strict=True):
        lo = layer.weight.offset
        block = densify_kron(layer, st.G * layer_locations(layout, layer), st.A)
        out = out.at[lo : lo + layer.size, lo : lo + layer.size].set(block)
    return out
