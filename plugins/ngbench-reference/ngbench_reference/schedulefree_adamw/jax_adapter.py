"""Schedule-Free AdamW on JAX: ``optax.contrib.schedule_free_adamw`` (optax 0.2.8; card: ``.card``).

The evaluation hook returns ``optax.contrib.schedule_free_eval_params(state, params)``, the average ``x``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import optax

from backends.spec import wrap_optax
from ngbench_reference.schedulefree_adamw.card import CARD


def schedule_free_transformation(hp: Any, labels: Mapping[str, str]) -> optax.GradientTransformation:
    return optax.contrib.schedule_free_adamw(
        learning_rate=hp.lr,
        warmup_steps=hp.warmup_steps or None,
        b1=hp.b1,
        b2=hp.b2,
        eps=hp.eps,
        weight_decay=hp.weight_decay,
        weight_lr_power=hp.weight_lr_power,
    )


class ScheduleFreeAdamW(
    wrap_optax(schedule_free_transformation, card=CARD, eval_params=optax.contrib.schedule_free_eval_params)
):
    """``optax.contrib.schedule_free_adamw`` (optax 0.2.8)."""
