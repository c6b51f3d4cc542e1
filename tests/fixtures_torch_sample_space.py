"""Dense references and ad-hoc models for the sample-space tests (EF, iEF, SF, FNGD)."""

from __future__ import annotations

import numpy as np
import torch

from backends.torch import build_problem, likelihoods
from suites import get_suite
from suites.layers import Conv2d, Flatten, Linear, ModelSpec, Reshape, Tanh
from suites.spec import Budget, Dataset, Suite


def _random_suite(name: str, model: ModelSpec, likelihood: str = "softmax_ce", classes: int = 4) -> Suite:
    def load() -> Dataset:
        rng = np.random.default_rng(0)
        x = rng.normal(size=(60, *model.input_shape))
        y: np.ndarray = (
            rng.integers(0, classes, size=60)
            if likelihood == "softmax_ce"
            else rng.normal(size=(60, model.output_shape[-1]))
        )
        return Dataset(x[:48], y[:48], x[48:], y[48:])

    return Suite(
        name=name,
        version=1,
        description="ad-hoc test model",
        paper="test",
        model=model,
        likelihood=likelihood,  # type: ignore[arg-type]
        batch_size=8,
        budget=Budget(steps=10),
        eval_every=5,
        load=load,
        size="test",
    )


#: Conv2d on 8x8 single-channel "images": padded stride-1 conv with bias, then a strided conv
#: without bias, then a Linear head.
CONV = _random_suite(
    "test-conv",
    ModelSpec(
        (64,),
        (
            Reshape((1, 8, 8)),
            Conv2d(1, 3, 3, stride=1, padding=1),
            Tanh(),
            Conv2d(3, 2, 3, stride=2, padding=0, bias=False),
            Tanh(),
            Flatten(),
            Linear(2 * 3 * 3, 4),
        ),
    ),
)
#: A Linear applied to a sequence: (B, 8, 8) -> (B, 8, 5), then a head.
SEQUENCE = _random_suite(
    "test-sequence",
    ModelSpec((64,), (Reshape((8, 8)), Linear(8, 5), Tanh(), Flatten(), Linear(40, 2))),
    likelihood="mse",
)


def problem_oracle(suite: Suite | str, step: int = 0, seed: int = 3):  # type: ignore[no-untyped-def]
    suite_obj = get_suite(suite) if isinstance(suite, str) else suite
    p = build_problem(suite_obj, seed=seed, dtype="float64")
    b = p.device_batch(step)
    return p, b, p.oracle(p.params0, b, taps=True)


def dense_per_sample_grads_for(p, b, cotangent: torch.Tensor, params=None) -> torch.Tensor:  # type: ignore[no-untyped-def]
    """Rows ``Jz_n^T R_n`` by one autograd call per sample (independent of the oracle)."""
    flat = (p.params0 if params is None else params.detach().clone()).requires_grad_(True)
    rows = []
    for n in range(b.x.shape[0]):
        z = p.fmodel(flat, b.x[n : n + 1])
        (g,) = torch.autograd.grad((z[0] * cotangent[n]).sum(), flat)
        rows.append(g)
    return torch.stack(rows)


def dense_jacobian(p, b, params=None) -> torch.Tensor:  # type: ignore[no-untyped-def]
    """``J`` (rows ``grad l_n``) at ``params`` (default ``params0``), one autograd call per sample."""
    flat = (p.params0 if params is None else params.detach().clone()).requires_grad_(True)
    rows = []
    for n in range(b.x.shape[0]):
        ln = likelihoods.per_sample_loss(p.likelihood, p.fmodel(flat, b.x[n : n + 1]), b.y[n : n + 1]).sum()
        (g,) = torch.autograd.grad(ln, flat)
        rows.append(g)
    return torch.stack(rows)


def dense_output_jacobian(p, x: torch.Tensor) -> torch.Tensor:  # type: ignore[no-untyped-def]
    """``(B, C, P)`` by reverse-mode autograd, one output at a time."""
    flat = p.params0.requires_grad_(True)
    z = p.fmodel(flat, x)
    rows = []
    for n in range(z.shape[0]):
        for c in range(z.shape[1]):
            (g,) = torch.autograd.grad(z[n, c], flat, retain_graph=True)
            rows.append(g)
    return torch.stack(rows).reshape(z.shape[0], z.shape[1], -1)


def dense_ggn(p, b) -> torch.Tensor:  # type: ignore[no-untyped-def]
    """``G = (1/B) sum_n Jz_n^T Q_n Jz_n`` from the dense output Jacobian and closed-form ``Q``."""
    jz = dense_output_jacobian(p, b.x)
    z = p.fmodel(p.params0, b.x).detach()
    if p.likelihood == "softmax_ce":
        prob = torch.softmax(z, -1)
        q = torch.diag_embed(prob) - prob.unsqueeze(-1) * prob.unsqueeze(-2)
    else:
        q = torch.eye(z.shape[-1], dtype=z.dtype).expand(z.shape[0], -1, -1)
    return torch.einsum("bcp,bcd,bdq->pq", jz, q, jz) / z.shape[0]
