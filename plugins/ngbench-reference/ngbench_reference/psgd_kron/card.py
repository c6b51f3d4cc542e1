"""PSGD Kron: preconditioned SGD with a Kronecker-factored preconditioner fitted online (Li 2015/2018).

For each weight matrix, with ``g`` the gradient of the mean batch loss and ``m`` its momentum::

    m_t = b1 m_{t-1} + (1 - b1) g_t;    m^ = m_t / (1 - b1^t)
    with probability p_t: draw v ~ N(0, I); fit Q = Q_L (x) Q_R (triangular factors) by one
        step of size ``precondition_lr`` on the criterion E[h^T P h + v^T P^{-1} v], h = m^
        (the preconditioner P = Q^T Q whitens the gradient noise)
    W_t = W_{t-1} - lr (Q_L^T Q_L m^ Q_R^T Q_R) (clipped to unit RMS)  - lr wd W_{t-1}

``p_t`` anneals from 1 to 0.03 over the first steps (the libraries' schedule). Vectors use a
diagonal ``Q``. The fitted ``P`` scales like the inverse square root of the gradient covariance,
so the update does not depend on the loss scale.

Libraries: PyTorch ``pytorch_optimizer.Kron`` 4.1.0 (eager; ``kron-torch`` and ``heavyball`` compile
with ``torch.compile``, which the execution model forbids); its random probes and its balancing
coin come from torch's and numpy's global generators, which the wrapper seeds from the batch noise
(``seeded=True``). JAX: ``psgd_jax.kron.kron`` from ``psgd-jax`` 0.2.3, the newest release whose
``kron`` module imports with the pinned optax 0.2.8 and without flax (0.2.4 to 0.2.9, the latest,
import ``flax.linen`` there; every release's other modules import ``optax._src.clipping``, gone from
optax 0.2.8); its random draws come from a fixed key in its own state. The two libraries clip
differently (pytorch-optimizer: the update to unit RMS; psgd-jax: the preconditioned gradient to
global norm ``sqrt(n)`` and elementwise to 1) and draw different probe vectors, so no parity is
claimed, and no closed-form check is possible: the first update already depends on the random
probes each library draws.

Defaults (``library``): pytorch-optimizer's and psgd-jax's (they agree): lr 1e-3, b1 (momentum) 0.9,
no weight decay, preconditioner lr 0.1, update-probability schedule from 1 down to 0.03.

Reference: X.-L. Li, "Preconditioned Stochastic Gradient Descent", IEEE TNNLS 2018 (arXiv
1512.04202); X.-L. Li, "Preconditioner on Matrix Lie Group for SGD", ICLR 2019 (arXiv 1809.10232).
"""

from __future__ import annotations

from dataclasses import dataclass

from backends.spec import Capabilities, LogUniform, MethodCard, OneMinusLogUniform, hparam

_SRC = "pytorch_optimizer 4.1.0, Kron defaults"


@dataclass(frozen=True)
class KronHyperparams:
    lr: float = hparam(1e-3, doc="step size", low=0.0, low_inclusive=False, provenance="library", source=_SRC)
    b1: float = hparam(
        0.9, doc="momentum decay", low=0.0, high=1.0, high_inclusive=False, provenance="library", source=_SRC
    )
    weight_decay: float = hparam(
        0.0, doc="decoupled weight decay on matrices", low=0.0, provenance="library", source=_SRC
    )


CARD = MethodCard(
    name="psgd-kron",
    paper=(
        "Li (2018), Preconditioned Stochastic Gradient Descent, IEEE TNNLS, arXiv 1512.04202; "
        "Li (2019), arXiv 1809.10232"
    ),
    description=(
        "PSGD Kron: momentum preconditioned by Kronecker factors fitted online to whiten the gradient "
        "(pytorch-optimizer; psgd-jax)."
    ),
    Hyperparams=KronHyperparams,
    search_space={
        "lr": LogUniform(1e-4, 1e-2),
        "b1": OneMinusLogUniform(0.01, 0.2),
        "weight_decay": LogUniform(1e-4, 0.1),
    },
    capabilities=Capabilities(step_along_direction=False, stateful_direction=True, cross_backend_parity=False),
    backends=("torch", "jax"),
)
