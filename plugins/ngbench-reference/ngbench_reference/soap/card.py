"""SOAP: Adam run in the eigenbasis of Shampoo's preconditioner (Vyas et al. 2024).

For each weight matrix ``W`` (``d_out x d_in``), with ``g`` the gradient of the mean batch loss::

    L_t = b_s L_{t-1} + (1 - b_s) g g^T,   R_t = b_s R_{t-1} + (1 - b_s) g^T g      (Shampoo's factors)
    Q_L, Q_R: eigenvectors of L and R, refreshed every ``precondition_frequency`` steps
              (one QR-based power step on the previous basis)
    g' = Q_L^T g Q_R                                  (gradient rotated into the eigenbasis)
    m_t = b1 m_{t-1} + (1 - b1) g,  v_t = b2 v_{t-1} + (1 - b2) g'^2    (Adam's moments there)
    W_t = W_{t-1} - lr Q_L (m'_t / (sqrt(v_t) + eps)) Q_R^T - lr wd W_{t-1}

with bias correction; one-dimensional parameters (biases) take plain Adam, and the first step only
builds ``L``, ``R`` and the bases (no parameter moves, as in the paper's code; the wrapper's
``warmup_steps=1`` lets ``direction`` step past it). The moments are element-wise, so the update
does not scale with the loss: the mean/sum convention changes neither ``lr`` nor ``eps``.

Library: ``pytorch_optimizer.SOAP`` 4.1.0 (eager PyTorch; ``heavyball``'s SOAP compiles its update
with ``torch.compile``, which the execution model forbids). PyTorch only: no maintained JAX SOAP
(optax 0.2.8 has none).

Defaults (``paper``): Vyas et al., Sec. 6: lr 3e-3, betas (0.95, 0.95), Shampoo beta = b2, weight
decay 0.01, preconditioner frequency 10, eps 1e-8.

Reference: N. Vyas, D. Morwani, R. Zhao, M. Kwun, I. Shapira, D. Brandfonbrener, L. Janson,
S. Kakade, "SOAP: Improving and Stabilizing Shampoo using Adam", ICLR 2025 (arXiv 2409.11321),
Algorithm 3.
"""

from __future__ import annotations

from dataclasses import dataclass

from backends.spec import Capabilities, Choice, LogUniform, MethodCard, OneMinusLogUniform, hparam

_SRC = "Vyas et al. (2024), Sec. 6 (= pytorch_optimizer 4.1.0 SOAP defaults)"


@dataclass(frozen=True)
class SOAPHyperparams:
    lr: float = hparam(3e-3, doc="step size", low=0.0, low_inclusive=False, provenance="paper", source=_SRC)
    b1: float = hparam(
        0.95, doc="first-moment decay", low=0.0, high=1.0, high_inclusive=False, provenance="paper", source=_SRC
    )
    b2: float = hparam(
        0.95,
        doc="second-moment (and factor) decay",
        low=0.0,
        high=1.0,
        high_inclusive=False,
        provenance="paper",
        source=_SRC,
    )
    weight_decay: float = hparam(0.01, doc="decoupled weight decay", low=0.0, provenance="paper", source=_SRC)
    precondition_frequency: int = hparam(
        10, doc="steps between eigenbasis refreshes", low=1, provenance="paper", source=_SRC
    )
    eps: float = hparam(1e-8, doc="Adam epsilon", low=0.0, provenance="paper", source=_SRC)


CARD = MethodCard(
    name="soap",
    paper="Vyas et al. (2024), SOAP: Improving and Stabilizing Shampoo using Adam, arXiv 2409.11321, Algorithm 3",
    description=(
        "SOAP: Adam in the eigenbasis of Shampoo's Kronecker factors, refreshed periodically (pytorch-optimizer)."
    ),
    Hyperparams=SOAPHyperparams,
    search_space={
        "lr": LogUniform(3e-4, 3e-2),
        "b1": OneMinusLogUniform(0.02, 0.2),
        "b2": OneMinusLogUniform(0.002, 0.1),
        "weight_decay": LogUniform(1e-4, 0.1),
        "precondition_frequency": Choice((1, 10, 100)),
    },
    capabilities=Capabilities(step_along_direction=False, stateful_direction=True),
    backends=("torch",),
)
