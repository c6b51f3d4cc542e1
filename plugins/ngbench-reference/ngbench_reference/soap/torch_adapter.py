"""SOAP on PyTorch: ``pytorch_optimizer.SOAP`` 4.1.0 (update, defaults, reference: ``.card``)."""

from __future__ import annotations

import pytorch_optimizer

from backends.spec import wrap_torch_optimizer
from ngbench_reference.soap.card import CARD


class SOAP(
    wrap_torch_optimizer(
        pytorch_optimizer.SOAP,
        card=CARD,
        as_2d=True,
        warmup_steps=1,  # the library's first step only builds the preconditioner
        betas=lambda hp: (hp.b1, hp.b2),
    )
):
    """``pytorch_optimizer.SOAP``; lr, weight_decay, precondition_frequency and eps by name."""
