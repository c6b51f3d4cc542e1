"""Sample-space (Woodbury) primitives shared by EF, iEF, SF and FNGD on PyTorch.

Every exact empirical/sampled Fisher method of this benchmark lives on the per-sample
gradient matrix ``J`` (rows ``J[n] = grad l_n``, mean-loss convention, *not* divided by ``B``)
through four operations, none of which needs ``J`` itself for the tapped layers:

* the Gram ``K = J J^T`` (``R x R``): for a Linear layer with pre-activation gradients ``E``
  and inputs ``A`` (the oracle's taps), ``grad_W l_n = e_n a_n^T`` and ``grad_b l_n = e_n``, so

      K_layer = (E E^T) * (A_bar A_bar^T),     A_bar = [A, 1]  =>  A_bar A_bar^T = A A^T + 1

  (``*`` elementwise; the Hadamard "Gram trick", ASDL's ``OP_GRAM_HADAMARD``, used by FNGD,
  Ou et al. 2024), ``O(B^2 (d_in + d_out))`` per layer; ``K = sum_layers K_layer``;
* ``J^T w = sum_n w_n grad l_n``, per layer ``E^T diag(w) A_bar``: a weighted gradient;
* ``J v`` (per-sample inner products ``<grad l_n, v>``), per layer ``sum_o E * (A W_v^T + b_v)``;
* per-layer Grams ``K_layer`` (FNGD's layer-wise coefficients).

Layers with positions (Conv2d, a Linear applied to ``(B, T, d)`` inputs) have per-sample
gradients ``sum_t e_nt a_nt^T``; their Gram is either summed over position pairs inside the
Gram, ``K_ij = sum_{t,s} (e_it . e_js)(a_bar_it . a_bar_js)`` (cost ``B^2 T^2 (d_in + d_out)``),
or formed from the per-layer per-sample gradients (cost ``B T d_in d_out + B^2 d_in d_out``),
whichever is cheaper (:func:`positions_gram_path`). Conv inputs are unfolded into patches
(``F.unfold``: channel-major ``(C_in, kh, kw)`` columns, the layout of the flattened weight).

Rows may stack several sets of cotangents over the same inputs: SF's ``k`` sampled-label draws
give ``R = k B`` rows (draw-major), each from one extra reverse pass through the same forward.

Where some trainable parameter is not in a tapped layer (``problem.layout.all_tapped`` is
false) every operation falls back to the dense ``J`` (``oracle.per_sample_grads()`` for the
true labels, a vectorised per-sample VJP for sampled cotangents).

All of ``J``'s factors and ``K`` stay in the working dtype; only the ``R x R`` damped solve runs
in float64 (:func:`damped_solve`), the cost structure docs/methods.md ("Where the speed is") asks for.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.func import grad as func_grad
from torch.func import vmap

from backends import blocks
from backends.blocks import block_spans, positions_gram_path, uses_taps
from backends.layout import ParamLayout, TappedLayer
from suites.layers import Conv2d

if TYPE_CHECKING:
    from backends.torch.oracle import TorchOracle

# --------------------------------------------------------------------------- the interface


class SampleJacobian(Protocol):
    """The per-sample gradient matrix ``J`` (``rows x P``) seen through its sample-space ops.

    ``groups`` are the contiguous parameter ranges ``[start, stop)`` of the blocks FNGD gives
    their own coefficients (:func:`block_spans`): each tapped layer (weight and bias) and each
    untapped parameter, in canonical order.
    """

    rows: int
    groups: tuple[tuple[int, int], ...]

    def gram(self) -> Tensor:
        """``K = J J^T`` (``rows x rows``), working dtype."""
        ...

    def group_grams(self) -> Tensor:
        """``K_l = J_l J_l^T`` per group, shape ``(groups, rows, rows)``; ``sum_l K_l = K``."""
        ...

    def rmatvec(self, w: Tensor) -> Tensor:
        """``J^T w`` for ``w`` of shape ``(rows,)``: flat ``(P,)``."""
        ...

    def rmatvec_groups(self, w: Tensor) -> Tensor:
        """``[J_l^T w_l]_l`` for ``w`` of shape ``(groups, rows)``: flat ``(P,)``."""
        ...

    def matvec(self, v: Tensor) -> Tensor:
        """``J v`` for a flat ``v``: shape ``(rows,)``."""
        ...

    def dense(self) -> Tensor:
        """``J`` itself, ``(rows, P)`` (tests and small problems only)."""
        ...


# --------------------------------------------------------------------------- taps


@dataclass(frozen=True)
class _LayerFactors:
    """One tapped layer as per-sample gradient factors.

    ``e``: ``(D, B, d_out)`` or ``(D, B, T, d_out)`` cotangents of the pre-activation for ``D``
    stacked draws; ``a``: ``(B, d_in)`` or ``(B, T, d_in)`` inputs (conv: unfolded patches).
    The layer's flat weight is ``(d_out, d_in)`` in C order; the bias (if any) follows it.
    """

    layer: TappedLayer
    e: Tensor
    a: Tensor

    @property
    def has_positions(self) -> bool:
        return self.a.dim() == 3

    @property
    def bias(self) -> bool:
        return self.layer.bias is not None


def _factors(layer: TappedLayer, a: Tensor, e: Tensor, draws: int) -> _LayerFactors:
    """Bring a layer's raw taps (``a`` from the forward, ``e`` stacked over draws) to factor form."""
    batch = a.shape[0]
    if layer.kind == "conv2d":
        spec = layer.layer
        assert isinstance(spec, Conv2d)
        patches = F.unfold(a, spec.kernel_size, padding=spec.padding, stride=spec.stride)  # (B, C k k, T)
        a_f = patches.transpose(1, 2)
        e_f = e.reshape(draws, batch, e.shape[1], -1).transpose(2, 3)  # (D, B, T, C_out)
        return _LayerFactors(layer, e_f, a_f)
    if layer.kind != "linear":
        raise NotImplementedError(f"no sample-space factors for tapped layer kind {layer.kind!r}")
    if a.dim() == 2:
        return _LayerFactors(layer, e.reshape(draws, batch, e.shape[-1]), a)
    a_f = a.reshape(batch, -1, a.shape[-1])
    return _LayerFactors(layer, e.reshape(draws, batch, a_f.shape[1], e.shape[-1]), a_f)


def _layer_gram(f: _LayerFactors) -> Tensor:
    """``K_layer`` of shape ``(R, R)``, ``R = D B``."""
    draws, batch = f.e.shape[0], f.e.shape[1]
    rows = draws * batch
    if not f.has_positions:
        e = f.e.reshape(rows, -1)
        aa = f.a @ f.a.T
        if f.bias:
            aa += 1.0
        if draws > 1:
            aa = aa.repeat(draws, draws)
        return (e @ e.T).mul_(aa)
    positions, d_out, d_in = f.a.shape[1], f.e.shape[-1], f.a.shape[-1]
    if positions_gram_path(batch, positions, d_in, d_out) == "positions":
        e2 = f.e.reshape(rows * positions, d_out)
        a2 = f.a.reshape(batch * positions, d_in)
        ee = (e2 @ e2.T).view(draws, batch, positions, draws, batch, positions)
        aa = (a2 @ a2.T).view(batch, positions, batch, positions)
        if f.bias:
            aa += 1.0
        return torch.einsum("pitqjs,itjs->piqj", ee, aa).reshape(rows, rows)
    g = torch.einsum("pbto,bti->pboi", f.e, f.a).reshape(rows, d_out * d_in)
    k = g @ g.T
    if f.bias:
        gb = f.e.sum(dim=2).reshape(rows, d_out)
        k = k.addmm_(gb, gb.T)
    return k


def _layer_rmatvec(f: _LayerFactors, w: Tensor) -> list[Tensor]:
    """``[vec(E^T diag(w) A), E^T w]`` (weight, then bias) for ``w`` of shape ``(R,)``."""
    draws, batch = f.e.shape[0], f.e.shape[1]
    if draws == 1:
        e = f.e[0]
        ew = e * w.view(batch, *([1] * (e.dim() - 1)))
    else:
        ew = (f.e * w.view(draws, batch, *([1] * (f.e.dim() - 2)))).sum(dim=0)  # draws share the inputs
    d_out = ew.shape[-1]
    if not f.has_positions:
        parts = [(ew.T @ f.a).view(-1)]
        if f.bias:
            parts.append(ew.sum(dim=0) if draws > 1 else e.T @ w)
        return parts
    ew2 = ew.reshape(-1, d_out)
    parts = [(ew2.T @ f.a.reshape(-1, f.a.shape[-1])).view(-1)]
    if f.bias:
        parts.append(ew2.sum(dim=0))
    return parts


def _layer_matvec(f: _LayerFactors, v: Tensor) -> Tensor:
    """``<grad_layer l_r, v_layer>`` for every row ``r``: ``sum e . (W_v a + b_v)``."""
    layer = f.layer
    d_out = f.e.shape[-1]
    w_v = v[layer.weight.offset : layer.weight.stop].view(d_out, -1)
    if layer.bias is not None:
        u = torch.addmm(v[layer.bias.offset : layer.bias.stop], f.a.reshape(-1, w_v.shape[1]), w_v.T)
    else:
        u = f.a.reshape(-1, w_v.shape[1]) @ w_v.T
    prod = f.e * u.view(f.e.shape[1:])  # (D, B, [T,] d_out): the pre-activation tangent u = W_v a + b_v
    return prod.reshape(prod.shape[0] * prod.shape[1], -1).sum(dim=-1)


class TapJacobian:
    """``J`` of an all-tapped model from its taps, never materialised (see module docstring)."""

    def __init__(self, layout: ParamLayout, inputs: Sequence[Tensor], cotangents: Sequence[Tensor], draws: int = 1):
        """``inputs[k]``: tapped layer ``k``'s input ``a``; ``cotangents[k]``: its pre-activation
        cotangents, ``draws`` sets stacked along the batch axis (``(draws * B, ...)``)."""
        if not uses_taps(layout):
            raise ValueError("TapJacobian needs every trainable parameter in a Linear or Conv2d layer")
        self.layout = layout
        self.draws = draws
        self.factors = [
            _factors(layer, a, e, draws) for layer, a, e in zip(layout.tapped, inputs, cotangents, strict=True)
        ]
        self.rows = draws * int(inputs[0].shape[0])
        # All parameters are tapped, so the spans are the tapped layers in spec (= flat) order.
        self.groups = block_spans(layout)

    def gram(self) -> Tensor:
        k = _layer_gram(self.factors[0])
        for f in self.factors[1:]:
            k = k.add_(_layer_gram(f))
        return k

    def group_grams(self) -> Tensor:
        return torch.stack([_layer_gram(f) for f in self.factors])

    def _concat(self, parts: list[list[Tensor]]) -> Tensor:
        return torch.cat([p for layer_parts in parts for p in layer_parts])

    def rmatvec(self, w: Tensor) -> Tensor:
        return self._concat([_layer_rmatvec(f, w) for f in self.factors])

    def rmatvec_groups(self, w: Tensor) -> Tensor:
        return self._concat([_layer_rmatvec(f, w[i]) for i, f in enumerate(self.factors)])

    def matvec(self, v: Tensor) -> Tensor:
        out = _layer_matvec(self.factors[0], v)
        for f in self.factors[1:]:
            out = out + _layer_matvec(f, v)
        return out

    def dense(self) -> Tensor:
        eye = torch.eye(self.rows, dtype=self.factors[0].a.dtype, device=self.factors[0].a.device)
        return torch.stack([self.rmatvec(eye[r]) for r in range(self.rows)])


# --------------------------------------------------------------------------- dense fallback


class DenseJacobian(blocks.DenseJacobian):
    """``J`` held explicitly (models with untapped trainable parameters)."""

    stack = staticmethod(torch.stack)
    concat = staticmethod(torch.cat)


def per_sample_cotangent_grads(oracle: TorchOracle, cotangent: Tensor) -> Tensor:
    """Rows ``Jz_n^T R_n`` for logit cotangents ``R`` (``B x C``): per-sample gradients of
    ``sum_n R_n . z_n`` by one vectorised per-sample pass (counted as ``per_sample``)."""
    model = oracle.problem.fmodel

    def single(flat: Tensor, x: Tensor, r: Tensor) -> Tensor:
        return (model(flat, x.unsqueeze(0)).squeeze(0) * r).sum()

    oracle.problem.counters.add("per_sample")
    return vmap(func_grad(single), in_dims=(None, 0, 0))(
        oracle.params, oracle.batch.x, cotangent.to(oracle.params.dtype)
    )


# --------------------------------------------------------------------------- builders


def true_jacobian(oracle: TorchOracle, *, with_grad: bool = False) -> SampleJacobian:
    """``J`` for the true labels.

    From the taps when :func:`uses_taps` (the oracle must have been created with
    ``taps=True``): ``with_grad=True`` takes them from the reverse pass that also gives
    ``oracle.grad()`` (for callers that need both); otherwise from a reverse pass of the logit
    gradients for the taps alone (``tap_grads_for``: the parameter-gradient products are
    skipped, so this pass costs less than SGD's backward). Else the dense per-sample gradients
    (one per-sample pass).
    """
    layout = oracle.problem.layout
    if uses_taps(layout):
        cotangents = oracle.tap_grads() if with_grad else oracle.tap_grads_for(oracle.logit_grads())
        return TapJacobian(layout, oracle.tap_inputs(), cotangents)
    return DenseJacobian(layout, oracle.per_sample_grads())


def cotangent_jacobian(oracle: TorchOracle, cotangents: Tensor) -> SampleJacobian:
    """``J`` for logit cotangents ``(D, B, C)`` (e.g. SF's sampled-label gradients), rows
    draw-major: one reverse pass per draw through the oracle's forward (taps), else one
    per-sample pass per draw."""
    layout = oracle.problem.layout
    draws = int(cotangents.shape[0])
    if uses_taps(layout):
        per_draw = [oracle.tap_grads_for(cotangents[i]) for i in range(draws)]
        stacked = [torch.cat([d[k] for d in per_draw]) for k in range(len(layout.tapped))]
        return TapJacobian(layout, oracle.tap_inputs(), stacked, draws=draws)
    rows = torch.cat([per_sample_cotangent_grads(oracle, cotangents[i]) for i in range(draws)])
    return DenseJacobian(layout, rows)


# --------------------------------------------------------------------------- solves


class DampedSolve(NamedTuple):
    """Solution of ``(K + shift I) x = b`` and how well it holds.

    ``x`` is in ``K``'s dtype; ``residual`` is ``max ||(K + shift I) x - b|| / ||b||`` over the
    batch of systems, in float64 (0-d); ``fallback`` is true when Cholesky failed and the
    eigendecomposition path solved the system.
    """

    x: Tensor
    residual: Tensor
    fallback: bool


def damped_solve(k: Tensor, rhs: Tensor, shift: float | Tensor, keep: Tensor | None = None) -> DampedSolve:
    """Solve ``(K + shift I) x = rhs`` in float64 for a (batch of) small SPD Gram matrices.

    ``k``: ``(..., n, n)`` in the working dtype; ``rhs``: ``(..., n)``; ``shift``: the
    sample-space damping ``B * damping`` (a number, or a tensor broadcasting to ``(...,)``).
    ``keep`` (``(n,)`` bool): samples outside it are removed from the system (their rows and
    columns replaced by the identity, their right-hand side by 0), so their ``x`` is exactly 0
    and the kept block is solved as if they were absent; shapes stay static.

    Only the ``n x n`` system is promoted to float64: Cholesky (``cholesky_ex``, no error
    raised). Fallback when it fails (``K`` is PSD in exact arithmetic, but a Gram accumulated
    in float32 can have eigenvalues a little below zero, more negative than a tiny ``shift``):
    a symmetric eigendecomposition of ``K``, eigenvalues clamped at 0 (the nearest PSD matrix),
    then ``shift`` added; eigenvalues of the damped matrix at or below ``n * eps(dtype) *
    max eigenvalue`` (the rounding floor of ``K``) are treated as zero, i.e. a pseudo-inverse
    there (only reachable with ``shift`` that small, e.g. ``damping = 0``). Deciding between the
    paths reads Cholesky's status flag, one host synchronisation per solve.
    """
    k64 = k.to(torch.float64, copy=True)
    b64 = rhs.to(torch.float64)
    if keep is not None:
        pair = keep.unsqueeze(-1) & keep.unsqueeze(-2)
        k64 = torch.where(pair, k64, torch.eye(k64.shape[-1], dtype=torch.float64, device=k64.device))
        b64 = torch.where(keep, b64, torch.zeros((), dtype=torch.float64, device=k64.device))
    shift64 = shift.to(torch.float64).unsqueeze(-1) if isinstance(shift, Tensor) else float(shift)
    damped = k64  # a private copy: damp it in place
    damped.diagonal(dim1=-2, dim2=-1).add_(shift64)
    chol, info = torch.linalg.cholesky_ex(damped)
    fallback = bool(info.any())
    if not fallback:
        x = torch.cholesky_solve(b64.unsqueeze(-1), chol).squeeze(-1)
    else:
        undamped = damped.clone()
        undamped.diagonal(dim1=-2, dim2=-1).sub_(shift64)
        x = _eig_solve(undamped, b64, shift64, torch.finfo(k.dtype).eps)
    resid = torch.linalg.vector_norm((damped @ x.unsqueeze(-1)).squeeze(-1) - b64, dim=-1)
    scale = torch.linalg.vector_norm(b64, dim=-1).clamp_min_(torch.finfo(torch.float64).tiny)
    return DampedSolve(x.to(k.dtype), (resid / scale).max(), fallback)


def _eig_solve(k64: Tensor, b64: Tensor, shift64: float | Tensor, eps: float) -> Tensor:
    """``(K_+ + shift I)^+ b`` with ``K_+`` the PSD projection of ``K`` (see :func:`damped_solve`)."""
    evals, vecs = torch.linalg.eigh(0.5 * (k64 + k64.transpose(-1, -2)))
    damped = evals.clamp_min(0.0) + shift64
    floor = k64.shape[-1] * eps * evals.abs().amax(dim=-1, keepdim=True)
    inv = torch.where(damped > floor, 1.0 / damped, torch.zeros_like(damped))
    coeff = (vecs.transpose(-1, -2) @ b64.unsqueeze(-1)).squeeze(-1) * inv
    return (vecs @ coeff.unsqueeze(-1)).squeeze(-1)


class GramDirection(NamedTuple):
    """``d = J^T x`` with ``x = (K + R lambda I)^{-1} t`` over the kept samples.

    ``kept``: number of samples in the system (0-d); ``target_residual``: ``||K x - t|| /
    ||t||`` over the kept samples, how far the damped solution is from meeting the per-sample
    targets exactly (the iEF code's ``rel_err`` up to normalisation). Up to the solve residual
    it equals ``R lambda ||x|| / ||t||``, which is how it is computed.
    """

    direction: Tensor
    coefficients: Tensor
    solve: DampedSolve
    kept: Tensor | int
    target_residual: Tensor


def gram_direction(jac: SampleJacobian, rhs: Tensor, damping: float, dedup_threshold: float | None) -> GramDirection:
    """``J^T (J J^T + R lambda I)^{-1} t`` (``R = jac.rows``): EF (``t = 1``, iEF paper
    Eqn 5) and iEF (``t = s``, Eqn 8); with ``dedup_threshold`` the near-duplicate filter of
    :func:`near_duplicate_keep` removes samples from the system first (the shift stays
    ``R lambda`` of the full batch, as in the iEF code, whose damping ignores the filter)."""
    k = jac.gram()
    shift = jac.rows * damping
    kept: Tensor | int
    if dedup_threshold is None:
        keep, target, kept = None, rhs, jac.rows
    else:
        keep = near_duplicate_keep(k, dedup_threshold)
        target, kept = torch.where(keep, rhs, torch.zeros_like(rhs)), keep.sum()
    sol = damped_solve(k, rhs, shift, keep)
    t_res = (
        shift
        * torch.linalg.vector_norm(sol.x)
        / torch.linalg.vector_norm(target).clamp_min(torch.finfo(target.dtype).tiny)
    )
    return GramDirection(jac.rmatvec(sol.x), sol.x, sol, kept, t_res)


class WoodburyApply(NamedTuple):
    """``x = ((1/R) J^T J + lambda I)^{-1} v`` and the ``R x R`` solve behind it."""

    x: Tensor
    solve: DampedSolve


def woodbury_inverse_apply(jac: SampleJacobian, v: Tensor, damping: float) -> WoodburyApply:
    """``((1/R) J^T J + lambda I)^{-1} v = (1/lambda) [v - J^T (J J^T + R lambda I)^{-1} J v]``.

    Sherman-Morrison-Woodbury with ``R = jac.rows``: SF's ``(F^ + lambda I)^{-1} g`` for the
    sampled ``J^`` (iEF paper Eqn 49, ``R = B k``); needs ``lambda > 0``.
    """
    if not damping > 0:
        raise ValueError("the Woodbury form needs a positive damping")
    sol = damped_solve(jac.gram(), jac.matvec(v), jac.rows * damping)
    return WoodburyApply((v - jac.rmatvec(sol.x)) / damping, sol)


def near_duplicate_keep(k: Tensor, threshold: float) -> Tensor:
    """Samples kept by the iEF code's near-duplicate gradient filter (``(n,)`` bool).

    Wu et al.'s released optimiser (``iEFOptimizer_GP.py``, ``step``: ``SIM_THRESH = 0.99``)
    sorts the per-sample gradients by decreasing norm and, for every pair with
    ``|cos| > threshold`` (cosines from the Gram ``K``), drops the later (smaller-norm) one,
    before solving the Gram system. Vectorised here: a sample is dropped when a sample ranked
    before it (larger norm; equal norms ranked by index) is a near-duplicate of it. Zero
    gradients have no direction and are never dropped.
    """
    k64 = k.to(torch.float64)
    norm = k64.diagonal(dim1=-2, dim2=-1).clamp_min(0.0).sqrt()
    inv = torch.where(norm > 0, norm.reciprocal(), torch.zeros_like(norm))
    dup = (k64 * inv.unsqueeze(-1) * inv.unsqueeze(-2)).abs_() > threshold
    rank = torch.argsort(torch.argsort(norm, dim=-1, descending=True, stable=True), dim=-1)
    before = rank.unsqueeze(-1) < rank.unsqueeze(-2)  # strict: excludes the diagonal
    return ~(dup & before).any(dim=-2)
