"""Schedule-Free AdamW (Defazio et al. 2024): interpolation and averaging instead of a schedule.

Three sequences, with ``g`` the gradient of the mean batch loss (ngbench's convention) at ``y``::

    y_t = (1 - b1) z_t + b1 x_t                      (where the gradient is taken)
    v_t = b2 v_{t-1} + (1 - b2) g_t^2
    z_{t+1} = z_t - gamma_t (g_t / (sqrt(v_t / (1 - b2^t)) + eps) + wd y_t)
    x_{t+1} = (1 - c_{t+1}) x_t + c_{t+1} z_{t+1},   c_{t+1} = gamma_t^2 / sum_{i<=t} gamma_i^2

``gamma_t`` is ``lr`` after an optional linear warm-up (``weight_lr_power = 2`` weights the average
by ``gamma^2``). Training steps from ``y``; the model is *evaluated* at the average ``x``: the
adapter's ``eval_params`` hook (untimed, before every evaluation, as AlgoPerf's
``prepare_for_eval``) returns it. No learning-rate schedule and no step budget are needed.

Libraries: PyTorch ``schedulefree.AdamWScheduleFree`` 1.4.1 (eval parameters: its ``eval()`` on
a copy of the state); JAX ``optax.contrib.schedule_free_adamw`` (optax 0.2.8; eval parameters:
``optax.contrib.schedule_free_eval_params``). Two implementations of one method: no float64
parity is claimed.

Defaults (``library``): schedulefree's AdamWScheduleFree: lr 0.0025, b1 0.9, b2 0.999, eps 1e-8,
no weight decay, no warm-up, weight_lr_power 2.

Reference: A. Defazio, X. Yang, H. Mehta, K. Mishchenko, A. Khaled, A. Cutkosky, "The Road Less
Scheduled", NeurIPS 2024 (arXiv 2405.15682), Algorithm 1.
"""

from __future__ import annotations

from dataclasses import dataclass

from backends.spec import Capabilities, LogUniform, MethodCard, OneMinusLogUniform, hparam

_SRC = "schedulefree 1.4.1, AdamWScheduleFree defaults"


@dataclass(frozen=True)
class ScheduleFreeHyperparams:
    lr: float = hparam(0.0025, doc="step size gamma", low=0.0, low_inclusive=False, provenance="library", source=_SRC)
    b1: float = hparam(
        0.9, doc="interpolation between z and x (momentum)", low=0.0, high=1.0, provenance="library", source=_SRC
    )
    b2: float = hparam(
        0.999, doc="second-moment decay", low=0.0, high=1.0, high_inclusive=False, provenance="library", source=_SRC
    )
    eps: float = hparam(1e-8, doc="denominator epsilon", low=0.0, provenance="library", source=_SRC)
    weight_decay: float = hparam(0.0, doc="weight decay at y", low=0.0, provenance="library", source=_SRC)
    warmup_steps: int = hparam(0, doc="linear warm-up steps of gamma", low=0, provenance="library", source=_SRC)
    weight_lr_power: float = hparam(
        2.0, doc="power of gamma in the averaging weights", low=0.0, provenance="library", source=_SRC
    )


CARD = MethodCard(
    name="schedulefree-adamw",
    paper="Defazio et al. (2024), The Road Less Scheduled, NeurIPS, arXiv 2405.15682, Algorithm 1",
    description=(
        "Schedule-Free AdamW: Adam steps on z, gradients at an interpolation y, evaluation at the running "
        "average x (schedulefree; optax.contrib.schedule_free_adamw)."
    ),
    Hyperparams=ScheduleFreeHyperparams,
    search_space={
        "lr": LogUniform(1e-4, 3e-2),
        "b1": OneMinusLogUniform(0.02, 0.2),
        "weight_decay": LogUniform(1e-5, 0.1),
    },
    capabilities=Capabilities(step_along_direction=False, stateful_direction=True, cross_backend_parity=False),
)
