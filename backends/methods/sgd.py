"""SGD with (heavy-ball or Nesterov) momentum and coupled L2 weight decay.

Same semantics as ``torch.optim.SGD`` (dampening 0)::

    d_t = g_t + wd * theta_t
    b_t = d_t                      (t = 1)
    b_t = mu * b_{t-1} + d_t       (t > 1)
    u_t = d_t + mu * b_t  (nesterov)   or   u_t = b_t
    theta_{t+1} = theta_t - lr * u_t

Direction: the gradient g of the mean batch loss.

References: Polyak (1964), heavy ball; Sutskever et al. (2013), ICML, Nesterov momentum as
used in deep learning.
"""

from __future__ import annotations

from dataclasses import dataclass

from backends.spec import Capabilities, Choice, LogUniform, MethodCard, OneMinusLogUniform, hparam


@dataclass(frozen=True)
class SGDHyperparams:
    lr: float = hparam(
        0.01,
        doc="learning rate",
        low=0.0,
        low_inclusive=False,
        provenance="library",
        source="Keras tf.keras.optimizers.SGD default learning_rate=0.01",
    )
    momentum: float = hparam(
        0.9,
        doc="momentum coefficient mu",
        low=0.0,
        high=1.0,
        high_inclusive=False,
        provenance="library",
        source="torchvision classification reference recipe (references/classification/train.py) --momentum 0.9",
    )
    nesterov: bool = hparam(
        False, doc="Nesterov momentum", provenance="library", source="torch.optim.SGD default nesterov=False"
    )
    weight_decay: float = hparam(
        0.0,
        doc="L2 coefficient added to the gradient",
        low=0.0,
        provenance="library",
        source="torch.optim.SGD default weight_decay=0",
    )


CARD = MethodCard(
    name="sgd",
    paper="Polyak (1964); Sutskever et al. (2013), ICML",
    description="Stochastic gradient descent with heavy-ball or Nesterov momentum (torch.optim.SGD semantics).",
    Hyperparams=SGDHyperparams,
    # Tuned-track search space (harness/tuning.py; reviewed against the sources, docs "tuning"):
    # AdamQLR's SGD baseline space (docs/methods.md, "AdamQLR") is lr logU[1e-6, 1e-1],
    # 1-m logU[1e-4, 0.3], wd logU[1e-10, 1]; AlgoPerf's Nesterov baseline lr logU[2e-2, 5]
    # (with warm-up and decay). Kept here: lr logU[1e-4, 1] (4 decades around the default 1e-2:
    # below 1e-4 a constant-LR run of <= 2000 steps barely moves, and the small convex suites
    # take lr > 0.1), 1-m logU[1e-3, 0.3] (an averaging horizon 1/(1-m) beyond 1000 steps exceeds
    # the CI budgets), Nesterov on/off (AlgoPerf tunes both variants). Weight decay is not searched:
    # the targets measure optimisation speed, and no second-order card searches it either.
    search_space={
        "lr": LogUniform(1e-4, 1.0),
        "momentum": OneMinusLogUniform(1e-3, 0.3),
        "nesterov": Choice((False, True)),
    },
    capabilities=Capabilities(step_along_direction=True),
)
