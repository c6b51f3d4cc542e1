"""Muon: momentum orthogonalised by Newton-Schulz, on hidden weight matrices (Jordan et al. 2024).

For each hidden weight matrix ``W`` (``backends.param_groups``: the weights of tapped layers but
the output layer; a Conv2d weight as ``(c_out, c_in kh kw)``), with ``g`` the gradient of the
mean batch loss (ngbench's convention)::

    m_t = mu m_{t-1} + g_t                           (momentum buffer)
    u_t = g_t + mu m_t        (Nesterov; m_t without)
    O_t = NS5(u_t)            five quintic Newton-Schulz iterations, coefficients (3.4445, -4.775,
                              2.0315), on u / ||u||_F: an approximate U V^T of u's SVD
    W_t = W_{t-1} (1 - lr wd) - lr sqrt(max(1, d_out / d_in)) O_t

Everything else (biases, the output layer when ``head_optimizer = "adamw"``) takes AdamW with its
own step size ``adam_lr``, as Jordan et al. train embeddings, heads and gains. Because ``O_t``
has unit singular values the update does not scale with the loss: the mean/sum convention does
not change ``lr``.

Libraries: PyTorch ``torch.optim.Muon`` (torch 2.13) plus ``torch.optim.AdamW``; it runs the
Newton-Schulz iteration in bfloat16 (as the reference code does) whatever the working dtype,
which makes a CPU step expensive (bfloat16 matrix products are slow on CPUs). JAX
``optax.contrib.muon`` (optax 0.2.8) with its built-in Adam for the non-matrix leaves; it
iterates in the working dtype. The two libraries differ in that precision and so promise no
float64 parity; ``tests/test_reference_rows.py`` compares them on a quadratic.

Defaults (``paper``): Jordan's reference ``muon.py``: lr 0.02, momentum 0.95, Nesterov, five
steps, no weight decay; its auxiliary Adam: lr 3e-4, betas (0.9, 0.95), eps 1e-10.

Reference: K. Jordan, Y. Jin, V. Boza, J. You, F. Cesista, L. Newhouse, J. Bernstein, "Muon: An
optimizer for hidden layers in neural networks", 2024, kellerjordan.github.io/posts/muon.
"""

from __future__ import annotations

from dataclasses import dataclass

from backends.spec import Capabilities, Choice, LogUniform, MethodCard, OneMinusLogUniform, hparam

_SRC = "Jordan et al. (2024), reference muon.py"


@dataclass(frozen=True)
class MuonHyperparams:
    lr: float = hparam(
        0.02, doc="Muon step size on hidden matrices", low=0.0, low_inclusive=False, provenance="paper", source=_SRC
    )
    momentum: float = hparam(
        0.95,
        doc="momentum of the Muon buffer",
        low=0.0,
        high=1.0,
        high_inclusive=False,
        provenance="paper",
        source=_SRC,
    )
    nesterov: bool = hparam(True, doc="Nesterov momentum", provenance="paper", source=_SRC)
    ns_steps: int = hparam(5, doc="Newton-Schulz iterations", low=1, high=20, provenance="paper", source=_SRC)
    weight_decay: float = hparam(
        0.0, doc="decoupled weight decay on matrices", low=0.0, provenance="paper", source=_SRC
    )
    adam_lr: float = hparam(
        3e-4,
        doc="AdamW step size on the other parameters",
        low=0.0,
        low_inclusive=False,
        provenance="paper",
        source=_SRC,
    )
    adam_b1: float = hparam(0.9, doc="AdamW first-moment decay", low=0.0, high=1.0, provenance="paper", source=_SRC)
    adam_b2: float = hparam(
        0.95, doc="AdamW second-moment decay", low=0.0, high=1.0, high_inclusive=False, provenance="paper", source=_SRC
    )
    adam_eps: float = hparam(1e-10, doc="AdamW epsilon", low=0.0, provenance="paper", source=_SRC)
    head_optimizer: str = hparam(
        "adamw",
        doc="optimizer of the output layer's weight (Jordan et al.: AdamW)",
        choices=("adamw", "muon"),
        provenance="paper",
        source=_SRC,
    )


CARD = MethodCard(
    name="muon",
    paper="Jordan et al. (2024), Muon: An optimizer for hidden layers in neural networks",
    description=(
        "Muon: Nesterov momentum orthogonalised by five Newton-Schulz steps on hidden matrices, AdamW on the rest "
        "(torch.optim.Muon; optax.contrib.muon)."
    ),
    Hyperparams=MuonHyperparams,
    search_space={
        "lr": LogUniform(2e-3, 0.2),
        "momentum": OneMinusLogUniform(0.02, 0.2),
        "adam_lr": LogUniform(3e-5, 3e-3),
        "weight_decay": Choice((0.0, 0.01, 0.1)),
    },
    capabilities=Capabilities(step_along_direction=False, stateful_direction=True, cross_backend_parity=False),
)
