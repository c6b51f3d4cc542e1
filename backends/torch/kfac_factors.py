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
import torch.nn.functional as F
from torch import Tensor

from backends.layout import ParamLayout, TappedLayer
from suites.layers import Conv2d


class LayerStats(NamedTuple):
    """One layer's factors and its location count ``T`` (the block is ``T * G kron A``)."""

    A: Tensor
    G: Tensor
    locations: int


class LayerInverse(NamedTuple):
    """How to apply ``(T G kron A + gamma^2 I)^{-1}`` to ``X = grad Wb``.

    Factored (``eigen_scale is None``): ``left @ X @ right`` with ``left, right`` the inverses of the
    damped factors (``1/T`` folded into ``left``). Exact: ``left @ ((left^T X right) * eigen_scale)
    @ right^T`` with ``left = U_G``, ``right = U_A``.
    """

    left: Tensor
    right: Tensor
    eigen_scale: Tensor | None = None


# --------------------------------------------------------------------------- statistics


def _flatten_inputs(layer: TappedLayer, a: Tensor) -> Tensor:
    """Rows ``a_{n,t}`` (``N x k``, ``N = B T``) without the bias column."""
    if layer.kind == "conv2d":
        spec = layer.layer
        assert isinstance(spec, Conv2d)
        patches = F.unfold(a, spec.kernel_size, padding=spec.padding, stride=spec.stride)  # (B, k, T)
        return patches.transpose(1, 2).reshape(-1, patches.shape[1])
    return a.reshape(-1, a.shape[-1])


def _flatten_outputs(layer: TappedLayer, e: Tensor) -> Tensor:
    """Rows ``e_{n,t}`` (``N x out``)."""
    if layer.kind == "conv2d":
        return e.flatten(2).transpose(1, 2).reshape(-1, e.shape[1])
    return e.reshape(-1, e.shape[-1])


def input_factor(layer: TappedLayer, a: Tensor) -> tuple[Tensor, int]:
    """``(A, T)`` with ``A = 1/(B T) sum abar abar^T`` (the bias coordinate last)."""
    rows = _flatten_inputs(layer, a)
    batch = a.shape[0]
    locations = rows.shape[0] // batch
    if layer.bias is not None:
        rows = torch.cat([rows, rows.new_ones(rows.shape[0], 1)], dim=1)
    return rows.T @ rows / rows.shape[0], locations


def output_factor(layer: TappedLayer, e: Tensor | list[Tensor]) -> Tensor:
    """``G = 1/(B T) sum e e^T``; a list of cotangent passes is summed (exact Fisher estimator)."""
    parts = e if isinstance(e, list) else [e]
    rows = torch.cat([_flatten_outputs(layer, p) for p in parts])
    return rows.T @ rows / (rows.shape[0] // len(parts))


def layer_stats(layout: ParamLayout, inputs: list[Tensor], grads: list[list[Tensor]]) -> list[LayerStats]:
    """Factors of every tapped layer; ``grads[j][i]`` is layer ``i``'s ``e`` of cotangent pass ``j``."""
    out = []
    for i, layer in enumerate(layout.tapped):
        A, locations = input_factor(layer, inputs[i])
        out.append(LayerStats(A, output_factor(layer, [g[i] for g in grads]), locations))
    return out


# --------------------------------------------------------------------------- damping and inverses


def pi_damped_factors(A: Tensor, G: Tensor, identity_weight: Tensor) -> tuple[Tensor, Tensor]:
    """``(A + c pi I, G + (c / pi) I)`` with ``c = sqrt(identity_weight)`` (Sec. 6.3).

    When a trace vanishes both become ``c I`` (kfac-jax's zero case).
    """
    norm_a = torch.diagonal(A).mean()
    norm_g = torch.diagonal(G).mean()
    ok = (norm_a > 0) & (norm_g > 0)
    pi = torch.sqrt(torch.where(ok, norm_a, 1.0) / torch.where(ok, norm_g, 1.0))
    c = torch.sqrt(identity_weight)
    eye_a = torch.eye(A.shape[0], dtype=A.dtype, device=A.device)
    eye_g = torch.eye(G.shape[0], dtype=G.dtype, device=G.device)
    A_hat = torch.where(ok, A + (c * pi) * eye_a, c * eye_a)
    G_hat = torch.where(ok, G + (c / pi) * eye_g, c * eye_g)
    return A_hat, G_hat


def _spd_inverse(M: Tensor) -> Tensor:
    """Inverse of a symmetric positive-definite matrix by Cholesky (float64 inside)."""
    M64 = M.to(torch.float64)
    M64 = 0.5 * (M64 + M64.T)
    return torch.cholesky_inverse(torch.linalg.cholesky(M64)).to(M.dtype)


def layer_inverse(stats: LayerStats, damping: Tensor, form: str = "pi") -> LayerInverse:
    """The damped inverse of one block ``T (G kron A) + damping I`` (see module docstring)."""
    T = float(stats.locations)
    weight = damping.to(torch.float64) / T
    if form == "pi":
        A_hat, G_hat = pi_damped_factors(stats.A.to(torch.float64), stats.G.to(torch.float64), weight)
        dtype = stats.A.dtype
        return LayerInverse((_spd_inverse(G_hat) / T).to(dtype), _spd_inverse(A_hat).to(dtype))
    s_a, U_a = torch.linalg.eigh(stats.A.to(torch.float64))
    s_g, U_g = torch.linalg.eigh(stats.G.to(torch.float64))
    scale = 1.0 / (T * (s_g.clamp_min(0).unsqueeze(1) * s_a.clamp_min(0).unsqueeze(0) + weight))
    dtype = stats.A.dtype
    return LayerInverse(U_g.to(dtype), U_a.to(dtype), scale.to(dtype))


def apply_inverse(inv: LayerInverse, X: Tensor) -> Tensor:
    if inv.eigen_scale is None:
        return inv.left @ X @ inv.right
    return inv.left @ ((inv.left.T @ X @ inv.right) * inv.eigen_scale) @ inv.right.T


# --------------------------------------------------------------------------- flat vectors


def layer_matrix(layer: TappedLayer, vec: Tensor) -> Tensor:
    """``[W, b]`` of ``layer`` in the flat vector ``vec`` as an ``out x (k+1)`` matrix."""
    out_dim = layer.weight.shape[0]
    W = vec[layer.weight.offset : layer.weight.stop].view(out_dim, -1)
    if layer.bias is None:
        return W
    return torch.cat([W, vec[layer.bias.offset : layer.bias.stop].unsqueeze(1)], dim=1)


def write_layer_matrix(layer: TappedLayer, out: Tensor, M: Tensor) -> None:
    k = layer.weight.size // layer.weight.shape[0]
    out[layer.weight.offset : layer.weight.stop] = M[:, :k].reshape(-1)
    if layer.bias is not None:
        out[layer.bias.offset : layer.bias.stop] = M[:, k]


def precondition(
    layout: ParamLayout, inverses: list[LayerInverse], vec: Tensor, untapped_scale: float | Tensor = 1.0
) -> Tensor:
    """The block-diagonal K-FAC inverse applied to a flat vector; untapped entries times ``untapped_scale``."""
    out = torch.empty_like(vec)
    for layer, inv in zip(layout.tapped, inverses, strict=True):
        write_layer_matrix(layer, out, apply_inverse(inv, layer_matrix(layer, vec)))
    for blk in layout.untapped:
        out[blk.offset : blk.stop] = vec[blk.offset : blk.stop] * untapped_scale
    return out


# --------------------------------------------------------------------------- dense references


def canonical_index(layer: TappedLayer) -> Tensor:
    """Positions (relative to the layer's first parameter) of ``vec_row_major(Wb)`` entries in the flat layout."""
    out_dim = layer.weight.shape[0]
    k = layer.weight.size // out_dim
    cols = k + (1 if layer.bias is not None else 0)
    o = torch.arange(out_dim).unsqueeze(1).expand(out_dim, cols)
    i = torch.arange(cols).unsqueeze(0).expand(out_dim, cols)
    base = layer.weight.offset
    idx = torch.where(i < k, layer.weight.offset + o * k + i, (layer.bias.offset if layer.bias else 0) + o)
    return (idx - base).reshape(-1)


def dense_block(layer: TappedLayer, stats: LayerStats) -> Tensor:
    """``T (G kron A)`` as a dense ``size x size`` matrix in the canonical flat layout of ``layer``."""
    return densify_kron(layer, stats.G * stats.locations, stats.A)


def densify_kron(layer: TappedLayer, left: Tensor, right: Tensor) -> Tensor:
    """``left kron right`` (row-major ``vec(Wb)`` order) permuted into the canonical layout."""
    K = torch.kron(left, right)
    idx = canonical_index(layer).to(K.device)
    out = torch.empty_like(K)
    out[idx.unsqueeze(1), idx.unsqueeze(0)] = K
    return out


def dense_kfac(layout: ParamLayout, stats: list[LayerStats], num_params: int) -> Tensor:
    """The block-diagonal K-FAC matrix (untapped parameters: zero blocks)."""
    ref = stats[0].A
    out = torch.zeros(num_params, num_params, dtype=ref.dtype, device=ref.device)
    for layer, st in zip(layout.tapped, stats, strict=True):
        lo = layer.weight.offset
        hi = layer.bias.stop if layer.bias is not None else layer.weight.stop
        out[lo:hi, lo:hi] = dense_block(layer, st)
    return out
