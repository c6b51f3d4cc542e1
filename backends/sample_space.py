"""Sample-space (Woodbury) maths of EF, iEF, SF and FNGD, written once for both backends.

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
gradients ``sum_t e_nt a_nt^T``; their Gram is either summed over position pairs inside the
Gram, ``K_ij = sum_{t,s} (e_it . e_js)(a_bar_it . a_bar_js)`` (cost ``B^2 T^2 (d_in + d_out)``),
or formed from the per-layer per-sample gradients (cost ``B T d_in d_out + B^2 d_in d_out``),
whichever is cheaper (:func:`positions_gram_path`, decided from static shapes, so at trace
time in JAX). How each tapped layer kind turns its raw taps into the factors ``(E, A)`` (conv
inputs unfolded into channel-major patches) and what it contributes to each operation is the
kind's registered object in ``backends.layer_kinds``; the dense fallback's per-block parts are
its ``untapped`` kind.

Rows may stack several sets of cotangents over the same inputs: SF's ``k`` sampled-label draws
give ``R = k B`` rows (draw-major), each from one extra reverse pass through the same forward.

Where some trainable parameter is not in a tapped layer (:func:`uses_taps` is false) every
operation falls back to the dense ``J`` (:class:`DenseJacobian`).

All of ``J``'s factors and ``K`` stay in the working dtype; only the ``R x R`` damped solve runs
in float64 (:func:`damped_solve`), the cost structure docs/methods.md ("Where the speed is")
asks for.

Framework-neutral: the array operations come from an :class:`backends.array_ops.ArrayOps`
(``backends/torch/ops.py``, ``backends/jax/ops.py``); each backend's ``sample_space`` module
binds them and keeps only the oracle plumbing (which passes give the taps or the dense ``J``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import cached_property
from typing import Any, ClassVar, NamedTuple, Protocol

from backends import layer_kinds
from backends.array_ops import Array, ArrayOps
from backends.blocks import block_spans, positions_gram_path, uses_taps
from backends.layout import ParamLayout
from backends.spec import Oracle

__all__ = [
    "DampedSolve",
    "DenseJacobian",
    "GramDirection",
    "SampleJacobian",
    "SampleSpace",
    "TapJacobian",
    "WoodburyApply",
    "block_spans",
    "damped_solve",
    "gram_direction",
    "near_duplicate_keep",
    "positions_gram_path",
    "sampled_fisher_from_stack",
    "uses_taps",
    "woodbury_inverse_apply",
]


# --------------------------------------------------------------------------- the interface


class SampleJacobian(Protocol):
    """The per-sample gradient matrix ``J`` (``rows x P``) seen through its sample-space ops.

    ``groups`` are the contiguous parameter ranges ``[start, stop)`` of the blocks FNGD gives
    their own coefficients (:func:`block_spans`): each tapped layer (weight and bias) and each
    untapped parameter, in canonical order. ``ops`` is the framework's array operations.
    """

    ops: ArrayOps
    rows: int
    groups: tuple[tuple[int, int], ...]

    def gram(self) -> Array:
        """``K = J J^T`` (``rows x rows``), working dtype."""
        ...

    def gram_rows(self, start: int) -> Array:
        """Rows ``start:`` of :meth:`gram` against every row, ``(rows - start) x rows``, working
        dtype (SF's sampled rows: only those are formed where the Jacobian can)."""
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

    def near_duplicate_mask(self, k: Array, threshold: float) -> Array | None:
        """:func:`near_duplicate_keep` of the Gram ``k`` (``(rows,)`` bool mask), or None when
        the backend computed it on the host and it keeps every sample."""
        ...


# --------------------------------------------------------------------------- taps


class TapJacobian:
    """``J`` of an all-tapped model from its taps, never materialised (see module docstring).

    A backend subclass sets :attr:`ops`.
    """

    ops: ClassVar[ArrayOps]

    def __init__(self, layout: ParamLayout, inputs: Sequence[Array], cotangents: Sequence[Array], draws: int = 1):
        """``inputs[k]``: tapped layer ``k``'s input ``a``; ``cotangents[k]``: its pre-activation
        cotangents, ``draws`` sets stacked along the batch axis (``(draws * B, ...)``)."""
        if not uses_taps(layout):
            raise ValueError("TapJacobian needs every trainable parameter in a tapped layer (backends.layer_kinds)")
        self.layout = layout
        self.draws = draws
        #: Each tapped layer's kind (``backends.layer_kinds``).
        self.kinds = [layer_kinds.rule(layer) for layer in layout.tapped]
        #: The taps, as given; their factor form is built when first asked for (:attr:`factors`).
        self.inputs, self.cotangents = inputs, cotangents
        self.rows = draws * int(inputs[0].shape[0])

    @cached_property
    def factors(self) -> list[layer_kinds.LayerFactors]:
        """Each tapped layer's taps in factor form (formed when first asked for)."""
        return [
            kind.factors(self.ops, layer, a, e, self.draws)
            for kind, layer, a, e in zip(self.kinds, self.layout.tapped, self.inputs, self.cotangents, strict=True)
        ]

    @cached_property
    def layers(self) -> list[tuple[layer_kinds.LayerKind, layer_kinds.LayerFactors]]:
        """Each tapped layer's kind with its factors."""
        return list(zip(self.kinds, self.factors, strict=True))

    @property
    def groups(self) -> tuple[tuple[int, int], ...]:
        # All parameters are tapped, so the spans are the tapped layers in spec (= flat) order
        # (looked up when asked: the Jacobian of every step is built without them).
        return block_spans(self.layout)

    def gram(self) -> Array:
        k = None
        for kind, f in self.layers:
            g = kind.gram(self.ops, f)
            k = g if k is None else k + g
        return k

    def gram_rows(self, start: int) -> Array:
        batch = self.rows // self.draws
        if start % batch:  # not a whole draw: slice the Gram
            return self.gram()[start:]
        k = None
        for kind, f in self.layers:
            g = kind.gram_rows(self.ops, f, start // batch)
            k = g if k is None else k + g
        return k

    def group_grams(self) -> Array:
        return self.ops.stack([kind.gram(self.ops, f) for kind, f in self.layers])

    def rmatvec(self, w: Array) -> Array:
        return self.ops.concat([p for kind, f in self.layers for p in kind.rmatvec(self.ops, f, w)])

    def rmatvec_groups(self, w: Array) -> Array:
        parts = [kind.rmatvec(self.ops, f, w[i]) for i, (kind, f) in enumerate(self.layers)]
        return self.ops.concat([p for layer in parts for p in layer])

    def matvec(self, v: Array) -> Array:
        out = None
        for kind, f in self.layers:
            product = kind.matvec(self.ops, f, v)
            out = product if out is None else out + product
        return out

    def dense(self) -> Array:
        a = self.factors[0].a
        return self.ops.map_rows(self.rmatvec, self.ops.eye(self.rows, a.dtype, a))

    def near_duplicate_mask(self, k: Array, threshold: float) -> Array | None:
        return near_duplicate_keep(self.ops, k, threshold)


# --------------------------------------------------------------------------- dense fallback


class DenseJacobian:
    """``J`` (``rows x P``) held explicitly: models with untapped trainable parameters.

    A backend subclass sets :attr:`ops`.
    """

    ops: ClassVar[ArrayOps]

    def __init__(self, layout: ParamLayout, jacobian: Array):
        self.layout = layout
        self.jacobian = jacobian
        self.rows = int(jacobian.shape[0])
        self.groups = block_spans(layout)

    def gram(self) -> Array:
        return self.jacobian @ self.jacobian.T

    def gram_rows(self, start: int) -> Array:
        return self.gram()[start:]

    def group_grams(self) -> Array:
        fallback, J = layer_kinds.UNTAPPED, self.jacobian
        return self.ops.stack([fallback.gram(self.ops, J[:, a:b]) for a, b in self.groups])

    def rmatvec(self, w: Array) -> Array:
        return self.jacobian.T @ w

    def rmatvec_groups(self, w: Array) -> Array:
        fallback, J = layer_kinds.UNTAPPED, self.jacobian
        return self.ops.concat([fallback.rmatvec(self.ops, J[:, a:b], w[i]) for i, (a, b) in enumerate(self.groups)])

    def matvec(self, v: Array) -> Array:
        return self.jacobian @ v

    def dense(self) -> Array:
        return self.jacobian

    def near_duplicate_mask(self, k: Array, threshold: float) -> Array | None:
        return near_duplicate_keep(self.ops, k, threshold)


# --------------------------------------------------------------------------- from the oracle


class SampleSpace:
    """The sample-space maths bound to one backend, and which oracle passes give ``J``.

    ``ops`` are the backend's array operations; ``cotangent_rows(oracle, r)`` gives the
    per-sample gradients ``Jz_n^T r_n`` of logit cotangents ``r`` (``(B, C)``) by one vectorised
    per-sample pass (``torch.func`` or ``jax.vmap``: the only framework-specific piece). Each
    backend's ``sample_space`` module exposes the attributes of one instance. The path (taps or
    dense) is this module's :func:`uses_taps`, looked up at call time.
    """

    def __init__(
        self,
        ops: ArrayOps,
        cotangent_rows: Callable[[Any, Array], Array],
        module: str,
        duplicate_mask: Callable[[Array, float], Array | None] | None = None,
    ):
        self.ops = ops
        self.cotangent_rows = cotangent_rows
        bound: dict[str, Any] = {"ops": ops, "__module__": module}
        if duplicate_mask is not None:  # the Jacobians' ``near_duplicate_mask``, computed another way
            bound["near_duplicate_mask"] = staticmethod(duplicate_mask)
        #: :class:`TapJacobian` and :class:`DenseJacobian` on ``ops`` (named as in ``module``).
        self.tap_jacobian: type[TapJacobian] = type(
            "TapJacobian", (TapJacobian,), {**bound, "__doc__": TapJacobian.__doc__}
        )
        self.dense_jacobian: type[DenseJacobian] = type(
            "DenseJacobian", (DenseJacobian,), {**bound, "__doc__": DenseJacobian.__doc__}
        )

    def damped_solve(self, k: Array, rhs: Array, shift: float | Array, keep: Array | None = None) -> DampedSolve:
        """``(K + shift I) x = rhs`` in float64 (:func:`damped_solve`)."""
        return damped_solve(self.ops, k, rhs, shift, keep)

    def near_duplicate_keep(self, k: Array, threshold: float) -> Array:
        """The iEF code's near-duplicate filter (:func:`near_duplicate_keep`)."""
        return near_duplicate_keep(self.ops, k, threshold)

    def true_jacobian(self, oracle: Oracle, *, with_grad: bool = False) -> TapJacobian | DenseJacobian:
        """``J`` for the true labels.

        From the taps when :func:`uses_taps` (the oracle must have been created with
        ``taps=True``): ``with_grad=True`` takes them from the reverse pass that also gives
        ``oracle.grad()`` (for callers that need both); otherwise from a reverse pass of the
        logit gradients for the taps alone (``tap_grads_for``: the parameter-gradient products
        are skipped in torch, dropped by XLA under ``jit``). Else the dense per-sample gradients
        (one per-sample pass).
        """
        layout = oracle.problem.layout
        if uses_taps(layout):
            cotangents = oracle.tap_grads() if with_grad else oracle.tap_grads_for(oracle.logit_grads())
            return self.tap_jacobian(layout, oracle.tap_inputs(), cotangents)
        return self.dense_jacobian(layout, oracle.per_sample_grads())

    def sampled_fisher_apply(self, oracle: Oracle, samples: int, damping: float) -> WoodburyApply:
        """SF's ``(F^ + lambda I)^{-1} g`` for ``samples`` label draws (iEF paper Eqn 49).

        With taps (:func:`uses_taps`): one tap reverse pass for the true logit gradients and one
        per draw, all without parameter gradients, stacked as ``J_all = [J; J^]``
        (:func:`sampled_fisher_from_stack`: ``g = J^T 1 / B`` and ``J^ g`` come from the
        same Gram, so no parameter-gradient pass). Else the true-label gradient (one backward)
        and the sampled rows by per-sample passes (:func:`woodbury_inverse_apply`).
        """
        if uses_taps(oracle.problem.layout):
            stacked = oracle.logit_grads_with_samples(samples)
            return sampled_fisher_from_stack(self.cotangent_jacobian(oracle, stacked), oracle.batch_size, damping)
        jac = self.cotangent_jacobian(oracle, oracle.sampled_logit_grads(samples))
        return woodbury_inverse_apply(jac, oracle.grad(), damping)

    def cotangent_jacobian(self, oracle: Oracle, cotangents: Array) -> TapJacobian | DenseJacobian:
        """``J`` for logit cotangents ``(D, B, C)`` (e.g. SF's sampled-label gradients), rows
        draw-major: one reverse pass per draw through the oracle's forward (taps), else one
        per-sample pass per draw."""
        layout = oracle.problem.layout
        draws = int(cotangents.shape[0])
        if uses_taps(layout):
            per_draw = [oracle.tap_grads_for(cotangents[i]) for i in range(draws)]
            stacked = [self.ops.concat([d[k] for d in per_draw]) for k in range(len(layout.tapped))]
            return self.tap_jacobian(layout, oracle.tap_inputs(), stacked, draws=draws)
        rows = self.ops.concat([self.cotangent_rows(oracle, cotangents[i]) for i in range(draws)])
        return self.dense_jacobian(layout, rows)


# --------------------------------------------------------------------------- solves


class DampedSolve(NamedTuple):
    """Solution of ``(K + shift I) x = b`` and how well it holds.

    ``x`` is in ``K``'s dtype; ``residual`` is ``max ||(K + shift I) x - b|| / ||b||`` over the
    batch of systems, in float64 (0-d); ``fallback`` is true when Cholesky failed and the
    eigendecomposition path solved the system (a Python ``bool`` in torch, a 0-d bool array in
    JAX: see :meth:`backends.array_ops.ArrayOps.cholesky`).
    """

    x: Array
    residual: Array
    fallback: Any


def damped_solve(ops: ArrayOps, k: Array, rhs: Array, shift: float | Array, keep: Array | None = None) -> DampedSolve:
    """Solve ``(K + shift I) x = rhs`` in float64 for a (batch of) small SPD Gram matrices.

    ``k``: ``(..., n, n)`` in the working dtype; ``rhs``: ``(..., n)``; ``shift``: the
    sample-space damping ``B * damping`` (a number, or an array broadcasting to ``(...,)``).
    ``keep`` (``(n,)`` bool): samples outside it are removed from the system (their rows and
    columns replaced by the identity, their right-hand side by 0), so their ``x`` is exactly 0
    and the kept block is solved as if they were absent; shapes stay static.

    Only the ``n x n`` system is promoted to float64. Cholesky first (``K`` is PSD in exact
    arithmetic, but a Gram accumulated in float32 can have eigenvalues a little below zero,
    more negative than a tiny ``shift``, and the factorisation then fails). Fallback: a
    symmetric eigendecomposition of ``K``, eigenvalues clamped at 0 (the nearest PSD matrix),
    then ``shift`` added; eigenvalues of the damped matrix at or below ``n * eps(dtype) * max
    eigenvalue`` (the rounding floor of ``K``) are treated as zero, i.e. a pseudo-inverse there
    (only reachable with ``shift`` that small, e.g. ``damping = 0``). One failed system sends
    the whole batch of systems down the fallback.

    The choice between the two paths is ``ops.cond`` on Cholesky's failure flag: in torch a
    host read of ``cholesky_ex``'s status (one synchronisation per solve), in JAX a
    ``lax.cond`` on "any NaN in the factor" (no synchronisation; the eigendecomposition only
    runs where a factorisation failed).
    """
    f64 = ops.float64
    n = k.shape[-1]
    k64 = ops.astype(k, f64)
    b64 = ops.astype(rhs, f64)
    if keep is not None:
        pair = keep[..., :, None] & keep[..., None, :]
        k64 = ops.where(pair, k64, ops.eye(n, f64, k64))
        b64 = ops.where(keep, b64, ops.zeros_like(b64))
    if isinstance(shift, (int, float)):  # one number for every system: no array to build
        shift64: float | Array = float(shift)
    else:
        shift64 = ops.asarray(shift, f64, k64)[..., None]  # (..., 1): one shift per system
    damped = ops.add_to_diagonal(k64, shift64)
    chol, failed = ops.cholesky(damped)
    eps = float(ops.finfo(k.dtype).eps)
    # The triangular solves run outside the branch: in JAX a branch that takes the factor as
    # an operand makes XLA copy it (and change its layout) on the way in, a quarter of the
    # solve's time at EGN's ``B C = 320`` (docs/profiling.md, "EGN (JAX)"); the result is the same.
    x_chol = ops.cho_solve(chol, b64)
    x = ops.cond(failed, lambda: _eig_solve(ops, k64, b64, shift64, eps), lambda: x_chol)
    resid = ops.norm((damped @ x[..., None])[..., 0] - b64, axis=-1)
    scale = ops.maximum(ops.norm(b64, axis=-1), float(ops.finfo(f64).tiny))
    ratio = resid / scale
    worst = ratio if ratio.ndim == 0 else ops.amax(ratio.reshape(-1), axis=0)  # one system: itself
    return DampedSolve(ops.astype(x, k.dtype), worst, failed)


def _eig_solve(ops: ArrayOps, k64: Array, b64: Array, shift64: float | Array, eps: float) -> Array:
    """``(K_+ + shift I)^+ b`` with ``K_+`` the PSD projection of ``K`` (see :func:`damped_solve`)."""
    evals, vecs = ops.eigh(0.5 * (k64 + ops.swap_last(k64)))
    damped = ops.maximum(evals, 0.0) + shift64
    floor = k64.shape[-1] * eps * ops.amax(ops.abs(evals), axis=-1, keepdims=True)
    usable = damped > floor
    inv = ops.where(usable, 1.0 / ops.where(usable, damped, 1.0), 0.0)
    coeff = (ops.swap_last(vecs) @ b64[..., None])[..., 0] * inv
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
    ops = jac.ops
    k = jac.gram()
    shift = jac.rows * damping
    kept: Array | int
    # None: no filter, or one the backend ran on the host that keeps every sample (then the
    # masks below would change nothing, so they are skipped).
    keep = None if dedup_threshold is None else jac.near_duplicate_mask(k, dedup_threshold)
    if keep is None:
        target, kept = rhs, jac.rows
    else:
        target, kept = ops.where(keep, rhs, ops.zeros_like(rhs)), ops.sum(keep)
    sol = damped_solve(ops, k, rhs, shift, keep)
    t_res = shift * ops.norm(sol.x) / ops.maximum(ops.norm(target), float(ops.finfo(target.dtype).tiny))
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
    sol = damped_solve(jac.ops, jac.gram(), jac.matvec(v), jac.rows * damping)
    return WoodburyApply((v - jac.rmatvec(sol.x)) / damping, sol)


def sampled_fisher_from_stack(jac: SampleJacobian, batch: int, damping: float) -> WoodburyApply:
    """SF's ``(F^ + lambda I)^{-1} g`` from one stacked ``J_all = [J; J^]``, never forming ``g``.

    ``jac``'s first ``batch`` rows are the true-label per-sample gradients ``J`` (so the mean
    gradient is ``g = J^T 1 / B``), the other ``R = k B`` rows the sampled ``J^``. With
    ``K_all = J_all J_all^T``, its sampled block ``K^ = J^ J^T`` and its cross block
    ``J^ J^T = K_all[B:, :B]``, so that ``B J^ g = K_all[B:, :B] 1``::

        y = (K^ + R lambda I)^{-1} K_all[B:, :B] 1        (= B x, x of the Woodbury form)
        d = (1/lambda) (g - J^T x) = J_all^T [1; -y] / (B lambda)

    :func:`woodbury_inverse_apply` with ``v = g``: the same direction up to rounding, from one
    Gram and one ``J_all^T w`` of the taps, without a parameter-gradient pass or a separate
    ``J^ g`` (``solve`` is the system for ``y``; its residual is relative, so unchanged by the
    factor ``B``). Needs ``lambda > 0``.
    """
    if not damping > 0:
        raise ValueError("the Woodbury form needs a positive damping")
    ops = jac.ops
    sampled = jac.gram_rows(batch)  # (R, B + R): the sampled rows against all, the only ones formed
    cross = sampled[:, :batch]
    sol = damped_solve(ops, sampled[:, batch:], ops.sum(cross, axis=1), (jac.rows - batch) * damping)
    weights = ops.concat([ops.ones_like(cross[0]), -sol.x]) / (batch * damping)  # scaled here: (B + R,), not (P,)
    return WoodburyApply(jac.rmatvec(weights), sol)


def near_duplicate_keep(ops: ArrayOps, k: Array, threshold: float) -> Array:
    """Samples kept by the iEF code's near-duplicate gradient filter (``(n,)`` bool mask).

    Wu et al.'s released optimiser (``iEFOptimizer_GP.py``, ``step``: ``SIM_THRESH = 0.99``)
    sorts the per-sample gradients by decreasing norm and, for every pair with
    ``|cos| > threshold`` (cosines from the Gram ``K``), drops the later (smaller-norm) one,
    before solving the Gram system. Vectorised, with a fixed shape: a sample is dropped when a
    sample ranked before it (larger norm; equal norms ranked by index) is a near-duplicate of
    it. Zero gradients have no direction and are never dropped.
    """
    k64 = ops.astype(k, ops.float64)
    norm = ops.sqrt(ops.maximum(ops.diagonal(k64), 0.0))
    positive = norm > 0
    inv = ops.where(positive, 1.0 / ops.where(positive, norm, 1.0), 0.0)
    dup = ops.abs(k64 * inv[..., :, None] * inv[..., None, :]) > threshold
    # Rank by decreasing norm, ties by index: a stable ascending sort of -norm; the rank of each
    # sample is the inverse permutation of that order, itself a sort of the order.
    rank = ops.argsort(ops.argsort(-norm))
    before = rank[..., :, None] < rank[..., None, :]  # strict: excludes the diagonal
    return ~ops.any(dup & before, axis=-2)
