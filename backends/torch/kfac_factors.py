"""K-FAC's Kronecker factors on PyTorch: statistics, damped inverses, preconditioning, densification.

For a tapped layer with weight ``W`` (``out x k``; Conv2d weights ``(out, in, kh, kw)`` are read as
``out x (in kh kw)``) and bias ``b``, write ``Wb = [W, b]`` (``out x (k+1)``) and let ``T`` be the
number of locations the layer is applied at (1 for a Linear layer on 2-D inputs, ``H_out W_out``
for Conv2d, the sequence length for a Linear layer on ``(B, S, k)`` inputs). With ``abar_{n,t}``
the layer input at location ``t`` (Conv2d: the im2col patch) extended by a 1 for the bias and
``e_{n,t}`` the pre-activation gradient of the per-sample loss ``l_n`` (not divided by ``B``)::

    A = 1/(B T) sum_{n,t} abar abar^T,        G = 1/(B T) sum_{n,t} e e^T,
    F_layer ~= T * (G kron A)                 in the row-major order of vec(Wb)

(Martens & Grosse 2015, Sec. 3, eq. (1)-(2), for ``T = 1``; Grosse & Martens 2016 (KFC),
Sec. 3.1, with the kfac-jax normalisation: ``Conv2DTwoKroneckerFactored`` divides both factors
by ``batch_size * num_locations`` and carries ``fixed_scale = num_locations``; curvlinops'
"expand" convention, ``A / (B T)`` and ``G`` not divided by ``T``, has the same product). The
flat parameter layout is canonical: ``W`` row-major then ``b``; :func:`dense_block` permutes.

Damping. The damped block ``T (G kron A) + gamma^2 I`` is approximated by the factored Tikhonov
form (Martens & Grosse 2015, Sec. 6.3)::

    T (G + (c / pi) I) kron (A + c pi I),   c = sqrt(gamma^2 / T),
    pi = sqrt((tr A / dim A) / (tr G / dim G))

(kfac-jax ``pi_adjusted_kronecker_factors`` with the "avg_diag" norm, equal to the paper's
trace norm; both factors become ``c I`` when a trace vanishes), or exactly in the
eigenbases (``form="exact"``: kfac-jax ``use_exact_inverses``, kfac-pytorch's default):
``(T (s_G s_A^T) + gamma^2)^{-1}`` elementwise in ``U_G^T X U_A``.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from backends import kfac_maths, layer_kinds
from backends.layout import ParamLayout, TappedLayer
from backends.torch.ops import TORCH_OPS


class LayerStats(NamedTuple):
    """One layer's factors and its location count ``T`` (the block is ``T * G kron A``)."""

    A: Tensor
    G: Tensor
    locations: int


#: How to apply a block's damped inverse (``backends.kfac_maths``).
LayerInverse = kfac_maths.LayerInverse


# --------------------------------------------------------------------------- statistics


def input_factor(layer: TappedLayer, a: Tensor) -> tuple[Tensor, int]:
    """``(A, T)`` with ``A = 1/(B T) sum abar abar^T`` (the bias coordinate last; the layer
    kind's factor, ``backends.layer_kinds``)."""
    A = layer_kinds.rule(layer).input_factor(TORCH_OPS, layer, a)
    return A, layer.positions


def output_factor(layer: TappedLayer, e: Tensor | list[Tensor]) -> Tensor:
    """``G = 1/(B T) sum e e^T``; a list of cotangent passes is summed (exact Fisher estimator)."""
    return layer_kinds.rule(layer).output_factor(TORCH_OPS, layer, e if isinstance(e, list) else [e])


def layer_stats(layout: ParamLayout, inputs: list[Tensor], grads: list[list[Tensor]]) -> list[LayerStats]:
    """Factors of every tapped layer; ``grads[j][i]`` is layer ``i``'s ``e`` of cotangent pass ``j``."""
    out = []
    for i, layer in enumerate(layout.tapped):
        A, locations = input_factor(layer, inputs[i])
        out.append(LayerStats(A, output_factor(layer, [g[i] for g in grads]), locations))
    return out


# --------------------------------------------------------------------------- damping and inverses


def layer_inverse(stats: LayerStats, damping: Tensor, form: str = "pi") -> LayerInverse:
    """The damped inverse of one block ``T (G kron A) + damping I`` (``backends.kfac_maths``)."""
    return kfac_maths.layer_inverse(TORCH_OPS, stats.A, stats.G, damping, stats.locations, form)


apply_inverse = kfac_maths.apply_inverse


# --------------------------------------------------------------------------- flat vectors


def layer_matrix(layer: TappedLayer, vec: Tensor) -> Tensor:
    """``[W, b]`` of ``layer`` in the flat vector ``vec`` as an ``out x (k+1)`` matrix."""
    return kfac_maths.layer_matrix(TORCH_OPS, layer, vec)


def precondition(
    layout: ParamLayout, inverses: list[LayerInverse], vec: Tensor, untapped_scale: float | Tensor = 1.0
) -> Tensor:
    """The block-diagonal K-FAC inverse applied to a flat vector; untapped entries times ``untapped_scale``."""
    return kfac_maths.precondition(TORCH_OPS, layout, inverses, vec, untapped_scale)


# --------------------------------------------------------------------------- dense references


def canonical_index(layer: TappedLayer) -> Tensor:
    """Positions of ``vec_row_major(Wb)`` entries in the layer's flat layout (``backends.layer_kinds``)."""
    return torch.as_tensor(layer_kinds.rule(layer).canonical_index(layer))


def dense_block(layer: TappedLayer, stats: LayerStats) -> Tensor:
    """``T (G kron A)`` as a dense ``size x size`` matrix in the canonical flat layout of ``layer``
    (the kind's ``to_dense``)."""
    return layer_kinds.rule(layer).to_dense(TORCH_OPS, layer, stats.A, stats.G, stats.locations)


def densify_kron(layer: TappedLayer, left: Tensor, right: Tensor) -> Tensor:
    """``left kron right`` (row-major ``vec(Wb)`` order) permuted into the canonical layout."""
    return layer_kinds.rule(layer).to_dense(TORCH_OPS, layer, right, left, 1)


def dense_kfac(layout: ParamLayout, stats: list[LayerStats], num_params: int) -> Tensor:
    """The block-diagonal K-FAC matrix (untapped parameters: zero blocks)."""
    ref = stats[0].A
    out = torch.zeros(num_params, num_params, dtype=ref.dtype, device=ref.device)
    for layer, st in zip(layout.tapped, stats, strict=True):
        lo = layer.weight.offset
        hi = layer.bias.stop if layer.bias is not None else layer.weight.stop
        out[lo:hi, lo:hi] = dense_block(layer, st)
    return out
