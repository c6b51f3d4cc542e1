"""AdamW: Adam with decoupled weight decay (Loshchilov & Hutter, 2019, Algorithm 2).

Same semantics as ``torch.optim.AdamW`` and ``optax.adamw``::

    m_t = b1 m_{t-1} + (1 - b1) g_t,       v_t = b2 v_{t-1} + (1 - b2) g_t^2
    m^_t = m_t / (1 - b1^t),               v^_t = v_t / (1 - b2^t)
    theta_{t+1} = theta_t - lr * (m^_t / (sqrt(v^_t) + eps) + wd * theta_t)

Direction: ``m^_t / (sqrt(v^_t) + eps)`` with this batch's gradient folded into the moments
(the state is not advanced).

Implementations: JAX runs ``optax.adamw``; PyTorch runs ``torch.optim.AdamW``'s own fused
kernel (its functional form with ``fused=True``, a library option) on copies of the
parameters and moments in eager mode, and the formula above under ``torch.compile``. The two
libraries order the bias corrections differently (``sqrt(v_t) / sqrt(1 - b2^t)`` against
``sqrt(v_t / (1 - b2^t))``), so their updates agree to rounding, not bit for bit.

References: Kingma & Ba (2015), ICLR, Algorithm 1; Loshchilov & Hutter (2019), ICLR.
"""

from __future__ import annotations

from dataclasses import dataclass

from backends.spec import Capabilities, LogUniform, MethodCard, OneMinusLogUniform, hparam

#: Where Adam's defaults come from.
ADAM_DEFAULTS = (
    "Kingma & Ba (2015), ICLR, Algorithm 1 (good default settings): alpha = 0.001, beta1 = 0.9, beta2 = 0.999, "
    "eps = 1e-8"
)


@dataclass(frozen=True)
class AdamWHyperparams:
    lr: float = hparam(
        1e-3, doc="learning rate", low=0.0, low_inclusive=False, provenance="paper", source=ADAM_DEFAULTS
    )
    b1: float = hparam(
        0.9,
        doc="first-moment decay beta1",
        low=0.0,
        high=1.0,
        high_inclusive=False,
        provenance="paper",
        source=ADAM_DEFAULTS,
    )
    b2: float = hparam(
        0.999,
        doc="second-moment decay beta2",
        low=0.0,
        high=1.0,
        high_inclusive=False,
        provenance="paper",
        source=ADAM_DEFAULTS,
    )
    eps: float = hparam(1e-8, doc="denominator epsilon", low=0.0, provenance="paper", source=ADAM_DEFAULTS)
    weight_decay: float = hparam(
        1e-2,
        doc="decoupled weight decay",
        low=0.0,
        provenance="library",
        source="torch.optim.AdamW default weight_decay=1e-2",
    )


CARD = MethodCard(
    name="adamw",
    paper="Loshchilov & Hutter (2019), ICLR; Kingma & Ba (2015), ICLR",
    description="Adam with decoupled weight decay (torch.optim.AdamW / optax.adamw semantics).",
    Hyperparams=AdamWHyperparams,
    # Tuned-track search space (harness/tuning.py; docs "tuning"): AdamQLR's Adam baseline searches
    # lr logU[1e-6, 1] only (docs/methods.md, "AdamQLR"); AlgoPerf's NAdamW baseline lr logU[1e-4,
    # 1e-2], 1-b1 logU[4e-3, 0.1], wd logU[5e-3, 1] (decoupled, with a schedule). Here: lr
    # logU[1e-5, 1] (AdamQLR's upper end: the rosenbrock target was calibrated with AdamW at lr 1;
    # below 1e-5 nothing moves in a CI budget), 1-b1 logU[1e-2, 0.5] and wd logU[1e-6, 1e-1] (centred
    # on the defaults 0.9 and 1e-2 in log scale; AlgoPerf's wd range is for long schedules).
    search_space={
        "lr": LogUniform(1e-5, 1.0),
        "b1": OneMinusLogUniform(1e-2, 0.5),
        "weight_decay": LogUniform(1e-6, 1e-1),
    },
    # Decoupled decay moves the parameters off the direction whenever weight_decay > 0.
    capabilities=Capabilities(step_along_direction=False),
)
