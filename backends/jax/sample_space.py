"""Sample-space (Woodbury) primitives shared by EF, iEF, SF and FNGD on JAX.

The JAX counterpart of ``backends/torch/sample_space.py``: same operations, same conventions,
same pass counts, written as pure ``jax.numpy`` functions that run inside a jitted step.
Every exact empirical/sampled Fisher method of this benchmark lives on the per-sample gradient
matrix ``J`` (rows ``J[n] = grad l_n``, mean-loss convention, *not* divided by ``B``) through
four operations, none of which needs ``J`` itself for the tapped layers:

* the Gram ``K = J J^T`` (``R x R``): for a Linear layer with pre-activation gradients ``E``
  and inputs ``A`` (the oracle's taps), ``grad_W l_n = e_n a_n^T`` and ``grad_b l_n = e_n``, so

      K_layer = (E E^T) * (A_bar A_bar^T),     A_bar = [A, 1]  =>  A_bar A_bar^T = A A^T + 1

  (``*`` elementwise; the Hadamard "Gram trick", ASDL's ``OP_GRAM_HADAMARD``, used by FNGD,
  Ou et al. 2024), ``O(B^2 (d_in + d_out))`` per layer; ``K = sum_layers K_layer``;
* ``J^T w = sum_n w_n grad l_n``, per layer ``E^T diag(w) A_bar``: a weighted gradient;
* ``J v`` (per-sample inner products ``<grad l_n, v>``), per layer ``sum_o E * (A W_v^T + b_v)``;
* per-layer Grams ``K_layer`` (FNGD's layer-wise coefficients).

Layers with positions (Conv2d, a Linear applied to ``(B, T, d)`` inputs) have per-sample
gradients ``sum_t e_nt a_nt^T``; their Gram is summed over position pairs or formed from the
layer's per-sample gradients, whichever is cheaper (``backends.blocks.positions_gram_path``,
decided from static shapes at trace time). Conv inputs are unfolded into patches with
``jax.lax.conv_general_dilated_patches``, whose feature axis is channel-major
``(C_in, kh, kw)``: the layout of the flattened ``(out, in, kh, kw)`` weight.

Rows may stack several sets of cotangents over the same inputs: SF's ``k`` sampled-label draws
give ``R = k B`` rows (draw-major), each from one extra reverse pass through the same forward.

Where some trainable parameter is not in a tapped layer (``backends.blocks.uses_taps`` is
false) every operation falls back to the dense ``J`` (``oracle.per_sample_grads()`` for the
true labels, a vectorised per-sample VJP for sampled cotangents).

``J``'s factors and ``K`` stay in the working dtype; only the ``R x R`` damped solve runs in
float64 (:func:`damped_solve`). How the solve differs from the torch one (a traced branch
instead of a host read of Cholesky's status) is documented there.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, NamedTuple, Protocol

import jax
import jax.numpy as jnp
from jax.scipy.linalg import cho_solve

from backends import blocks
from backends.blocks import block_spans, positions_gram_path, uses_taps
from backends.layout import ParamLayout, TappedLayer
from suites.layers import Conv2d

if TYPE_CHECKING:
    from backends.jax.oracle import JaxOracle

Array = jax.Array

__all__ = [
    "DampedSolve",
    "DenseJacobian",
    "GramDirection",
    "SampleJacobian",
    "TapJacobian",
    "WoodburyApply",
    "block_spans",
    "cotangent_jacobian",
    "damped_solve",
    "gram_direction",
    "near_duplicate_keep",
    "per_sample_cotangent_grads",
    "positions_gram_path",
    "true_jacobian",
    "uses_taps",
    "woodbury_inverse_apply",
]


# --------------------------------------------------------------------------- the interface


class SampleJacobian(Protocol):
    """The per-sample gradient matrix ``J`` (``rows x P``) seen through its sample-space ops.

    ``groups`` are the contiguous parameter ranges ``[start, stop)`` of the blocks FNGD gives
    their own coefficients (``backends.blocks.block_spans``): each tapped layer (weight and
    bias) and each untapped parameter, in canonical order.
    """

    rows: int
    groups: tuple[tuple[int, int], ...]

    def gram(self) -> Array:
        """``K = J J^T`` (``rows x rows``), working dtype."""
        ...

    def group_grams(self) -> Array:
        """``K_l = J_l J_l^T`` per group, shape ``(groups, rows, rows)``; ``sum_l K_l = K``."""
        ...

    def rmatvec(self, w: Array) -> Array:
        """``J^T w`` for ``w`` of shape ``(rows,)``: flat ``(P,)``."""
        ...

    def rmatvec_groups(self, w: Array) -> Array:
        """``[J_l^T w_l]_l`` for ``w`` of shape ``(groups, rows)``: flat ``(P,)``."""
        ...

    def matvec(self, v: Array) -> Array:
        """``J v`` for a flat ``v``: shape ``(rows,)``."""
        ...

    def dense(self) -> Array:
        """``J`` itself, ``(rows, P)`` (tests and small problems only)."""
        ...


# --------------------------------------------------------------------------- taps


class _LayerFactors(NamedTuple):
    """One tapped layer as per-sample gradient factors.

    ``e``: ``(D, B, d_out)`` or ``(D, B, T, d_out)`` cotangents of the pre-activation for ``D``
    stacked draws; ``a``: ``(B, d_in)`` or ``(B, T, d_in)`` inputs (conv: unfolded patches).
    The layer's flat weight is ``(d_out, d_in)`` in C order; the bias (if any) follows it.
    """

    layer: TappedLayer
    e: Array
    a: Array

    @property
    def has_positions(self) -> bool:
        return self.a.ndim == 3

    @property
    def bias(self) -> bool:
        return self.layer.bias is not None


def _factors(layer: TappedLayer, a: Array, e: Array, draws: int) -> _LayerFactors:
    """Bring a layer's raw taps (``a`` from the forward, ``e`` stacked over draws) to factor form."""
    batch = a.shape[0]
    if layer.kind == "conv2d":
        spec = layer.layer
        assert isinstance(spec, Conv2d)
        k, s, p = spec.kernel_size, spec.stride, spec.padding
        patches = jax.lax.conv_general_dilated_patches(
            a, (k, k), (s, s), ((p, p), (p, p)), dimension_numbers=("NCHW", "OIHW", "NCHW")
        )  # (B, C k k, H', W'), features channel-major
        a_f = patches.reshape(batch, patches.shape[1], -1).transpose(0, 2, 1)
        e_f = e.reshape(draws, batch, e.shape[1], -1).transpose(0, 1, 3, 2)  # (D, B, T, C_out)
        return _LayerFactors(layer, e_f, a_f)
    if layer.kind != "linear":
        raise NotImplementedError(f"no sample-space factors for tapped layer kind {layer.kind!r}")
    if a.ndim == 2:
        return _LayerFactors(layer, e.reshape(draws, batch, e.shape[-1]), a)
    a_f = a.reshape(batch, -1, a.shape[-1])
    return _LayerFactors(layer, e.reshape(draws, batch, a_f.shape[1], e.shape[-1]), a_f)


def _layer_gram(f: _LayerFactors) -> Array:
    """``K_layer`` of shape ``(R, R)``, ``R = D B``."""
    draws, batch = f.e.shape[0], f.e.shape[1]
    rows = draws * batch
    if not f.has_positions:
        e = f.e.reshape(rows, -1)
        aa = f.a @ f.a.T
        if f.bias:
            aa = aa + 1.0
        if draws > 1:
            aa = jnp.tile(aa, (draws, draws))
        return (e @ e.T) * aa
    positions, d_out, d_in = f.a.shape[1], f.e.shape[-1], f.a.shape[-1]
    if positions_gram_path(batch, positions, d_in, d_out) == "positions":
        e2 = f.e.reshape(rows * positions, d_out)
        a2 = f.a.reshape(batch * positions, d_in)
        ee = (e2 @ e2.T).reshape(draws, batch, positions, draws, batch, positions)
        aa = (a2 @ a2.T).reshape(batch, positions, batch, positions)
        if f.bias:
            aa = aa + 1.0
        return jnp.einsum("pitqjs,itjs->piqj", ee, aa).reshape(rows, rows)
    g = jnp.einsum("pbto,bti->pboi", f.e, f.a).reshape(rows, d_out * d_in)
    k = g @ g.T
    if f.bias:
        gb = f.e.sum(axis=2).reshape(rows, d_out)
        k = k + gb @ gb.T
    return k


def _layer_rmatvec(f: _LayerFactors, w: Array) -> list[Array]:
    """``[vec(E^T diag(w) A), E^T w]`` (weight, then bias) for ``w`` of shape ``(R,)``."""
    draws, batch = f.e.shape[0], f.e.shape[1]
    tail = (1,) * (f.e.ndim - 2)
    # Draws share the inputs: weight the cotangents, then sum the draws.
    ew = (f.e * w.reshape(draws, batch, *tail)).sum(axis=0)
    d_out = ew.shape[-1]
    ew2 = ew.reshape(-1, d_out)
    parts = [(ew2.T @ f.a.reshape(-1, f.a.shape[-1])).reshape(-1)]
    if f.bias:
        parts.append(ew2.sum(axis=0))
    return parts


def _layer_matvec(f: _LayerFactors, v: Array) -> Array:
    """``<grad_layer l_r, v_layer>`` for every row ``r``: ``sum e . (W_v a + b_v)``."""
    layer = f.layer
    d_out = f.e.shape[-1]
    w_v = v[layer.weight.offset : layer.weight.stop].reshape(d_out, -1)
    u = f.a.reshape(-1, w_v.shape[1]) @ w_v.T  # the pre-activation tangent W_v a (+ b_v)
    if layer.bias is not None:
        u = u + v[layer.bias.offset : layer.bias.stop]
    prod = f.e * u.reshape(f.e.shape[1:])
    return prod.reshape(prod.shape[0] * prod.shape[1], -1).sum(axis=-1)


class TapJacobian:
    """``J`` of an all-tapped model from its taps, never materialised (see module docstring)."""

    def __init__(self, layout: ParamLayout, inputs: Sequence[Array], cotangents: Sequence[Array], draws: int = 1):
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

    def gram(self) -> Array:
        k = _layer_gram(self.factors[0])
        for f in self.factors[1:]:
            k = k + _layer_gram(f)
        return k

    def group_grams(self) -> Array:
        return jnp.stack([_layer_gram(f) for f in self.factors])

    def rmatvec(self, w: Array) -> Array:
        return jnp.concatenate([p for f in self.factors for p in _layer_rmatvec(f, w)])

    def rmatvec_groups(self, w: Array) -> Array:
        return jnp.concatenate([p for i, f in enumerate(self.factors) for p in _layer_rmatvec(f, w[i])])

    def matvec(self, v: Array) -> Array:
        out = _layer_matvec(self.factors[0], v)
        for f in self.factors[1:]:
            out = out + _layer_matvec(f, v)
        return out

    def dense(self) -> Array:
        eye = jnp.eye(self.rows, dtype=self.factors[0].a.dtype)
        return jax.vmap(self.rmatvec)(eye)


# --------------------------------------------------------------------------- dense fallback


class DenseJacobian(blocks.DenseJacobian):
    """``J`` held explicitly (models with untapped trainable parameters)."""

    stack = staticmethod(jnp.stack)
    concat = staticmethod(jnp.concatenate)


def per_sample_cotangent_grads(oracle: JaxOracle, cotangent: Array) -> Array:
    """Rows ``Jz_n^T R_n`` for logit cotangents ``R`` (``B x C``): per-sample gradients of
    ``sum_n R_n . z_n`` by one vectorised per-sample pass (counted as ``per_sample``)."""
    problem = oracle.problem

    def single(flat: Array, x: Array, r: Array) -> Array:
        return jnp.sum(problem.apply(flat, x[None])[0] * r)

    problem.counters.add("per_sample")
    r = jax.lax.stop_gradient(cotangent).astype(oracle.params.dtype)
    return jax.vmap(jax.grad(single), in_axes=(None, 0, 0))(oracle.params, oracle.batch.x, r)


# --------------------------------------------------------------------------- builders


def true_jacobian(oracle: JaxOracle, *, with_grad: bool = False) -> SampleJacobian:
    """``J`` for the true labels.

    From the taps when :func:`uses_taps` (the oracle must have been created with
    ``taps=True``): ``with_grad=True`` takes them from the reverse pass that also gives
    ``oracle.grad()`` (for callers that need both); otherwise from a reverse pass of the logit
    gradients for the taps alone (``tap_grads_for``; under ``jit`` XLA drops the unused
    parameter-gradient products). Else the dense per-sample gradients (one per-sample pass).
    """
    layout = oracle.problem.layout
    if uses_taps(layout):
        cotangents = oracle.tap_grads() if with_grad else oracle.tap_grads_for(oracle.logit_grads())
        return TapJacobian(layout, oracle.tap_inputs(), cotangents)
    return DenseJacobian(layout, oracle.per_sample_grads())


def cotangent_jacobian(oracle: JaxOracle, cotangents: Array) -> SampleJacobian:
    """``J`` for logit cotangents ``(D, B, C)`` (e.g. SF's sampled-label gradients), rows
    draw-major: one reverse pass per draw through the oracle's forward (taps), else one
    per-sample pass per draw."""
    layout = oracle.problem.layout
    draws = int(cotangents.shape[0])
    if uses_taps(layout):
        per_draw = [oracle.tap_grads_for(cotangents[i]) for i in range(draws)]
        stacked = [jnp.concatenate([d[k] for d in per_draw]) for k in range(len(layout.tapped))]
        return TapJacobian(layout, oracle.tap_inputs(), stacked, draws=draws)
    rows = jnp.concatenate([per_sample_cotangent_grads(oracle, cotangents[i]) for i in range(draws)])
    return DenseJacobian(layout, rows)


# --------------------------------------------------------------------------- solves


class DampedSolve(NamedTuple):
    """Solution of ``(K + shift I) x = b`` and how well it holds.

    ``x`` is in ``K``'s dtype; ``residual`` is ``max ||(K + shift I) x - b|| / ||b||`` over the
    batch of systems, in float64 (0-d); ``fallback`` (0-d bool array) is true when Cholesky
    failed and the eigendecomposition path solved the system.
    """

    x: Array
    residual: Array
    fallback: Array


def damped_solve(k: Array, rhs: Array, shift: float | Array, keep: Array | None = None) -> DampedSolve:
    """Solve ``(K + shift I) x = rhs`` in float64 for a (batch of) small SPD Gram matrices.

    ``k``: ``(..., n, n)`` in the working dtype; ``rhs``: ``(..., n)``; ``shift``: the
    sample-space damping ``B * damping`` (a number, or an array broadcasting to ``(...,)``).
    ``keep`` (``(n,)`` bool): samples outside it are removed from the system (their rows and
    columns replaced by the identity, their right-hand side by 0), so their ``x`` is exactly 0
    and the kept block is solved as if they were absent; shapes stay static.

    Only the ``n x n`` system is promoted to float64. Cholesky first; ``jnp.linalg.cholesky``
    returns NaNs where the factorisation fails (``K`` is PSD in exact arithmetic, but a Gram
    accumulated in float32 can have eigenvalues a little below zero, more negative than a tiny
    ``shift``). Fallback: a symmetric eigendecomposition of ``K``, eigenvalues clamped at 0 (the
    nearest PSD matrix), then ``shift`` added; eigenvalues of the damped matrix at or below
    ``n * eps(dtype) * max eigenvalue`` (the rounding floor of ``K``) are treated as zero, i.e.
    a pseudo-inverse there (only reachable with ``shift`` that small, e.g. ``damping = 0``).

    Differences from the torch twin (``backends.torch.sample_space.damped_solve``), none of
    them in the result where Cholesky succeeds:

    * the choice between the two paths is a ``lax.cond`` on "any NaN in the factor" instead of
      a host read of ``cholesky_ex``'s status: no device synchronisation, and the
      eigendecomposition is only executed when a factorisation failed. As in torch, one failed
      system sends the whole batch of systems down the fallback;
    * the fallback decomposes the masked ``K`` itself, where torch subtracts ``shift`` again
      from the damped copy (``(K + s) - s``, off from ``K`` by rounding of order ``eps * s``).
    """
    f64 = jnp.float64
    n = k.shape[-1]
    k64 = k.astype(f64)
    b64 = rhs.astype(f64)
    if keep is not None:
        pair = keep[:, None] & keep[None, :]
        k64 = jnp.where(pair, k64, jnp.eye(n, dtype=f64))
        b64 = jnp.where(keep, b64, jnp.zeros((), dtype=f64))
    shift64 = jnp.asarray(shift, dtype=f64)[..., None]  # (..., 1): one shift per system
    diag = jnp.arange(n)
    damped = k64.at[..., diag, diag].add(shift64)
    chol = jnp.linalg.cholesky(damped)
    fallback = jnp.any(jnp.isnan(chol))
    eps = float(jnp.finfo(k.dtype).eps)

    def cholesky_path() -> Array:
        return cho_solve((chol, True), b64[..., None])[..., 0]

    def eig_path() -> Array:
        return _eig_solve(k64, b64, shift64, eps)

    x = jax.lax.cond(fallback, eig_path, cholesky_path)
    resid = jnp.linalg.norm((damped @ x[..., None])[..., 0] - b64, axis=-1)
    scale = jnp.maximum(jnp.linalg.norm(b64, axis=-1), jnp.finfo(f64).tiny)
    return DampedSolve(x.astype(k.dtype), jnp.max(resid / scale), fallback)


def _eig_solve(k64: Array, b64: Array, shift64: Array, eps: float) -> Array:
    """``(K_+ + shift I)^+ b`` with ``K_+`` the PSD projection of ``K`` (see :func:`damped_solve`)."""
    evals, vecs = jnp.linalg.eigh(0.5 * (k64 + jnp.swapaxes(k64, -1, -2)))
    damped = jnp.maximum(evals, 0.0) + shift64
    floor = k64.shape[-1] * eps * jnp.max(jnp.abs(evals), axis=-1, keepdims=True)
    usable = damped > floor
    inv = jnp.where(usable, 1.0 / jnp.where(usable, damped, 1.0), 0.0)
    coeff = (jnp.swapaxes(vecs, -1, -2) @ b64[..., None])[..., 0] * inv
    return (vecs @ coeff[..., None])[..., 0]


class GramDirection(NamedTuple):
    """``d = J^T x`` with ``x = (K + R lambda I)^{-1} t`` over the kept samples.

    ``kept``: number of samples in the system (0-d); ``target_residual``: ``||K x - t|| /
    ||t||`` over the kept samples, how far the damped solution is from meeting the per-sample
    targets exactly (the iEF code's ``rel_err`` up to normalisation). Up to the solve residual
    it equals ``R lambda ||x|| / ||t||``, which is how it is computed.
    """

    direction: Array
    coefficients: Array
    solve: DampedSolve
    kept: Array | int
    target_residual: Array


def gram_direction(jac: SampleJacobian, rhs: Array, damping: float, dedup_threshold: float | None) -> GramDirection:
    """``J^T (J J^T + R lambda I)^{-1} t`` (``R = jac.rows``): EF (``t = 1``, iEF paper
    Eqn 5) and iEF (``t = s``, Eqn 8); with ``dedup_threshold`` the near-duplicate filter of
    :func:`near_duplicate_keep` removes samples from the system first (the shift stays
    ``R lambda`` of the full batch, as in the iEF code, whose damping ignores the filter)."""
    k = jac.gram()
    shift = jac.rows * damping
    kept: Array | int
    if dedup_threshold is None:
        keep, target, kept = None, rhs, jac.rows
    else:
        keep = near_duplicate_keep(k, dedup_threshold)
        target, kept = jnp.where(keep, rhs, jnp.zeros_like(rhs)), jnp.sum(keep)
    sol = damped_solve(k, rhs, shift, keep)
    t_res = shift * jnp.linalg.norm(sol.x) / jnp.maximum(jnp.linalg.norm(target), jnp.finfo(target.dtype).tiny)
    return GramDirection(jac.rmatvec(sol.x), sol.x, sol, kept, t_res)


class WoodburyApply(NamedTuple):
    """``x = ((1/R) J^T J + lambda I)^{-1} v`` and the ``R x R`` solve behind it."""

    x: Array
    solve: DampedSolve


def woodbury_inverse_apply(jac: SampleJacobian, v: Array, damping: float) -> WoodburyApply:
    """``((1/R) J^T J + lambda I)^{-1} v = (1/lambda) [v - J^T (J J^T + R lambda I)^{-1} J v]``.

    Sherman-Morrison-Woodbury with ``R = jac.rows``: SF's ``(F^ + lambda I)^{-1} g`` for the
    sampled ``J^`` (iEF paper Eqn 49, ``R = B k``); needs ``lambda > 0`` (a hyperparameter,
    checked in Python).
    """
    if not damping > 0:
        raise ValueError("the Woodbury form needs a positive damping")
    sol = damped_solve(jac.gram(), jac.matvec(v), jac.rows * damping)
    return WoodburyApply((v - jac.rmatvec(sol.x)) / damping, sol)


def near_duplicate_keep(k: Array, threshold: float) -> Array:
    """Samples kept by the iEF code's near-duplicate gradient filter (``(n,)`` bool mask).

    Wu et al.'s released optimiser (``iEFOptimizer_GP.py``, ``step``: ``SIM_THRESH = 0.99``)
    sorts the per-sample gradients by decreasing norm and, for every pair with
    ``|cos| > threshold`` (cosines from the Gram ``K``), drops the later (smaller-norm) one,
    before solving the Gram system. Vectorised, with a fixed shape: a sample is dropped when a
    sample ranked before it (larger norm; equal norms ranked by index) is a near-duplicate of
    it. Zero gradients have no direction and are never dropped.
    """
    k64 = k.astype(jnp.float64)
    n = k64.shape[-1]
    norm = jnp.sqrt(jnp.maximum(jnp.diagonal(k64, axis1=-2, axis2=-1), 0.0))
    positive = norm > 0
    inv = jnp.where(positive, 1.0 / jnp.where(positive, norm, 1.0), 0.0)
    dup = jnp.abs(k64 * inv[..., :, None] * inv[..., None, :]) > threshold
    # Rank by decreasing norm, ties by index: a stable ascending sort of -norm.
    order = jnp.argsort(-norm, axis=-1, stable=True)
    rank = jnp.zeros(n, dtype=order.dtype).at[order].set(jnp.arange(n, dtype=order.dtype))
    before = rank[:, None] < rank[None, :]  # strict: excludes the diagonal
    return ~jnp.any(dup & before, axis=-2)
