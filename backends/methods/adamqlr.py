"""AdamQLR: Adam's direction with a damped quadratic-model step size (Clarke & Hernández-Lobato).

Update rule in the mean-loss convention (``L = (1/B) sum_n l_n``, ``g = grad L``), one step on
batch ``B_t`` (paper Algorithm 1; official code ``rmclarke/AdamThroughASecondOrderLens``,
``optimisers.py::WrappedQuadraticLROptimiser.step``)::

    m_t = b1 m_{t-1} + (1 - b1) g_t,   v_t = b2 v_{t-1} + (1 - b2) g_t^2            (optax scale_by_adam)
    d_t = (m_t / (1 - b1^t)) / (sqrt(v_t / (1 - b2^t)) + eps)                        (ascent-signed)
    q_t = d_t^T C d_t        C = GGN/Fisher G = (1/B) sum_n Jz_n^T Q_n Jz_n  (one JVP)
                             or the Hessian of L (``curvature="hessian"``, forward-over-reverse)
    s_t = -(g_t^T d_t) / (q_t + lam_t ||d_t||^2)                                      (usually < 0)
    s_t = clip(s_t, -lr_clipping, lr_clipping)                                        (optional)
    theta_{t+1} = theta_t + s_t d_t                                                   (lr = -s_t)
    M_t = 1/2 s_t^2 (q_t + lam_t ||d_t||^2) + s_t g_t^T d_t        (model change, lam INCLUDED)
    rho_t = (L(theta_{t+1}; B_t) - L(theta_t; B_t)) / M_t                             (one extra forward)
    lam_{t+1} = omega_dec lam_t if rho_t > 3/4;  omega_inc lam_t if rho_t < 1/4;  max(lam, 1e-8)

Mapping to the paper and its code: the paper's ``alpha`` is our ``-s`` (reported as ``lr``);
``damping`` is the paper's ``lambda`` added to the mean-loss curvature (their losses are batch
means too: ``optax`` CE mean, and MSE ``l2_loss`` whose ``1/2 (z - y)^2`` matches our
``0.5 ||z - y||^2`` with ``Q = I``). The damping is adapted every step (no interval) and a NaN
``rho`` leaves it unchanged, as the code's nested ``jnp.where`` does. ``s`` is not forced
negative. The direction (``direction()``) is ``d_t`` with this batch folded into the moments.

Presets (docs/methods.md, "AdamQLR"): ``untuned`` = the defaults, the camera-ready
"AdamQLR (Untuned)" (``configs/AdamQLR_NoHPO_NoLRClipping.yaml``: ``lam0 = 1e-3``,
``omega_dec = 0.5``, ``omega_inc = 2``, Fisher, no LR clipping); ``tuned`` = the starting point of
the tuned runs (``AdamQLR_Damped_NoLRClipping.yaml``: ``lam0 = 1``, ``0.95``, ``1.0526``);
``untuned-lr-clipping`` and ``tuned-lr-clipping`` the arXiv-v1 variants with ``alpha_max`` 0.1
and 0.03. The paper's untuned batch size (3200) is a suite property, not a hyperparameter here.

Not implemented (unused by the paper's configs): ``lr_ema``, ``lr_curvature_ema``, gradient and
update norm clipping, the envelope schedule, weight decay, Adam-based damping curvature.

References: Clarke & Hernández-Lobato, "Adam through a Second-Order Lens", arXiv:2310.14963,
Algorithm 1; Kingma & Ba (2015), Algorithm 1; Martens & Grosse (2015), Sec. 6.5 (the LM rule).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from backends.damping import LMRule
from backends.spec import Capabilities, LogUniform, MethodCard, hparam

#: Where AdamQLR's defaults come from (docs/methods.md, "AdamQLR").
UNTUNED = "Clarke & Hernandez-Lobato (2024), camera-ready 'AdamQLR (Untuned)' (configs/AdamQLR_NoHPO_NoLRClipping.yaml)"
OPTAX_ADAM = "optax.scale_by_adam defaults b1 = 0.9, b2 = 0.999, eps = 1e-8 (AdamQLR's Adam direction)"


@dataclass(frozen=True)
class AdamQLRHyperparams:
    b1: float = hparam(
        0.9,
        doc="Adam first-moment decay beta1",
        low=0.0,
        high=1.0,
        high_inclusive=False,
        provenance="library",
        source=OPTAX_ADAM,
    )
    b2: float = hparam(
        0.999,
        doc="Adam second-moment decay beta2",
        low=0.0,
        high=1.0,
        high_inclusive=False,
        provenance="library",
        source=OPTAX_ADAM,
    )
    eps: float = hparam(1e-8, doc="Adam denominator epsilon", low=0.0, provenance="library", source=OPTAX_ADAM)
    damping: float = hparam(
        1e-3,
        doc="initial Tikhonov damping lambda_0 of the quadratic model (mean-loss convention)",
        low=0.0,
        provenance="paper",
        source=UNTUNED + ": lam0 = 1e-3",
    )
    adaptive_damping: bool = hparam(
        True,
        doc="adapt lambda every step by the Levenberg-Marquardt rule",
        provenance="paper",
        source="Clarke & Hernandez-Lobato (2024), Algorithm 1: LM damping adapted every step",
    )
    damping_decrease: float = hparam(
        0.5,
        doc="omega_dec: lambda multiplier when rho > 3/4",
        low=0.0,
        high=1.0,
        low_inclusive=False,
        provenance="paper",
        source=UNTUNED + ": omega_dec = 0.5",
    )
    damping_increase: float = hparam(
        2.0,
        doc="omega_inc: lambda multiplier when rho < 1/4",
        low=1.0,
        provenance="paper",
        source=UNTUNED + ": omega_inc = 2",
    )
    min_damping: float = hparam(
        1e-8,
        doc="lower clip of lambda",
        low=0.0,
        provenance="library",
        source="AdamQLR code (rmclarke/AdamThroughASecondOrderLens, optimisers.py): max(lambda, 1e-8)",
    )
    max_damping: float | None = hparam(
        None,
        doc="upper clip of lambda (None: no upper clip)",
        low=0.0,
        provenance="library",
        source="AdamQLR code (optimisers.py): no upper clip of lambda",
    )
    curvature: str = hparam(
        "fisher",
        doc="curvature of the quadratic model: 'fisher' (GGN, one JVP) or 'hessian' (forward-over-reverse HVP)",
        choices=("fisher", "hessian"),
        provenance="paper",
        source=UNTUNED + ": Fisher (GGN) curvature",
    )
    saddle_free: bool = hparam(
        False,
        doc="use |q + lambda ||d||^2| in the step size (the code's saddle_free_lr_curvature)",
        provenance="library",
        source="AdamQLR code (optimisers.py): saddle_free_lr_curvature off",
    )
    lr_clipping: float | None = hparam(
        None,
        doc="clip the step size s to [-lr_clipping, lr_clipping] (arXiv v1); None = off",
        low=0.0,
        provenance="paper",
        source=UNTUNED + ": no LR clipping (camera-ready)",
    )


CARD = MethodCard(
    name="adamqlr",
    paper="Clarke & Hernández-Lobato (2024), Adam through a Second-Order Lens, arXiv:2310.14963",
    description=(
        "Adam's direction with the step size minimising a Levenberg-Marquardt-damped quadratic model "
        "(one GGN-vector product per step)."
    ),
    Hyperparams=AdamQLRHyperparams,
    # Tuned-track search space (harness/tuning.py; docs "tuning"): the paper's own ASHA space
    # (``hyperparameter_optimisation.py``; docs/methods.md, "AdamQLR"), unchanged: lam0 logU[1e-8, 1],
    # omega_dec logU[0.5, 1], omega_inc logU[1, 4]. Its batch-size axis {50 ... 3200} is a suite
    # property here, and alpha_max logU[1e-4, 10] applies only to the arXiv-v1 LR-clipping variant
    # (off in the camera-ready and in our defaults), so neither is searched.
    search_space={
        "damping": LogUniform(1e-8, 1.0),
        "damping_decrease": LogUniform(0.5, 1.0),
        "damping_increase": LogUniform(1.0, 4.0),
    },
    # The update is s * d with d the direction; lr = -s.
    capabilities=Capabilities(step_along_direction=True),
    presets={
        "untuned": {},
        "tuned": {"damping": 1.0, "damping_decrease": 0.95, "damping_increase": 1.0526},
        "untuned-lr-clipping": {"lr_clipping": 0.1},
        "tuned-lr-clipping": {
            "damping": 1.0,
            "damping_decrease": 0.95,
            "damping_increase": 1.0526,
            "lr_clipping": 0.03,
        },
    },
)


def lm_rule(hp: AdamQLRHyperparams) -> LMRule:
    """AdamQLR's LM constants; NaN rho leaves lambda unchanged (the code's ``jnp.where``)."""
    return LMRule(
        decrease=hp.damping_decrease,
        increase=hp.damping_increase,
        min_damping=hp.min_damping,
        max_damping=math.inf if hp.max_damping is None else hp.max_damping,
        nan_rho="keep",
    )
