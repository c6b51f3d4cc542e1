"""AdamQLR on PyTorch; the update rule, presets and references are in ``backends.methods.adamqlr``.

Per step: one forward and backward (loss, gradient), one JVP (``d^T G d``; the Hessian variant
uses one forward-over-reverse pass instead), and one forward at the new parameters for ``rho``
when the damping adapts. On CUDA and under ``torch.compile`` the scalars stay 0-d float64
tensors on the device (no host sync, no graph break); in an eager CPU step they are NumPy
``float64`` scalars (``HOST_SCALAR_OPS``: the same IEEE double arithmetic without a torch
dispatch per scalar operation, docs/profiling.md), and lambda goes back into the state as a
0-d tensor.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import torch
from torch import Tensor

from backends import adamqlr_maths
from backends.methods import adamqlr
from backends.spec import Batch, adapter_class
from backends.torch import likelihoods
from backends.torch.ops import HOST_SCALAR_OPS, TORCH_OPS

if TYPE_CHECKING:
    from backends.torch.problem import TorchProblem


class AdamQLRState(NamedTuple):
    hparams: adamqlr.AdamQLRHyperparams
    steps: int
    mu: Tensor
    nu: Tensor
    #: Current lambda, a 0-d float64 tensor.
    damping: Tensor


def adam_direction(hp: adamqlr.AdamQLRHyperparams, state: AdamQLRState, g: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """New moments and the bias-corrected Adam direction ``m^ / (sqrt(v^) + eps)`` (optax ``scale_by_adam``)."""
    t = state.steps + 1
    mu = torch.lerp(state.mu, g, 1.0 - hp.b1)
    nu = state.nu.mul(hp.b2).addcmul_(g, g, value=1.0 - hp.b2)
    d = (mu / (1.0 - hp.b1**t)).div_(nu.div(1.0 - hp.b2**t).sqrt_().add_(hp.eps))  # in place: one buffer fewer
    return mu, nu, d


def hessian_quadratic(problem: TorchProblem, params: Tensor, batch: Batch[Tensor], v: Tensor) -> Tensor:
    """``v^T H v`` for the Hessian ``H`` of the mean batch loss, by forward-over-reverse.

    The oracle has no Hessian-vector product; this is ``torch.func.jvp(torch.func.grad(L))``,
    counted as one JVP and one backward pass.
    """
    model, likelihood, x, y = problem.fmodel, problem.likelihood, batch.x, batch.y

    def mean_loss(p: Tensor) -> Tensor:
        return likelihoods.per_sample_loss(likelihood, model(p, x), y).mean()

    hv = torch.func.jvp(torch.func.grad(mean_loss), (params.detach(),), (v,))[1]
    problem.counters.add("jvp")
    problem.counters.add("backward")
    return torch.dot(v, hv)


def _scalar_ops(problem: TorchProblem) -> Any:
    """Host scalars for an eager step on the CPU; device tensors on CUDA (a host read would
    synchronise) and under ``torch.compile`` (a host read would break the graph)."""
    if problem.device.type == "cpu" and not torch.compiler.is_compiling():
        return HOST_SCALAR_OPS
    return TORCH_OPS


def _ieee(ops: Any) -> contextlib.AbstractContextManager[Any]:
    """0/0 is NaN without a warning on host scalars, as in torch (nothing to do for tensors)."""
    return np.errstate(divide="ignore", invalid="ignore") if ops is HOST_SCALAR_OPS else contextlib.nullcontext()


class AdamQLR(adapter_class(adamqlr.CARD, "torch")):  # type: ignore[misc]
    def init(self, problem: TorchProblem, hparams: adamqlr.AdamQLRHyperparams) -> AdamQLRState:
        zeros = torch.zeros(problem.num_params, dtype=problem.dtype, device=problem.device)
        lam = torch.tensor(hparams.damping, dtype=torch.float64, device=problem.device)
        return AdamQLRState(hparams, 0, zeros, zeros.clone(), lam)

    def direction(self, problem: TorchProblem, params: Tensor, state: AdamQLRState, batch: Batch[Tensor]) -> Tensor:
        return adam_direction(state.hparams, state, problem.oracle(params, batch).grad())[2]

    def step(
        self, problem: TorchProblem, params: Tensor, state: AdamQLRState, batch: Batch[Tensor]
    ) -> tuple[Tensor, AdamQLRState, dict[str, Any]]:
        hp = state.hparams
        oracle = problem.oracle(params, batch)
        loss, g = oracle.loss_and_grad()
        if hp.curvature == "fisher":
            curvature: Callable[[Tensor], Tensor] = oracle.ggn_quad
        else:
            curvature = functools.partial(hessian_quadratic, problem, params, batch)
        return quadratic_model_step(
            problem, params, state, loss, g, curvature, lambda new: problem.oracle(new, batch).loss_value()
        )


def quadratic_model_step(
    problem: TorchProblem,
    params: Tensor,
    state: AdamQLRState,
    loss: Tensor,
    g: Tensor,
    curvature: Callable[[Tensor], Tensor],
    loss_at: Callable[[Tensor], Tensor],
) -> tuple[Tensor, AdamQLRState, dict[str, Any]]:
    """The step from the batch's loss and gradient: Adam's moments and direction ``d``, the
    step size from ``q = curvature(d)``, the update, and (adaptive damping) the LM update of
    lambda from ``loss_at(theta + s d)``. The two callables are the step's only passes besides
    the gradient (``benchmarks/method_algebra.py`` times this function on recorded answers)."""
    hp = state.hparams
    mu, nu, d = adam_direction(hp, state, g)
    q = curvature(d)
    ops = _scalar_ops(problem)
    lam = state.damping if ops is TORCH_OPS else ops.astype(state.damping, ops.float64)
    with _ieee(ops):
        model = adamqlr_maths.quadratic_step(ops, hp, q, g, d, lam)
    # theta + s d; on the host s is a Python float, which the kernel rounds to the parameters'
    # dtype as the 0-d tensor of adamqlr_maths.update would be (no tensor built for it).
    new_params = adamqlr_maths.update(ops, params, model, d) if ops is TORCH_OPS else params + float(model.s) * d

    stats: dict[str, Any] = {
        "loss": loss,
        "lr": torch.as_tensor(-model.s),  # a 0-d tensor on both paths (the update scales d by it)
        "damping": lam,
        "curvature": model.curvature,
        "grad_dot_direction": model.grad_dot_direction,
    }
    new_lam = lam
    if hp.adaptive_damping:
        new_loss = loss_at(new_params)
        with _ieee(ops):
            rho, new_lam, model_change = adamqlr_maths.adapt_damping(ops, hp, lam, model, loss, new_loss)
        stats.update(rho=rho, model_change=model_change)
    if ops is not TORCH_OPS:
        new_lam = torch.tensor(new_lam, dtype=torch.float64)  # the state keeps a 0-d tensor
    return new_params, AdamQLRState(hp, state.steps + 1, mu, nu, new_lam), stats


ADAPTER = AdamQLR
