"""``sgd`` and ``adamw`` against ``torch.optim`` step for step (float64, same batches)."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from backends.torch import build_problem, likelihoods
from harness.registry import get_adapter
from suites import get_suite

CASES = [
    ("sgd", {"lr": 0.05, "momentum": 0.0}, torch.optim.SGD, {"lr": 0.05}),
    ("sgd", {"lr": 0.05, "momentum": 0.9}, torch.optim.SGD, {"lr": 0.05, "momentum": 0.9}),
    (
        "sgd",
        {"lr": 0.05, "momentum": 0.8, "nesterov": True, "weight_decay": 1e-3},
        torch.optim.SGD,
        {"lr": 0.05, "momentum": 0.8, "nesterov": True, "weight_decay": 1e-3},
    ),
    ("adamw", {}, torch.optim.AdamW, {}),
    (
        "adamw",
        {"lr": 3e-3, "b1": 0.8, "b2": 0.99, "eps": 1e-6, "weight_decay": 0.1},
        torch.optim.AdamW,
        {"lr": 3e-3, "betas": (0.8, 0.99), "eps": 1e-6, "weight_decay": 0.1},
    ),
]


@pytest.mark.parametrize(("name", "ours", "torch_cls", "theirs"), CASES)
@pytest.mark.parametrize("suite", ["tiny-ce", "tiny-mse"])
def test_matches_torch_optim(
    name: str, ours: dict[str, Any], torch_cls: type, theirs: dict[str, Any], suite: str
) -> None:
    p = build_problem(get_suite(suite), seed=2, dtype="float64")
    adapter_cls = get_adapter(name, "torch")
    adapter = adapter_cls()
    state = adapter.init(p, adapter_cls.resolve(ours))
    params = p.params0
    module = p.model
    opt = torch_cls([q for q in module.parameters() if q.requires_grad], **theirs)
    for step in range(15):
        batch = p.device_batch(step)
        params, state, _ = adapter.step(p, params, state, batch)
        opt.zero_grad()
        likelihoods.per_sample_loss(p.likelihood, module(batch.x), batch.y).mean().backward()
        opt.step()
        reference = torch.nn.utils.parameters_to_vector(module.parameters()).detach()
        torch.testing.assert_close(params, reference, rtol=1e-12, atol=1e-14)
