"""The JAX curvature oracle: every primitive a second-order method needs, on one batch.

The counterpart of ``backends/torch/oracle.py``: same method names, same conventions, same
pass counts. One :class:`JaxOracle` per (parameters, batch), created inside the adapter's
``step`` (which the problem jits whole). Conventions (docs/conventions.md, "The oracle"):

* training loss ``L = (1/B) sum_n l_n``; per-sample gradient rows ``J[n] = grad l_n`` (not
  divided by ``B``); gradient ``g = (1/B) J^T 1``;
* logits ``z_n``, logit gradients ``r_n = dl_n/dz_n``, output Hessian ``Q_n``;
* GGN ``G = (1/B) sum_n Jz_n^T Q_n Jz_n`` with ``Jz_n = dz_n/dtheta`` (the Fisher for both
  likelihoods); ``G v`` by one JVP and one VJP, ``v^T G v`` by one JVP;
* taps: inputs ``a`` and pre-activation gradients ``e`` of every trainable tapped layer,
  with ``e_n = dl_n/ds_n`` for the per-sample loss (not divided by ``B``).

How one forward serves everything: the model is linearised once,
``z, jvp_fn, a = jax.linearize(f, theta, eps)`` with ``f(theta, eps)`` the forward pass that
adds the zero perturbations ``eps`` to the tapped pre-activations and returns the tapped
inputs ``a`` as auxiliary output. ``jvp_fn`` gives JVPs, and its transpose
(``jax.linear_transpose``, i.e. ``jax.vjp``) gives reverse passes for any logit cotangent
``R``: ``(sum_n Jz_n^T R_n, [dR^T z / d eps_k])``, the parameter gradient and the tap cotangents
(``e`` when ``R = r``). Residuals are shared by all of them.

Pass counts (``forward``, ``backward``, ``jvp``, ``vjp``, ``per_sample``) are the torch
backend's: ``forward`` once, when logits, losses, taps or a reverse pass are first needed;
``backward``/``vjp`` per reverse pass; ``jvp`` per JVP; ``per_sample`` per vectorised
per-sample computation. Inside a jitted step they are recorded at trace time and replayed on
every call (``backends.jax.counting``).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, NamedTuple

import jax
import jax.numpy as jnp

from backends.jax import likelihoods
from backends.jax.counting import PASS_KINDS, Counters
from backends.spec import Batch

if TYPE_CHECKING:
    from backends.jax.problem import JaxProblem

Array = jax.Array

__all__ = ["PASS_KINDS", "Counters", "JaxOracle", "Reverse"]

_warned_uncounted = False


class Reverse(NamedTuple):
    """Result of one reverse pass with logit cotangent ``R`` (``B x C``).

    ``param_grad = sum_n Jz_n^T R_n`` (flat); ``tap_grads[k]`` is the cotangent of tapped layer
    ``k``'s pre-activation (``e`` when ``R = r``), if taps were recorded.
    """

    param_grad: Array
    tap_grads: list[Array]


class _Linearization(NamedTuple):
    logits: Array
    jvp_fn: Callable[..., Array]
    tap_inputs: list[Array]
    perturbations: list[Array]


class JaxOracle:
    """Curvature primitives at ``params`` on ``batch`` (see module docstring)."""

    def __init__(self, problem: JaxProblem, params: Array, batch: Batch[Array], *, taps: bool = False) -> None:
        self.problem = problem
        self.likelihood = problem.likelihood
        self.params = params
        self.batch = batch
        self.batch_size = int(batch.x.shape[0])
        self._want_taps = taps
        self._counters: Counters = problem.counters
        self._model = problem.fmodel
        self._frozen = problem.frozen
        self._lin: _Linearization | None = None
        self._vjp_fn: Callable[[Array], tuple[Array, list[Array]]] | None = None
        self._forward_counted = False
        self._losses: Array | None = None
        self._grad: Array | None = None
        self._r: Array | None = None
        self._e: list[Array] | None = None
        # Staged tracers (jit, scan, while) run this Python once for many calls; vmap/grad
        # tracers do not, so only the former are miscounted outside a counted function.
        if isinstance(params, jax.core.Tracer) and "Jaxpr" in type(params).__name__ and not self._counters.recording:
            _warn_uncounted()

    # ------------------------------------------------------------------ forward
    def _linearize(self) -> _Linearization:
        if self._lin is None:
            model, x, frozen = self._model, self.batch.x, self._frozen
            dtype = self.params.dtype
            if self._want_taps:
                perts = [jnp.zeros(s, dtype=dtype) for s in model.tap_shapes(self.batch_size)]

                def f(flat: Array, eps: list[Array]) -> tuple[Array, list[Array]]:
                    return model.apply_tapped(flat, x, eps, frozen)

            else:
                perts = []

                def f(flat: Array, eps: list[Array]) -> tuple[Array, list[Array]]:
                    return model.apply(flat, x, frozen), []

            z, jvp_fn, inputs = jax.linearize(f, self.params, perts, has_aux=True)
            self._lin = _Linearization(z, jvp_fn, list(inputs), perts)
        return self._lin

    def _forward(self) -> _Linearization:
        lin = self._linearize()
        if not self._forward_counted:
            self._counters.add("forward")
            self._forward_counted = True
        return lin

    @property
    def logits(self) -> Array:
        """``z`` of shape ``(B, C)``."""
        return self._forward().logits

    def per_sample_losses(self) -> Array:
        if self._losses is None:
            self._losses = likelihoods.per_sample_loss(self.likelihood, self.logits, self.batch.y)
        return self._losses

    def loss(self) -> Array:
        """Mean batch loss (0-d array)."""
        return jnp.mean(self.per_sample_losses())

    def loss_value(self) -> Array:
        """Mean batch loss where no reverse pass follows (a line search's or an LM ratio's trial
        point): one forward without linearising, counted as ``forward``; reuses the linearised
        forward if one already ran (the torch oracle's ``loss_value``)."""
        if self._lin is None and self._losses is None:
            z = self._model.apply(self.params, self.batch.x, self._frozen)
            self._losses = likelihoods.per_sample_loss(self.likelihood, z, self.batch.y)
            self._counters.add("forward")
        return jnp.mean(self.per_sample_losses())

    def logit_grads(self) -> Array:
        """``r_n = dl_n/dz_n``, shape ``(B, C)``; closed form, no pass."""
        if self._r is None:
            self._r = likelihoods.logit_grads(self.likelihood, self.logits, self.batch.y)
        return self._r

    # ------------------------------------------------------------------ reverse passes
    def reverse(self, cotangent: Array, *, kind: str = "backward", param_grad: bool = True) -> Reverse:
        """One reverse pass of ``sum_n R_n^T z_n`` through the linearised forward.

        With ``param_grad=False`` only the tap cotangents are returned (``Reverse.param_grad``
        is empty; under ``jit`` XLA removes the unused parameter-gradient products), as the
        torch oracle's ``reverse``: it needs ``taps=True``, and without tapped layers no pass runs.
        """
        if not param_grad and not self._want_taps:
            raise RuntimeError("param_grad=False needs an oracle created with taps=True")
        lin = self._forward()
        if not param_grad and not lin.perturbations:
            return Reverse(jnp.zeros(0, dtype=self.params.dtype), [])  # no tapped layers: no pass
        if self._vjp_fn is None:
            self._vjp_fn = jax.linear_transpose(lin.jvp_fn, self.params, lin.perturbations)
        grads, tap_grads = self._vjp_fn(jnp.asarray(cotangent, dtype=lin.logits.dtype))
        self._counters.add(kind)
        if not param_grad:
            return Reverse(jnp.zeros(0, dtype=self.params.dtype), list(tap_grads))
        return Reverse(grads, list(tap_grads))

    def grad(self) -> Array:
        """Gradient of the mean batch loss, flat ``(P,)``."""
        if self._grad is None:
            rev = self.reverse(self.logit_grads())
            self._grad = rev.param_grad / self.batch_size
            if self._want_taps:
                self._e = rev.tap_grads
        return self._grad

    def loss_and_grad(self) -> tuple[Array, Array]:
        return self.loss(), self.grad()

    def weighted_grad(self, weights: Array) -> Array:
        """``J^T w = sum_n w_n grad l_n`` (flat) by one reverse pass of ``sum_n w_n l_n``."""
        return self.reverse(weights[:, None] * self.logit_grads()).param_grad

    # ------------------------------------------------------------------ taps
    def _require_taps(self) -> None:
        if not self._want_taps:
            raise RuntimeError("this oracle was created without taps=True")

    def tap_inputs(self) -> list[Array]:
        """Inputs ``a`` of the trainable tapped layers (``ParamLayout.tapped`` order)."""
        self._require_taps()
        return self._forward().tap_inputs

    def tap_grads(self) -> list[Array]:
        """Pre-activation gradients ``e`` of the per-sample losses (true labels)."""
        self._require_taps()
        if self._e is None:
            self.grad()
        assert self._e is not None
        return self._e

    def tap_grads_for(self, cotangent: Array, *, kind: str = "backward") -> list[Array]:
        """Pre-activation cotangents for an arbitrary logit cotangent (e.g. sampled labels)."""
        self._require_taps()
        return self.reverse(cotangent, kind=kind, param_grad=False).tap_grads

    # ------------------------------------------------------------------ per-sample gradients
    def _single_loss(self, flat: Array, x: Array, y: Array) -> Array:
        z = self._model.apply(flat, x[None], self._frozen)
        return likelihoods.per_sample_loss(self.likelihood, z, y[None]).sum()

    def per_sample_grads(self) -> Array:
        """``J`` of shape ``(B, P)``: row ``n`` is ``grad l_n`` (``jax.vmap(jax.grad)``)."""
        self._counters.add("per_sample")
        return jax.vmap(jax.grad(self._single_loss), in_axes=(None, 0, 0))(self.params, self.batch.x, self.batch.y)

    # ------------------------------------------------------------------ GGN / Fisher
    def jvp(self, v: Array) -> Array:
        """``Jz v``: output tangents ``(B, C)`` for a parameter tangent ``v`` (forward mode)."""
        lin = self._linearize()
        tangent = lin.jvp_fn(jnp.asarray(v, dtype=self.params.dtype), [jnp.zeros_like(e) for e in lin.perturbations])
        self._counters.add("jvp")
        return tangent

    def vjp(self, u: Array) -> Array:
        """``sum_n Jz_n^T u_n`` for output cotangents ``u`` ``(B, C)``; flat ``(P,)``."""
        return self.reverse(u, kind="vjp").param_grad

    def output_hessian_apply(self, u: Array) -> Array:
        return likelihoods.output_hessian_apply(self.likelihood, self.logits, u)

    def ggn_vp(self, v: Array) -> Array:
        """``G v = (1/B) Jz^T Q Jz v``."""
        return self.vjp(self.output_hessian_apply(self.jvp(v))) / self.batch_size

    def ggn_quad(self, v: Array) -> Array:
        """``v^T G v`` with one JVP (0-d array)."""
        u = self.jvp(v)
        return jnp.mean(likelihoods.output_quadratic(self.likelihood, self.logits, u))

    def output_jacobian(self) -> Array:
        """Dense ``Jz`` of shape ``(B, C, P)`` (small problems only: references and EGN)."""
        model, frozen = self._model, self._frozen

        def single(flat: Array, x: Array) -> Array:
            return model.apply(flat, x[None], frozen)[0]

        jz = jax.vmap(jax.jacrev(single), in_axes=(None, 0))(self.params, self.batch.x)
        # What it computes: its own forward and C reverse passes (one per output, vectorised
        # over the batch), the passes the taps Gram books for the same rows.
        self._counters.add("forward")
        self._counters.add("backward", int(jz.shape[1]))
        return jz

    # ------------------------------------------------------------------ sampled labels
    def sample_targets(self, k: int = 1) -> Array:
        """``k`` targets per sample drawn from the model using the batch noise (rows ``:k``)."""
        noise = self.batch.noise
        if k > noise.shape[0]:
            raise ValueError(f"at most {noise.shape[0]} sampled targets per step, asked for {k}")
        return likelihoods.sample_targets(self.likelihood, self.logits, noise[:k])

    def sampled_logit_grads(self, k: int = 1) -> Array:
        """``r^_n = dl(y^_n, z_n)/dz_n`` for ``k`` sampled targets, shape ``(k, B, C)``."""
        targets = self.sample_targets(k)
        z = jax.lax.stop_gradient(self.logits)
        return jax.vmap(lambda t: likelihoods.logit_grads(self.likelihood, z, t))(targets)

    def logit_grads_with_samples(self, k: int = 1) -> Array:
        """``[r; r^]``, shape ``(1 + k, B, C)``: the true labels' logit gradients (row 0, as
        :meth:`logit_grads`) then ``k`` sampled draws' (as :meth:`sampled_logit_grads`)."""
        sampled = self.sample_targets(k)
        targets = jnp.concatenate([self.batch.y[None].astype(sampled.dtype), sampled])
        z = jax.lax.stop_gradient(self.logits)
        return jax.vmap(lambda t: likelihoods.logit_grads(self.likelihood, z, t))(targets)


def _warn_uncounted() -> None:
    global _warned_uncounted
    if not _warned_uncounted:
        _warned_uncounted = True
        warnings.warn(
            "JAX oracle used under a jax transformation that problem.make_step / problem.jit did not "
            "prepare: its passes are counted once per trace, not once per call",
            RuntimeWarning,
            stacklevel=3,
        )
