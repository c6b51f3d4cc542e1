"""Shampoo on PyTorch: ``pytorch_optimizer.Shampoo`` 4.1.0 (update, defaults, reference: ``.card``)."""

from __future__ import annotations

import pytorch_optimizer

from backends.spec import wrap_torch_optimizer
from ngbench_reference.shampoo.card import CARD


class Shampoo(wrap_torch_optimizer(pytorch_optimizer.Shampoo, card=CARD, as_2d=True)):
    """``pytorch_optimizer.Shampoo``; every hyperparameter passed by name."""
