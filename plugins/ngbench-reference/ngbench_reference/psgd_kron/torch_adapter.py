"""PSGD Kron on PyTorch: ``pytorch_optimizer.Kron`` 4.1.0 (update, defaults, reference: ``.card``)."""

from __future__ import annotations

import pytorch_optimizer

from backends.spec import wrap_torch_optimizer
from ngbench_reference.psgd_kron.card import CARD


class Kron(
    wrap_torch_optimizer(
        pytorch_optimizer.Kron,
        card=CARD,
        seeded=True,  # random probe vectors and balancing coin from the global generators
        momentum=lambda hp: hp.b1,
        precondition_dtype=lambda hp, problem: problem.dtype,  # the library's float32 breaks float64 runs
        match_names=True,
    )
):
    """``pytorch_optimizer.Kron``; lr and weight_decay by name, momentum = b1."""
