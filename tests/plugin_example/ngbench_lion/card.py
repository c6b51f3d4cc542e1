"""Lion, "EvoLved Sign Momentum": the method card shared by the torch and JAX adapters.

Update (Chen et al., 2023, Algorithm 2 / Program 1), with ``g_t`` the gradient of the mean
batch loss (ngbench's convention) and ``m_0 = 0``::

    c_t = b1 m_{t-1} + (1 - b1) g_t
    d_t = sign(c_t) + wd theta_{t-1}                 (the direction: ascent-signed)
    theta_t = theta_{t-1} - lr d_t
    m_t = b2 m_{t-1} + (1 - b2) g_t

The sign makes every coordinate move by exactly ``lr`` (plus decay), so the update is
invariant to the loss scale and the mean/sum convention does not change ``lr``. Decoupled
weight decay is folded into the direction, so the applied update is always ``-lr d_t``
(``capabilities.step_along_direction``). Same semantics as ``optax.lion`` (hard sign).

Defaults: b1 = 0.9, b2 = 0.99 (the paper's); lr = 3e-4, three times below ngbench's AdamW
default as the paper advises ("3-10x smaller"); no weight decay.

Reference: Chen, Liang, Huang, Real, Wang, Pham, Dong, Luong, Hsieh, Lu & Le, "Symbolic
Discovery of Optimization Algorithms", NeurIPS 2023 (arXiv 2302.06675), Sec. 2, Program 1.
"""

from __future__ import annotations

from dataclasses import dataclass

from backends.spec import Capabilities, LogUniform, MethodCard, OneMinusLogUniform, hparam


@dataclass(frozen=True)
class LionHyperparams:
    lr: float = hparam(3e-4, doc="learning rate (the size of every coordinate's move)", low=0.0, low_inclusive=False)
    b1: float = hparam(0.9, doc="interpolation of momentum and gradient inside the sign", low=0.0, high=1.0)
    b2: float = hparam(0.99, doc="momentum decay", low=0.0, high=1.0, high_inclusive=False)
    weight_decay: float = hparam(0.0, doc="decoupled weight decay (added to the direction)", low=0.0)


CARD = MethodCard(
    name="lion",
    paper="Chen et al. (2023), NeurIPS, arXiv 2302.06675, Program 1",
    description="Lion: the sign of an interpolation of momentum and gradient, with decoupled weight decay.",
    Hyperparams=LionHyperparams,
    search_space={
        "lr": LogUniform(1e-5, 1e-2),
        "b1": OneMinusLogUniform(1e-2, 0.5),
        "weight_decay": LogUniform(1e-4, 1.0),
    },
    capabilities=Capabilities(step_along_direction=True),
)
