"""Schedule-Free AdamW on PyTorch: ``schedulefree.AdamWScheduleFree`` 1.4.1 (card: ``.card``).

The optimizer is built in ``train()`` mode; ``eval_mode=True`` makes the evaluation hook return
the parameters its ``eval()`` sets (the average ``x``), computed on a copy of the state.
"""

from __future__ import annotations

import schedulefree

from backends.spec import wrap_torch_optimizer
from ngbench_reference.schedulefree_adamw.card import CARD


class ScheduleFreeAdamW(
    wrap_torch_optimizer(
        schedulefree.AdamWScheduleFree,
        card=CARD,
        eval_mode=True,
        betas=lambda hp: (hp.b1, hp.b2),
        foreach=False,
    )
):
    """``schedulefree.AdamWScheduleFree``; lr, eps, weight_decay, warmup_steps, weight_lr_power by name."""
