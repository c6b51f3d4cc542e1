"""Dense references for the second-order adapter tests (K-FAC, EGN, AdamQLR): explicit ``Jz``,
``Q``, ``G``, loss and gradient by plain autograd, independent of the oracle's vectorised code."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from backends.torch import build_problem, likelihoods
from suites import get_suite
from suites.layers import ModelSpec
from suites.spec import Budget, Suite


def problem_and_batch(name: str, step: int = 0, seed: int = 3) -> tuple[Any, Any]:
    p = build_problem(get_suite(name), seed=seed, dtype="float64")
    return p, p.device_batch(step)


def custom_problem(base: str, model: ModelSpec, batch_size: int, seed: int = 3) -> Any:
    """A float64 problem on ``base``'s data with another model and batch size."""
    suite = get_suite(base)
    custom = Suite(
        name=f"{base}-custom",
        version=1,
        description="test model",
        paper="test",
        model=model,
        likelihood=suite.likelihood,
        batch_size=batch_size,
        budget=Budget(steps=10),
        eval_every=10,
        load=lambda: suite.data,
        size="test",
    )
    return build_problem(custom, seed=seed, dtype="float64")


def dense_jacobian(p: Any, params: Tensor, x: Tensor) -> Tensor:
    """``Jz`` of shape ``(B, C, P)`` by reverse-mode autograd, one output at a time."""
    flat = params.detach().clone().requires_grad_(True)
    z = p.fmodel(flat, x)
    rows = []
    for n in range(z.shape[0]):
        for c in range(z.shape[1]):
            (g,) = torch.autograd.grad(z[n, c], flat, retain_graph=True)
            rows.append(g)
    return torch.stack(rows).reshape(z.shape[0], z.shape[1], -1)


def dense_q(likelihood: str, z: Tensor) -> Tensor:
    if likelihood == "softmax_ce":
        prob = torch.softmax(z, -1)
        return torch.diag_embed(prob) - prob.unsqueeze(-1) * prob.unsqueeze(-2)
    return torch.eye(z.shape[-1], dtype=z.dtype).expand(z.shape[0], -1, -1)


def dense_ggn(p: Any, params: Tensor, batch: Any) -> Tensor:
    """``G = (1/B) sum_n Jz_n^T Q_n Jz_n``."""
    Jz = dense_jacobian(p, params, batch.x)
    z = p.fmodel(params, batch.x).detach()
    return torch.einsum("bcp,bcd,bdq->pq", Jz, dense_q(p.likelihood, z), Jz) / Jz.shape[0]


def loss_and_grad(p: Any, params: Tensor, batch: Any) -> tuple[Tensor, Tensor]:
    flat = params.detach().clone().requires_grad_(True)
    loss = likelihoods.per_sample_loss(p.likelihood, p.fmodel(flat, batch.x), batch.y).mean()
    (g,) = torch.autograd.grad(loss, flat)
    return loss.detach(), g


def batch_loss(p: Any, params: Tensor, batch: Any) -> float:
    with torch.no_grad():
        return float(likelihoods.per_sample_loss(p.likelihood, p.fmodel(params, batch.x), batch.y).mean())


def assert_close(actual: Tensor, expected: Tensor, rtol: float = 1e-8, atol: float = 0.0) -> None:
    """Relative closeness in norm (entries near zero do not dominate)."""
    a, e = np.asarray(actual.detach().cpu()), np.asarray(expected.detach().cpu())
    assert a.shape == e.shape, (a.shape, e.shape)
    err, ref = float(np.linalg.norm(a - e)), float(np.linalg.norm(e))
    assert err <= rtol * ref + atol, f"relative error {err / max(ref, 1e-300):.3e}"
