"""Muon on PyTorch: ``torch.optim.Muon`` on hidden matrices, ``torch.optim.AdamW`` on the rest.

The update and defaults are in ``ngbench_reference.muon.card``. The output layer's weight goes to
AdamW unless ``head_optimizer = "muon"``; Conv2d weights are presented as ``(c_out, c_in kh kw)``
matrices (``as_2d``), as Jordan et al. do.
"""

from __future__ import annotations

import torch

from backends.spec import torch_part, wrap_torch_optimizer
from ngbench_reference.muon.card import CARD


class Muon(
    wrap_torch_optimizer(
        torch.optim.Muon,
        card=CARD,
        select=lambda hp: "matrices+head" if hp.head_optimizer == "muon" else "matrices",
        rest=torch_part(
            torch.optim.AdamW,
            "rest",
            lr=lambda hp: hp.adam_lr,
            betas=lambda hp: (hp.adam_b1, hp.adam_b2),
            eps=lambda hp: hp.adam_eps,
            weight_decay=0.0,
        ),
        as_2d=True,
        eps=1e-7,  # torch's default, Jordan's reference value
    )
):
    """``torch.optim.Muon`` + ``torch.optim.AdamW`` (torch 2.13); lr, momentum, nesterov, ns_steps and
    weight_decay are passed by name."""
