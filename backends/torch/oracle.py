"""The PyTorch curvature oracle: every primitive a second-order method needs, on one batch.

One :class:`TorchOracle` per (parameters, batch). It runs at most one forward pass with a graph
(lazily, optionally recording taps), and serves from it the loss, logits, gradient, taps and
any number of reverse passes. Conventions (docs/conventions.md, "The oracle"):

* training loss ``L = (1/B) sum_n l_n``; per-sample gradient rows ``J[n] = grad l_n`` (not
  divided by ``B``); gradient ``g = (1/B) J^T 1``;
* logits ``z_n``, logit gradients ``r_n = dl_n/dz_n``, output Hessian ``Q_n``;
* GGN ``G = (1/B) sum_n Jz_n^T Q_n Jz_n`` with ``Jz_n = dz_n/dtheta`` (the Fisher for both
  likelihoods); ``G v`` by one JVP and one VJP, ``v^T G v`` by one JVP;
* taps: inputs ``a`` and pre-activation gradients ``e`` of every trainable tapped layer,
  with ``e_n = dl_n/ds_n`` for the per-sample loss (not divided by ``B``).

Every primitive increments the problem's :class:`Counters`, so each step reports its cost in
passes: ``forward``, ``backward`` (reverse pass of a loss), ``jvp`` (forward-mode pass), ``vjp``
(reverse pass with an arbitrary output cotangent) and ``per_sample`` (a vectorised per-sample
gradient computation, itself one forward and one backward over the batch).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
from torch import Tensor
from torch.autograd import forward_ad
from torch.autograd import graph as autograd_graph
from torch.func import grad as func_grad
from torch.func import jvp as func_jvp
from torch.func import vmap

from backends.spec import Batch
from backends.torch import likelihoods
from backends.torch.models import Taps

if TYPE_CHECKING:
    from backends.torch.problem import TorchProblem

PASS_KINDS: tuple[str, ...] = ("forward", "backward", "jvp", "vjp", "per_sample")

#: The autograd engine entry ``torch.autograd.grad`` calls after checking its arguments
#: (private to torch; ``None`` where a torch version lacks it, then ``torch.autograd.grad``).
_ENGINE_RUN_BACKWARD = getattr(autograd_graph, "_engine_run_backward", None)


@dataclass
class Counters:
    """Pass counters of one problem; the harness reads the increments of every step."""

    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(PASS_KINDS, 0))

    def add(self, kind: str, n: int = 1) -> None:
        self.counts[kind] += n

    def snapshot(self) -> dict[str, int]:
        return dict(self.counts)

    def add_scaled(self, counts: dict[str, int], times: int) -> None:
        """Add ``counts[kind] * times`` for every kind (same API as the JAX counters)."""
        for kind, c in counts.items():
            self.counts[kind] += c * int(times)

    @contextlib.contextmanager
    def capture(self) -> Iterator[dict[str, int]]:
        """Collect the counts added inside the block without booking them."""
        before = dict(self.counts)
        out: dict[str, int] = {}
        try:
            yield out
        finally:
            out.update({k: v - before[k] for k, v in self.counts.items() if v != before[k]})
            self.counts.update(before)


@dataclass
class Reverse:
    """Result of one reverse pass with logit cotangent ``R`` (``B x C``).

    ``param_grad = sum_n Jz_n^T R_n`` (flat); ``tap_grads[k]`` is the cotangent of tapped layer
    ``k``'s pre-activation (``e`` when ``R = r``), if taps were recorded.
    """

    param_grad: Tensor
    tap_grads: list[Tensor]


def _reverse_pass(z: Tensor, inputs: tuple[Tensor, ...], cotangent: Tensor) -> tuple[Tensor, ...]:
    """``torch.autograd.grad(z, inputs, cotangent, retain_graph=True)``.

    Eager, it calls the autograd engine as ``torch.autograd.grad`` does after its argument
    checks (``torch.autograd.graph._engine_run_backward``): the same engine call and numbers,
    without about 10 µs of Python validation per reverse pass (the cotangent is built here with
    ``z``'s shape and dtype; docs/profiling.md, "A torch step's fixed cost"). Inside a
    ``torch.func`` transform or under ``torch.compile``, or on a torch without that function,
    ``torch.autograd.grad`` itself."""
    if _ENGINE_RUN_BACKWARD is None or _traced():
        return tuple(torch.autograd.grad(z, inputs, grad_outputs=cotangent, retain_graph=True))
    if cotangent.shape != z.shape:  # the one check of torch.autograd.grad's that can fail here
        raise RuntimeError(f"Mismatch in shape: cotangent {tuple(cotangent.shape)}, logits {tuple(z.shape)}")
    return tuple(_ENGINE_RUN_BACKWARD((z,), (cotangent,), True, False, inputs, False, accumulate_grad=False))


def _traced() -> bool:
    """Inside a ``torch.func`` transform (where dual tensors have no batching rule) or under
    ``torch.compile`` (which traces ``torch.func.jvp`` whole)."""
    return torch._C._functorch.maybe_current_level() is not None or torch.compiler.is_compiling()


class TorchOracle:
    """Curvature primitives at ``params`` on ``batch`` (see module docstring)."""

    def __init__(self, problem: TorchProblem, params: Tensor, batch: Batch[Tensor], *, taps: bool = False) -> None:
        self.problem = problem
        self.likelihood = problem.likelihood
        self.params = params.detach()
        self.batch = batch
        self.batch_size = int(batch.x.shape[0])
        self._want_taps = taps
        self._counters = problem.counters
        self._leaf: Tensor | None = None
        self._z: Tensor | None = None
        self._z_value: Tensor | None = None
        self._losses: Tensor | None = None
        self._value_losses: Tensor | None = None
        self._taps: Taps | None = None
        self._grad: Tensor | None = None
        self._r: Tensor | None = None
        self._p: Tensor | None = None
        self._e: list[Tensor] | None = None
        self._a: list[Tensor] | None = None
        #: A tangent carried by the graph forward (:meth:`carry_tangent`) and its ``Jz v``.
        self._carried: Tensor | None = None
        self._carried_jvp: Tensor | None = None

    # ------------------------------------------------------------------ forward
    def _forward(self) -> None:
        if self._z is not None:
            return
        leaf = self.params.detach().requires_grad_(True)
        taps = Taps() if self._want_taps else None
        with torch.enable_grad():
            if self._carried is None:
                z = self.problem.fmodel(leaf, self.batch.x, taps)
            else:  # one forward-mode pass: the graph of z and the tangent Jz v together
                with forward_ad.dual_level():
                    dual = forward_ad.make_dual(leaf, self._carried.to(leaf.dtype))
                    z, tangent = forward_ad.unpack_dual(self.problem.fmodel(dual, self.batch.x, taps))
                self._carried_jvp = tangent.detach()
        # The reverse passes start at z with closed-form cotangents, never at the losses: their
        # values need no graph (same numbers, no autograd nodes recorded for them; computed from
        # the detached logits, they record none without a ``no_grad`` block either).
        self._z_value = z.detach()
        losses = likelihoods.per_sample_loss(self.likelihood, self._z_value, self.batch.y)
        self._counters.add("forward")
        self._leaf, self._z, self._losses, self._taps = leaf, z, losses, taps

    @property
    def logits(self) -> Tensor:
        """``z`` of shape ``(B, C)`` (no graph)."""
        self._forward()  # sets the detached logits once
        assert self._z_value is not None
        return self._z_value

    def per_sample_losses(self) -> Tensor:
        if self._z is None and self._value_losses is not None:
            return self._value_losses
        self._forward()
        assert self._losses is not None
        return self._losses

    def loss_value(self) -> Tensor:
        """Mean batch loss without recording a graph (one forward, e.g. a line search's or an
        LM ratio's trial point). Reuses the graph forward if one already ran."""
        if self._z is None and self._value_losses is None:
            with torch.no_grad():
                z = self.problem.fmodel(self.params, self.batch.x)
                self._value_losses = likelihoods.per_sample_loss(self.likelihood, z, self.batch.y)
            self._counters.add("forward")
        return self.per_sample_losses().mean()

    def loss(self) -> Tensor:
        """Mean batch loss (0-d tensor, no graph)."""
        return self.per_sample_losses().mean()

    def probabilities(self) -> Tensor | None:
        """``softmax(z)`` for ``softmax_ce`` (once per oracle: the closed forms below share it);
        ``None`` for ``mse``."""
        if self._p is None and self.likelihood == "softmax_ce":
            self._p = likelihoods.probabilities(self.logits)
        return self._p

    def logit_grads(self) -> Tensor:
        """``r_n = dl_n/dz_n``, shape ``(B, C)``; closed form, no pass."""
        if self._r is None:
            self._r = likelihoods.logit_grads(self.likelihood, self.logits, self.batch.y, self.probabilities())
        return self._r

    # ------------------------------------------------------------------ reverse passes
    def reverse(self, cotangent: Tensor, *, kind: str = "backward", param_grad: bool = True) -> Reverse:
        """One reverse pass of ``sum_n R_n^T z_n`` through the recorded forward graph.

        With ``param_grad=False`` only the tap cotangents are computed (cheaper: autograd skips
        the parameter-gradient products); ``Reverse.param_grad`` is then empty.
        """
        self._forward()
        assert self._z is not None and self._leaf is not None
        taps = self._taps.outputs if self._taps is not None else []
        if not param_grad and not taps:
            if not self._want_taps:
                raise RuntimeError("param_grad=False needs an oracle created with taps=True")
            return Reverse(self._leaf.new_zeros(0), [])  # a model without tapped layers: no pass
        inputs = ([self._leaf] if param_grad else []) + list(taps)
        grads = _reverse_pass(self._z, tuple(inputs), cotangent.to(self._z.dtype))
        self._counters.add(kind)
        if not param_grad:
            return Reverse(self._leaf.new_zeros(0), list(grads))
        return Reverse(grads[0], list(grads[1:]))

    def grad(self) -> Tensor:
        """Gradient of the mean batch loss, flat ``(P,)``."""
        if self._grad is None:
            rev = self.reverse(self.logit_grads())
            self._grad = rev.param_grad / self.batch_size
            if self._taps is not None:
                self._e = rev.tap_grads
        return self._grad

    def loss_and_grad(self) -> tuple[Tensor, Tensor]:
        return self.loss(), self.grad()

    def weighted_grad(self, weights: Tensor) -> Tensor:
        """``J^T w = sum_n w_n grad l_n`` (flat) by one reverse pass of ``sum_n w_n l_n``."""
        return self.reverse(weights.unsqueeze(-1) * self.logit_grads()).param_grad

    # ------------------------------------------------------------------ taps
    def tap_inputs(self) -> list[Tensor]:
        """Inputs ``a`` of the trainable tapped layers (``ParamLayout.tapped`` order)."""
        if not self._want_taps:
            raise RuntimeError("this oracle was created without taps=True")
        if self._a is None:
            self._forward()
            assert self._taps is not None
            self._a = [a.detach() for a in self._taps.inputs]
        return self._a

    def tap_grads(self) -> list[Tensor]:
        """Pre-activation gradients ``e`` of the per-sample losses (true labels)."""
        if not self._want_taps:
            raise RuntimeError("this oracle was created without taps=True")
        if self._e is None:
            self.grad()
        assert self._e is not None
        return self._e

    def tap_grads_for(self, cotangent: Tensor, *, kind: str = "backward") -> list[Tensor]:
        """Pre-activation cotangents for an arbitrary logit cotangent (e.g. sampled labels);
        one reverse pass that skips the parameter gradient."""
        if not self._want_taps:
            raise RuntimeError("this oracle was created without taps=True")
        return self.reverse(cotangent, kind=kind, param_grad=False).tap_grads

    # ------------------------------------------------------------------ per-sample gradients
    def per_sample_grads(self) -> Tensor:
        """``J`` of shape ``(B, P)``: row ``n`` is ``grad l_n`` (vectorised, ``torch.func``)."""
        model, likelihood = self.problem.fmodel, self.likelihood

        def single(flat: Tensor, x: Tensor, y: Tensor) -> Tensor:
            z = model(flat, x.unsqueeze(0))
            return likelihoods.per_sample_loss(likelihood, z, y.unsqueeze(0)).sum()

        self._counters.add("per_sample")
        return vmap(func_grad(single), in_dims=(None, 0, 0))(self.params, self.batch.x, self.batch.y)

    # ------------------------------------------------------------------ GGN / Fisher
    def carry_tangent(self, v: Tensor) -> None:
        """Let the graph forward also compute ``Jz v`` for a tangent known before it runs (K-FAC's
        previous update): the forward runs on dual parameters, which yields the graph's logits
        and the output tangent in one forward-mode pass, sparing :meth:`jvp` of this same
        tensor its own pass (about a forward's worth of primal work; docs/profiling.md, "K-FAC (torch)").
        The values are those of the separate passes. Booked as one ``jvp`` when :meth:`jvp`
        hands it out. Eager only, and only before the forward has run; otherwise a no-op."""
        if self._z is None and not _traced():
            self._carried = v

    def jvp(self, v: Tensor) -> Tensor:
        """``Jz v``: output tangents ``(B, C)`` for a parameter tangent ``v`` (forward mode).

        Dual tensors of ``torch.autograd.forward_ad`` directly: the same operators and numbers
        as ``torch.func.jvp``, without its functional wrapping of every input (which made a JVP
        cost about three forwards at these sizes; docs/profiling.md). The tangent carried by
        the graph forward (:meth:`carry_tangent`) is returned without a pass."""
        if self._carried is not None and v is self._carried:
            self._forward()
            assert self._carried_jvp is not None
            self._counters.add("jvp")
            return self._carried_jvp
        model, x, v = self.problem.fmodel, self.batch.x, v.to(self.params.dtype)
        if _traced():
            # Inside a torch.func transform (K-FAC's vmapped JVPs, compiled) dual tensors have no
            # batching rule, and under torch.compile torch.func.jvp is what Dynamo traces
            # whole: there torch.func.jvp, the same numbers.
            tangent = func_jvp(lambda p: model(p, x), (self.params,), (v,))[1]
        else:
            with forward_ad.dual_level():
                tangent = forward_ad.unpack_dual(model(forward_ad.make_dual(self.params, v), x)).tangent
        self._counters.add("jvp")
        return tangent

    def vjp(self, u: Tensor) -> Tensor:
        """``sum_n Jz_n^T u_n`` for output cotangents ``u`` ``(B, C)``; flat ``(P,)``."""
        return self.reverse(u, kind="vjp").param_grad

    def output_hessian_apply(self, u: Tensor) -> Tensor:
        return likelihoods.output_hessian_apply(self.likelihood, self.logits, u, self.probabilities())

    def ggn_vp(self, v: Tensor) -> Tensor:
        """``G v = (1/B) Jz^T Q Jz v``."""
        return self.vjp(self.output_hessian_apply(self.jvp(v))) / self.batch_size

    def ggn_quad(self, v: Tensor) -> Tensor:
        """``v^T G v`` with one JVP (0-d tensor)."""
        u = self.jvp(v)
        return likelihoods.output_quadratic(self.likelihood, self.logits, u, self.probabilities()).mean()

    def output_jacobian(self) -> Tensor:
        """Dense ``Jz`` of shape ``(B, C, P)`` (small problems only: references and EGN).

        Booked as what it computes: its own forward and ``C`` reverse passes (one per output,
        vectorised over the batch), the passes the taps Gram books for the same rows."""
        model = self.problem.fmodel

        def single(flat: Tensor, x: Tensor) -> Tensor:
            return model(flat, x.unsqueeze(0)).squeeze(0)

        jz = vmap(torch.func.jacrev(single), in_dims=(None, 0))(self.params, self.batch.x)
        self._counters.add("forward")
        self._counters.add("backward", int(jz.shape[1]))
        return jz

    # ------------------------------------------------------------------ sampled labels
    def sample_targets(self, k: int = 1) -> Tensor:
        """``k`` targets per sample drawn from the model using the batch noise (rows ``:k``)."""
        noise = self.batch.noise
        if k > noise.shape[0]:
            raise ValueError(f"at most {noise.shape[0]} sampled targets per step, asked for {k}")
        return likelihoods.sample_targets(self.likelihood, self.logits, noise[:k], self.probabilities())

    def sampled_logit_grads(self, k: int = 1) -> Tensor:
        """``r^_n = dl(y^_n, z_n)/dz_n`` for ``k`` sampled targets, shape ``(k, B, C)``."""
        return likelihoods.logit_grads(self.likelihood, self.logits, self.sample_targets(k), self.probabilities())

    def sampled_logit_grad(self) -> Tensor:
        """``r^`` for one target per sample drawn with the batch noise's first row, ``(B, C)``:
        :meth:`sampled_logit_grads` ``(1)[0]`` bit for bit, in about half the operators
        (``likelihoods.sampled_logit_grad``; K-FAC's factor statistics)."""
        return likelihoods.sampled_logit_grad(self.likelihood, self.logits, self.batch.noise[0], self.probabilities())

    def logit_grads_with_samples(self, k: int = 1) -> Tensor:
        """``[r; r^]``, shape ``(1 + k, B, C)``: the true labels' logit gradients (row 0, as
        :meth:`logit_grads`) then ``k`` sampled draws' (as :meth:`sampled_logit_grads`), by one
        closed form over the stacked targets."""
        targets = torch.cat([self.batch.y.unsqueeze(0), self.sample_targets(k)])
        return likelihoods.logit_grads(self.likelihood, self.logits, targets, self.probabilities())
