"""Approximation quality: how close each method's direction is to the natural gradient.

The iEF paper's evaluation framework (Wu, Yu, Zhang & Woodland, NeurIPS 2024, arXiv 2406.06420,
Sec. 6 and App. F; docs/approximation.md) as a benchmark track. Along a reference
trajectory (AdamW by default), at ``N`` checkpoints evenly spaced from the initial parameters
(0 %) to the end of the run (100 %), every method computes its ``direction`` on the same ``M``
batches, and for each direction ``d`` (ascent-signed, ``backends.spec``) we record

* the indicator (Eqn 15)::

      gamma(d) = sqrt(d^T G d) / |d^T g|

  with ``g`` the mean-loss gradient and ``G`` the batch GGN (= Fisher for our likelihoods) of
  the same batch, ``d^T G d`` from ONE ``oracle.ggn_quad`` (a JVP) and ``d^T g`` in float64
  from the flat vectors. ``gamma(c d) = gamma(d)`` for every ``c != 0``; by Cauchy-Schwarz in
  the ``G`` inner product ``gamma(d)^2 >= 1 / (g^T G^+ g)``, with equality iff ``d`` is parallel
  to ``G^+ g`` (Eqn 16, App. F.2), and ``1 / (2 gamma^2)`` is the loss decrease of the best step
  along ``d`` under the quadratic model (Eqn 59);
* ``gamma / gamma_SGD`` with ``gamma_SGD = gamma(g)`` on the same batch (the paper's ratios,
  App. F.1: ``gamma`` is not invariant to rescaling ``G`` and ``g``; the ratio is); below 1 is
  closer to the natural gradient than SGD;
* ``d^T g`` (signed: with the ascent convention a descent direction has ``d^T g > 0``),
  ``d^T G d``, ``||d||`` (the direction before its step size);
* the per-sample gradient-norm imbalance ``max_n ||grad l_n|| / min_n ||grad l_n||`` of the batch
  (the paper's explanation of EF's failure, Sec. 4 and Fig. 2);
* where ``B*C*P`` is small enough (:data:`EXACT_MAX_ENTRIES`), the cosine and the relative error
  ``||d - d_NG|| / ||d_NG||`` to the exact damped natural gradient ``d_NG = (G + lam I)^{-1} g``
  solved in output space (:class:`OutputSpaceNG`), and the exact direction itself as the
  pseudo-method :data:`EXACT_METHOD`.

Sign convention. Like the paper (Eqn 15) ``gamma`` uses ``|d^T g|``, so it judges the line
through ``d`` (the best step may have either sign); the released code divides by the signed
``d^T g``. A direction an optimizer would step along uphill (``d^T g < 0`` here) is flagged in
``extra["descent"] = False`` and counted in the summary, not hidden in ``gamma``.

Stateful methods. A method's state (K-FAC's factor averages and inverses, AdamQLR's and AdamW's
moments, FNGD's coefficient table, EGN's momentum) is fed along the reference trajectory: at
each reference step ``t`` the method takes ``step(problem, theta_ref_t, state, batch_t)`` and only
its new state is kept (its parameters are discarded), so at a checkpoint its state is what it
would be had it been looking at the reference parameters all along. ``state_window = W`` feeds
only the last ``W`` steps before each checkpoint from a fresh ``init`` (cheaper on long runs):
EMAs with short memory (K-FAC's 0.95) are then nearly unchanged, Adam's second moments (0.999)
are a shorter average, and FNGD becomes "FNGD whose first epoch began ``W`` steps ago" (its table
holds coefficients solved near the checkpoint, not in the run's first epoch). ``None`` (the
default) feeds the whole trajectory: one step per reference step and stateful method. A
method's state needs no feeding when every field besides ``hparams`` is a counter (a Python or
0-d integer) -- EF, iEF and SF here; a capability ``stateful_direction`` on the adapter, when
present, overrides this rule. Directions at a checkpoint never advance the fed state
(contract), so all ``M`` batches see the same state. A feeding step that raises (EGN's float32
Cholesky at a tiny damping, say) is skipped: the last good state is kept, and the method's rows
carry ``extra["feed_errors"]`` (the count) and ``extra["feed_error"]`` (the first message).

Damping. ``damping=None`` evaluates every method at its own hyperparameters. A damping sweep
(the paper's Fig. 3, Sec. 7 E3) evaluates every method whose hyperparameters include ``damping``
at each ``lam`` (state fed separately per ``lam``; a boolean ``adaptive_damping`` is switched off
so that ``lam`` is the damping the direction uses); the others appear once with damping NULL.
``lam`` is this benchmark's mean-loss convention (``B lam`` in sample space); the paper's
sum-convention ``lam_p = B lam`` and its released code's ``lam_c = lam / B`` (docs/conventions.md,
"Damping"). The exact NG of a row is taken at the damping its direction used: the method's
current damping (a ``damping`` field of its state, e.g. K-FAC's Levenberg-Marquardt value), else
the row's ``damping``, else ``lam -> 0`` (``G^+ g``).

Batches. Checkpoint ``k`` at step ``s_k`` uses the training batches of steps ``s_k, ...,
s_k + M - 1`` of the run's data order (with their label-sampling noise): the same batches for
every method, the next ones the reference would see. (The paper used 100 random batches per
checkpoint, Sec. 7 E1.) Unlike the paper's evaluation code we do not drop near-duplicate
per-sample gradients for every method: ``g`` and ``G`` are those of the full batch, and EF/iEF
apply their own ``dedup_threshold`` as they would in training.

Modules: :mod:`~harness.approx.exact` (the indicator, the exact natural gradient, per-sample
norms), :mod:`~harness.approx.planning` (spec, plan, variants, feeding lanes),
:mod:`~harness.approx.evaluation` (:func:`evaluate`), :mod:`~harness.approx.results` (the result,
its summaries and its storage) and :mod:`~harness.approx.isolation` (an evaluation in a scrubbed
worker).
"""

from harness.approx.evaluation import EXACT_METHOD, LOG_POINTS, evaluate
from harness.approx.exact import (
    EXACT_MAX_ENTRIES,
    EXACT_MAX_ROWS,
    IMBALANCE_MAX_ENTRIES,
    OutputSpaceNG,
    checkpoint_steps,
    exact_natural_gradient,
    exact_size,
    imbalance,
    indicator,
    output_hessian,
    per_sample_grad_norms,
    slice_batch,
)
from harness.approx.isolation import evaluate_isolated, evaluate_request
from harness.approx.planning import ApproxSpec, Plan, Variant, build_variants, needs_feeding, prepare, state_damping
from harness.approx.results import (
    COLUMNS,
    REFERENCE_ROLE,
    SWEEP_KIND,
    ApproxResult,
    non_descent_counts,
    store_result,
    summary,
)

__all__ = [
    "COLUMNS",
    "EXACT_MAX_ENTRIES",
    "EXACT_MAX_ROWS",
    "EXACT_METHOD",
    "IMBALANCE_MAX_ENTRIES",
    "LOG_POINTS",
    "REFERENCE_ROLE",
    "SWEEP_KIND",
    "ApproxResult",
    "ApproxSpec",
    "OutputSpaceNG",
    "Plan",
    "Variant",
    "build_variants",
    "checkpoint_steps",
    "evaluate",
    "evaluate_isolated",
    "evaluate_request",
    "exact_natural_gradient",
    "exact_size",
    "imbalance",
    "indicator",
    "needs_feeding",
    "non_descent_counts",
    "output_hessian",
    "per_sample_grad_norms",
    "prepare",
    "slice_batch",
    "state_damping",
    "store_result",
    "summary",
]
