"""K-FAC: Kronecker-factored approximate curvature (Martens & Grosse 2015; KFC, Grosse & Martens 2016).

Update rule in the mean-loss convention. The objective is ``h(theta) = L(theta) + eta/2 ||theta||^2``
(``L = (1/B) sum_n l_n``, ``eta = l2_reg``, the paper's L2 term; 0 by default), ``grad h = g + eta theta``.
Step ``t`` (0-based) on batch ``B_t``::

    factors    A_i, G_i from this batch (``backends.torch.kfac_factors``): A = E[abar abar^T],
               G = E[e e^T] with e = dl(y^)/ds for labels y^ ~ p(y|x) drawn from the batch noise
               (Sec. 5; ``estimator="fisher_gradients"``), or exactly over labels (``fisher_exact``,
               C backward passes), or by curvature propagation (``curvature_prop``, kfac-jax's default)
    EMA        F <- (1 - w_k) F + w_k F_new, w_k = max(1/k, 1 - curvature_ema)   (paper, Sec. 5)
               or w_k = (1 - ema) / (1 - ema^k)                                   (kfac-jax, normalised)
               on statistics steps t % stats_update_period == 0, k = t // stats_update_period + 1
    inverses   refreshed when t < inverse_warmup_steps or t % inverse_update_period == 0 (Sec. 8),
               factored Tikhonov with pi (Sec. 6.3) at gamma^2 = lam + eta, or exact (eigenbasis)
    proposal   p = Ft^{-1} (g + eta theta)             (block diagonal, Sec. 4.2; ``direction()``)
    step       delta = -alpha p + mu delta_prev with (alpha, mu) minimising
               M(delta) = grad h^T delta + 1/2 delta^T (C + (lam + eta) I) delta
               over span{p, delta_prev}, C the exact GGN of the batch (2 JVPs; Sec. 7, the 2x2 system);
               at t = 0 delta_prev = 0 and alpha = grad h^T p / (p^T (C + (lam + eta) I) p)
    LM         every T1 = damping_adaptation_interval steps (when (t + 1) % T1 == 0):
               rho = (h(theta + delta) - h(theta)) / M(delta)  (one extra forward; M includes lam
               when include_damping_in_quad_change), lam <- omega lam if rho > 3/4, lam / omega if
               rho < 1/4, omega = damping_adaptation_decay ** T1 (Sec. 6.5), clipped to [min, max]
    theta <- theta + delta

``direction()`` is the proposal ``p`` (ascent-signed) with this batch folded into the factor
averages and the inverses the step would use (fresh state: this batch's factors only, inverted
at the current lambda); it does not advance the state.

Mapping to the paper: the paper's ``lambda`` is our ``damping`` (Tikhonov on the mean-loss Fisher,
which is the paper's convention: its objective is the average loss), ``eta`` is ``l2_reg``; its
``F`` for the quadratic model is the exact Fisher (= GGN for our likelihoods) on the batch. The
paper computes statistics and the quadratic model on subsets of the batch (Sec. 8: ``tau_1``,
``tau_2``); we use the whole batch. The separate ``gamma`` adaptation of Sec. 6.6 (3 inversions
every T2 steps) is not implemented: ``gamma^2 = lam + eta`` as kfac-jax does. The paper's
inversions at iterations ``k <= 3`` and ``k % T3 == 0`` (1-based) map to our 0-based ``t < 3`` or
``t % T3 == 0``.

Mapping to kfac-jax (``google-deepmind/kfac-jax`` ``kfac_jax/_src/optimizer.py``): ``damping`` is
``initial_damping`` (their precon identity weight ``l2_reg + damping * precon_damping_mult`` with
mult 1); ``lr = -w0`` and ``momentum = w1`` as their stats; ``_compute_new_damping_and_rho`` is
:func:`backends.damping.lm_update` with ``decrease = decay ** interval``; the normalised EMA is
their ``WeightedMovingAverage``. Not implemented: ``num_burnin_steps`` (their burn-in consumes
extra batches before the first step; our adapter sees one batch per step) and step rejection.
With fixed (non-adaptive) lr and momentum, the LM model change uses the exact GGN (their
``always_use_exact_qmodel_for_damping_adjustment=True``).

Parameters outside Linear/Conv2d layers (``layout.untapped``) get the damped identity block,
``(0 + (lam + eta) I)^{-1}`` (``untapped="damped_identity"``), i.e. the block-diagonal damped
approximation with no curvature estimate for them, or the plain gradient (``"identity"``).

Defaults: the paper's algorithm (sampled-label Fisher, its EMA, T3 = 20 with 3 warm-up
inversions, adaptive lr and momentum, LM every 5 steps with (19/20)^5, lambda in the model
change) with kfac-jax's ``lambda_0 = 1`` and ``eta = 0``, and a damping floor
``min_damping = 1e-2`` calibrated on the held-out suites (docs/defaults.md; evidence in
:data:`MIN_DAMPING_EVIDENCE`). The paper has no floor and kfac-jax's is 1e-8, but the LM rule
judges each step on the batch it was computed on, so on small batches (B = 32) rho stays near 1
and lambda decays geometrically (x0.77 every 5 steps) until the floor holds it: over the grid
1e-8 .. 0.1 the floor 1e-2 has the best median rank (best on the biomass and shapes suites;
the wine suite never reaches a floor in 200 steps), floors of 1e-4 and below are
indistinguishable from none there, and the shapes ConvNet's validation loss is 0.96 without a
floor against 0.75 with 1e-2. The presets keep their sources' floors. The fixed learning rate
(used only with ``adaptive_lr`` off) is calibrated likewise (:data:`LR_EVIDENCE`).

Presets: ``paper`` (Martens & Grosse 2015, Sec. 13 / Algorithm 2: lam0 = 150, eta = 1e-5, EMA
min(1 - 1/k, 0.95), T3 = 20 with inversions at the first 3 steps, T1 = 5, omega1 = (19/20)^5,
lam in the model change); ``kfac-jax`` (that library's constructor defaults: curvature
propagation, normalised EMA 0.95, inverse period 5, interval 5, decay 0.9, min damping 1e-8,
lam excluded from the model change; adaptive lr/momentum/damping switched on as in its
examples and AdamQLR's K-FAC baseline, ``initial_damping = 1``); ``amortised`` (statistics every
``stats_update_period = 10`` steps, the factor period of kfac-pytorch's ImageNet ResNet example,
``--kfac-factor-update-steps 10``, with that library's fixed learning rate instead of the
quadratic model, whose JVPs cost more than the gradient, at the card's held-out ``lr`` and
momentum 0; inverses at the paper's ``T3 = 20`` and the LM damping kept, one JVP and one forward
every ``T1`` steps). The same example refreshes inverses every 100 steps under a fixed damping;
with the LM damping a 100-step-old inverse holds a stale lambda, and on digits-mlp (300 steps,
seed 0, torch) the train loss ends at 2.17 with ``T3 = 100`` against 0.0075 with ``T3 = 20``
(0.0100 at the defaults). For reference, kfac-jax's constructor has ``curvature_update_period
= 1`` and ``inverse_update_period = 5``, kfac-pytorch's ``factor_update_steps =
inv_update_steps = 1``.

Amortised statistics: on a step with ``t % stats_update_period != 0`` no statistics are computed
(no sampled-label backward, no factor products) and the averages are carried over; the
``k``-th estimate folded in has weight ``w_k`` (``k = t // stats_update_period + 1``), as
kfac-jax's ``curvature_update_period`` and kfac-pytorch's ``factor_update_steps`` do.

References: Martens & Grosse, "Optimizing Neural Networks with Kronecker-factored Approximate
Curvature", ICML 2015 (arXiv:1503.05671), Secs. 3-8, 13; Grosse & Martens, "A Kronecker-factored
approximate Fisher matrix for convolution layers", ICML 2016, Sec. 3.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from backends.damping import LMRule
from backends.spec import Capabilities, HeldOutEvidence, LogUniform, MethodCard, hparam

#: ``ngbench calibrate-defaults kfac --hparam min_damping`` on the held-out suites (docs/defaults.md).
MIN_DAMPING_EVIDENCE = HeldOutEvidence(
    method="kfac",
    hparam="min_damping",
    grid=(1e-08, 1e-06, 0.0001, 0.001, 0.01, 0.1),
    suites=("heldout-biomass-mlp", "heldout-shapes-cnn", "heldout-wine-mlp"),
    medians=(
        (0.042071, 0.042071, 0.042071, 0.042336, 0.040853, 0.042192),
        (0.960873, 0.960873, 0.960873, 0.958342, 0.749547, 0.767579),
        (0.155482, 0.155482, 0.155482, 0.155482, 0.155482, 0.155482),
    ),
    seeds=2,
    steps=200,
    chosen=0.01,
)
#: ``ngbench calibrate-defaults kfac --hparam lr --set adaptive_lr=False`` (the fixed learning
#: rate is used only with ``adaptive_lr`` off); ``inf``: both seeds diverged.
LR_EVIDENCE = HeldOutEvidence(
    method="kfac",
    hparam="lr",
    grid=(0.0001, 0.001, 0.01, 0.1),
    suites=("heldout-biomass-mlp", "heldout-shapes-cnn", "heldout-wine-mlp"),
    medians=(
        (0.285006, 0.232866, 0.071552, math.inf),
        (1.777966, 1.578496, 1.087183, 0.919907),
        (0.463274, 0.236287, 0.177507, 0.153157),
    ),
    seeds=2,
    steps=200,
    chosen=0.1,
    fixed=(("adaptive_lr", False),),
)


@dataclass(frozen=True)
class KFACHyperparams:
    damping: float = hparam(
        1.0,
        doc="initial Tikhonov damping lambda_0 on the mean-loss curvature",
        low=0.0,
        low_inclusive=False,
        provenance="library",
        source='kfac-jax initial_damping = 1 as in AdamQLR\'s kfac-jax K-FAC baseline (docs/methods.md, "K-FAC")',
    )
    l2_reg: float = hparam(
        0.0,
        doc="eta: L2 coefficient of the objective, added to its gradient and curvature",
        low=0.0,
        provenance="library",
        source="kfac_jax.Optimizer default l2_reg = 0",
    )
    estimator: str = hparam(
        "fisher_gradients",
        doc="output-gradient factor: 'fisher_gradients' (sampled labels), 'fisher_exact' (C passes), "
        "'curvature_prop' (Rademacher times the Q factor)",
        choices=("fisher_gradients", "fisher_exact", "curvature_prop"),
        provenance="paper",
        source="Martens & Grosse (2015), Sec. 5: G factors from labels sampled from the model",
    )
    curvature_ema: float = hparam(
        0.95,
        doc="decay of the factor moving averages",
        low=0.0,
        high=1.0,
        high_inclusive=False,
        provenance="paper",
        source="Martens & Grosse (2015), Sec. 5: eps_k = min(1 - 1/k, 0.95)",
    )
    ema_mode: str = hparam(
        "paper",
        doc="'paper': weight max(1/k, 1 - ema); 'normalized': kfac-jax's (1 - ema)/(1 - ema^k)",
        choices=("paper", "normalized"),
        provenance="paper",
        source="Martens & Grosse (2015), Sec. 5: the weight max(1/k, 1 - ema)",
    )
    stats_update_period: int = hparam(
        1,
        doc="T_stats: steps between factor-statistics updates (the sampled-label backward and the "
        "factor products run only on update steps; 1 = every step)",
        low=1,
        provenance="paper",
        source="Martens & Grosse (2015), Sec. 5: statistics from every mini-batch",
    )
    inverse_update_period: int = hparam(
        20,
        doc="T3: steps between inverse refreshes",
        low=1,
        provenance="paper",
        source="Martens & Grosse (2015), Sec. 8: T3 = 20",
    )
    inverse_warmup_steps: int = hparam(
        3,
        doc="refresh the inverses at each of the first steps",
        low=0,
        provenance="paper",
        source="Martens & Grosse (2015), Sec. 8: inverses at iterations k <= 3",
    )
    damping_form: str = hparam(
        "pi",
        doc="'pi': factored Tikhonov (Sec. 6.3); 'exact': eigenbasis",
        choices=("pi", "exact"),
        provenance="paper",
        source="Martens & Grosse (2015), Sec. 6.3: factored Tikhonov damping with pi",
    )
    adaptive_lr: bool = hparam(
        True,
        doc="learning rate from the quadratic model (Sec. 7)",
        provenance="paper",
        source="Martens & Grosse (2015), Sec. 7: learning rate from the quadratic model",
    )
    lr: float = hparam(
        LR_EVIDENCE.chosen,
        doc="fixed learning rate when adaptive_lr is off",
        low=0.0,
        provenance="held-out",
        source=LR_EVIDENCE,
    )
    adaptive_momentum: bool = hparam(
        True,
        doc="momentum from the quadratic model (Sec. 7)",
        provenance="paper",
        source="Martens & Grosse (2015), Sec. 7: momentum from the quadratic model",
    )
    momentum: float = hparam(
        0.0,
        doc="fixed momentum when adaptive_momentum is off",
        low=0.0,
        high=1.0,
        provenance="paper",
        source="Martens & Grosse (2015), Sec. 6.4: the update without momentum (used with adaptive_momentum off)",
    )
    adaptive_damping: bool = hparam(
        True,
        doc="Levenberg-Marquardt adaptation of lambda (Sec. 6.5)",
        provenance="paper",
        source="Martens & Grosse (2015), Sec. 6.5: Levenberg-Marquardt adaptation of lambda",
    )
    damping_adaptation_interval: int = hparam(
        5,
        doc="T1: steps between damping adaptations",
        low=1,
        provenance="paper",
        source="Martens & Grosse (2015), Sec. 6.5: T1 = 5",
    )
    damping_adaptation_decay: float = hparam(
        0.95,
        doc="omega1 = decay ** T1 (paper 19/20, kfac-jax 0.9)",
        low=0.0,
        high=1.0,
        low_inclusive=False,
        provenance="paper",
        source="Martens & Grosse (2015), Sec. 6.5: omega1 = (19/20)^T1",
    )
    min_damping: float = hparam(
        MIN_DAMPING_EVIDENCE.chosen,
        doc="lower clip of lambda (default floor: see the module docstring; kfac-jax 1e-8)",
        low=0.0,
        provenance="held-out",
        source=MIN_DAMPING_EVIDENCE,
    )
    max_damping: float | None = hparam(
        None,
        doc="upper clip of lambda (None: no upper clip)",
        low=0.0,
        provenance="paper",
        source="Martens & Grosse (2015), Sec. 6.5: no upper clip of lambda",
    )
    include_damping_in_quad_change: bool = hparam(
        True,
        doc="lambda in the model change used for rho (paper: yes; kfac-jax default: no)",
        provenance="paper",
        source="Martens & Grosse (2015), Sec. 6.5: lambda in the model change used for rho",
    )
    untapped: str = hparam(
        "damped_identity",
        doc="preconditioner of parameters outside Linear/Conv2d: 'damped_identity' (1/(lam+eta)) or 'identity'",
        choices=("damped_identity", "identity"),
        provenance="paper",
        source="Martens & Grosse (2015), Sec. 4.2: block-diagonal damped approximation, no curvature outside layers",
    )


CARD = MethodCard(
    name="kfac",
    paper="Martens & Grosse (2015), ICML, arXiv:1503.05671; Grosse & Martens (2016), ICML (KFC)",
    description=(
        "Block-diagonal Kronecker-factored Fisher (Linear and Conv2d) with factored Tikhonov damping, "
        "quadratic-model learning rate and momentum, and Levenberg-Marquardt damping."
    ),
    Hyperparams=KFACHyperparams,
    # Tuned-track search space (harness/tuning.py; docs "tuning"): AdamQLR tunes its kfac-jax
    # baseline's initial damping over logU[1e-8, 1] with kfac-jax's floor min_damping = 1e-8; the
    # paper and kfac-jax's autoencoder example start at lam0 = 150 (example clip [1e-5, 1000])
    # (docs/methods.md, "K-FAC"). With this card's floor min_damping = 1e-2 (module
    # docstring) every lam0 below 1e-2 is clipped to the floor at the first LM adaptation (step
    # 5), so AdamQLR's range would spend 6 of its 8 decades on near-duplicates; the space is
    # lam0 logU[1e-2, 1e3]: from the floor up to the paper's 150 and the example's 1000.
    search_space={"damping": LogUniform(1e-2, 1e3)},
    # Momentum (delta_prev) moves the update off the direction after the first step.
    capabilities=Capabilities(step_along_direction=False, samples_labels=True),
    presets={
        "paper": {
            "damping": 150.0,
            "l2_reg": 1e-5,
            "estimator": "fisher_gradients",
            "curvature_ema": 0.95,
            "ema_mode": "paper",
            "inverse_update_period": 20,
            "inverse_warmup_steps": 3,
            "damping_adaptation_interval": 5,
            "damping_adaptation_decay": 0.95,
            "min_damping": 0.0,
            "include_damping_in_quad_change": True,
        },
        "kfac-jax": {
            "damping": 1.0,
            "l2_reg": 0.0,
            "estimator": "curvature_prop",
            "curvature_ema": 0.95,
            "ema_mode": "normalized",
            "inverse_update_period": 5,
            "inverse_warmup_steps": 0,
            "damping_adaptation_interval": 5,
            "damping_adaptation_decay": 0.9,
            "min_damping": 1e-8,
            "include_damping_in_quad_change": False,
        },
        # kfac-pytorch's ImageNet example's factor period (10) and its fixed learning rate (no
        # quadratic model: its JVPs cost more than an SGD step); the card's held-out lr, the
        # paper's T3 = 20 and the LM damping (module docstring).
        "amortised": {
            "stats_update_period": 10,
            "adaptive_lr": False,
            "adaptive_momentum": False,
        },
    },
)


def ema_weight(k: int, hp: KFACHyperparams) -> float:
    """Weight of the ``k``-th (1-based) factor estimate in the moving average.

    ``paper``: ``1 - eps_k`` with ``eps_k = min(1 - 1/k, ema)``; ``normalized``: kfac-jax's running
    weight ``w_k = ema w_{k-1} + 1`` gives ``1 / w_k = (1 - ema) / (1 - ema^k)``.
    """
    ema = hp.curvature_ema
    if hp.ema_mode == "paper":
        return max(1.0 / k, 1.0 - ema)
    return 1.0 if ema == 0.0 else (1.0 - ema) / (1.0 - ema**k)


def update_stats(t: int, hp: KFACHyperparams) -> bool:
    """Whether step ``t`` (0-based) computes this batch's factor statistics and folds them into
    the averages (``t % T_stats == 0``; kfac-jax ``curvature_update_period``, kfac-pytorch
    ``factor_update_steps``). Arithmetic only, so it holds for a traced JAX counter too."""
    return t % hp.stats_update_period == 0


def estimate_count(t: int, hp: KFACHyperparams) -> int:
    """The 1-based count ``k`` of the estimate folded in at statistics step ``t``:
    ``t // T_stats + 1`` (``t + 1`` with statistics every step), the ``k`` of :func:`ema_weight`."""
    return t // hp.stats_update_period + 1


def refresh_inverses(t: int, hp: KFACHyperparams) -> bool:
    """Whether step ``t`` (0-based) recomputes the damped factor inverses."""
    return t < hp.inverse_warmup_steps or t % hp.inverse_update_period == 0


def adapt_damping(t: int, hp: KFACHyperparams) -> bool:
    """Whether step ``t`` (0-based) adapts lambda (kfac-jax: ``(t + 1) % interval == 0``)."""
    return hp.adaptive_damping and (t + 1) % hp.damping_adaptation_interval == 0


def lm_rule(hp: KFACHyperparams) -> LMRule:
    """``omega1 = decay ** T1`` down for rho > 3/4, up by ``1/omega1`` for rho < 1/4; NaN raises."""
    omega = hp.damping_adaptation_decay**hp.damping_adaptation_interval
    return LMRule(
        decrease=omega,
        increase=1.0 / omega,
        min_damping=hp.min_damping,
        max_damping=math.inf if hp.max_damping is None else hp.max_damping,
    )
