"""SINGD: structured inverse-free natural gradient descent (Lin et al. 2024).

Per Linear / Conv2d layer with input ``a`` and output gradient ``e`` of the mean batch loss (the
empirical Fisher: true labels), SINGD keeps factors ``K`` (``d_in x d_in``) and ``C``
(``d_out x d_out``) that approximate the *inverse* square roots of K-FAC's factors, updated without
any matrix inverse, every ``T`` steps (paper, Fig. 1; schematically, the library's dimension
scalings and the damping of the ``C`` update omitted)::

    H_K = K^T (a a^T) K + lambda K^T K - I,   m_K <- alpha1 m_K + H_K / 2,
    K <- K (I - beta1 m_K)                    (and likewise C from e e^T)
    m_W <- alpha2 m_W + K K^T G C C^T + gamma W,   W <- W - beta2 m_W

with ``beta1 = lr_cov``, ``beta2 = lr``, ``alpha2 = momentum``, ``lambda = damping``, ``gamma =
weight_decay``. ``structures`` restricts ``K`` and ``C`` (dense, diagonal, block-diagonal,
hierarchical, Toeplitz): the "structured" in the name, which cuts memory and cost. With
``kfac_like = True`` the update approximates K-FAC (their IKFAC).

Library: ``singd.optim.optimizer.SINGD`` 0.0.5 (f-dangel/singd). It hooks the ``nn.Linear`` and
``nn.Conv2d`` modules of an ``nn.Module``: the adapter takes the model from the problem's model
hook (``problem.module_from_flat``), copies the incoming parameters into it, runs the forward and
backward itself (the library's usage) and calls ``optimizer.step()``. Parameters of other modules
(none in the MLP suites; norms, embeddings, Rosenbrock's) are not SINGD's: they get the
update SINGD makes with ``K = C = I``, heavy-ball SGD with the same ``lr``, ``momentum`` and
``weight_decay`` (``torch.optim.SGD``). The state is move-only, as for every wrapped torch optimizer.

Passes: the forward and backward run through the module, not the oracle; the adapter counts them
(one forward, one backward per step). SINGD's curvature uses the same backward (empirical
Fisher), so nothing else is uncounted.

Defaults (``library``): singd 0.0.5's constructor: lr 1e-3, momentum 0.9, damping 1e-3, alpha1 0.5,
lr_cov 1e-2, T 10, dense structures, weight decay 0.

Reference: W. Lin, F. Dangel, R. Eschenhagen, J. Bae, R. E. Turner, A. Makhzani, "Structured
Inverse-Free Natural Gradient Descent: Memory-Efficient & Numerically-Stable KFAC", ICML 2024
(arXiv 2312.05705).
"""

from __future__ import annotations

from dataclasses import dataclass

from backends.spec import Capabilities, Choice, LogUniform, MethodCard, OneMinusLogUniform, hparam

_SRC = "singd 0.0.5, SINGD constructor defaults"
STRUCTURES = ("dense", "diagonal", "block30diagonal", "hierarchical15_15", "triltoeplitz", "triutoeplitz")


@dataclass(frozen=True)
class SingdHyperparams:
    lr: float = hparam(
        1e-3, doc="beta2: parameter step size", low=0.0, low_inclusive=False, provenance="library", source=_SRC
    )
    momentum: float = hparam(
        0.9,
        doc="alpha2: momentum of the parameter update",
        low=0.0,
        high=1.0,
        high_inclusive=False,
        provenance="library",
        source=_SRC,
    )
    damping: float = hparam(
        1e-3,
        doc="lambda: damping in the factor updates",
        low=0.0,
        low_inclusive=False,
        provenance="library",
        source=_SRC,
    )
    alpha1: float = hparam(
        0.5,
        doc="momentum of the factor updates",
        low=0.0,
        high=1.0,
        high_inclusive=False,
        provenance="library",
        source=_SRC,
    )
    lr_cov: float = hparam(
        1e-2, doc="beta1: factor step size", low=0.0, low_inclusive=False, provenance="library", source=_SRC
    )
    T: int = hparam(10, doc="steps between factor updates", low=1, provenance="library", source=_SRC)
    weight_decay: float = hparam(0.0, doc="gamma: L2 weight decay", low=0.0, provenance="library", source=_SRC)
    structure: str = hparam(
        "dense", doc="structure of both factors K and C", choices=STRUCTURES, provenance="library", source=_SRC
    )
    kfac_like: bool = hparam(False, doc="IKFAC: the update close to K-FAC", provenance="library", source=_SRC)


CARD = MethodCard(
    name="singd",
    paper="Lin, Dangel, Eschenhagen, Bae, Turner & Makhzani (2024), SINGD, ICML, arXiv 2312.05705",
    description="SINGD: inverse-free, structured Kronecker-factored natural gradient (singd 0.0.5).",
    Hyperparams=SingdHyperparams,
    # The paper tunes beta2 (lr), beta1 (lr_cov), lambda and gamma on log grids and compares structures.
    search_space={
        "lr": LogUniform(1e-4, 1e-1),
        "lr_cov": LogUniform(1e-4, 1e-1),
        "damping": LogUniform(1e-5, 1e-1),
        "momentum": OneMinusLogUniform(0.01, 0.5),
        "structure": Choice(("dense", "diagonal", "hierarchical15_15")),
    },
    capabilities=Capabilities(step_along_direction=False, stateful_direction=True, consumes_state=True),
    backends=("torch",),
)
