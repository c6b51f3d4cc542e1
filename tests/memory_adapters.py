"""Adapters with a known memory cost per step, for the memory tests (tests/test_memory.py).

Both are plain SGD (``theta <- theta - lr * g``); :class:`Allocating` also fills a temporary of
:data:`ALLOC_MIB` MiB on the problem's device inside every step and drops it before returning,
so the step's peak is at least that much above the memory in use before the step.
"""

from __future__ import annotations

from typing import Any

import torch

from backends.methods import sgd
from backends.spec import Batch, adapter_class

#: Size of the temporary :class:`Allocating` fills in every step.
ALLOC_MIB = 64


class Plain(adapter_class(sgd.CARD, "torch")):  # type: ignore[misc]
    """SGD without momentum and without state."""

    name = "memory-plain"

    def init(self, problem: Any, hparams: Any) -> Any:
        return hparams

    def direction(self, problem: Any, params: Any, state: Any, batch: Batch[Any]) -> Any:
        return problem.oracle(params, batch).grad()

    def extra(self, params: Any) -> float:
        return 0.0

    def step(self, problem: Any, params: Any, state: Any, batch: Batch[Any]) -> tuple[Any, Any, dict]:
        loss, g = problem.oracle(params, batch).loss_and_grad()
        return params - state.lr * g + self.extra(params), state, {"loss": loss}


class Allocating(Plain):
    """Plain SGD plus a filled temporary of ``ALLOC_MIB`` MiB per step (freed when the step returns)."""

    name = "memory-allocating"

    def extra(self, params: Any) -> float:
        scratch = torch.ones(ALLOC_MIB * 2**20 // 4, dtype=torch.float32, device=params.device)
        return float(scratch[-1].item()) * 0.0  # reads it back: the fill really happened
