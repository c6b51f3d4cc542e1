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
"""

from __future__ import annotations

import dataclasses
import math
import time
import traceback
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd

from backends.spec import Adapter, Batch, HyperparameterError, hparam_fields, hparams_dict
from db.models import APPROX_COLUMNS
from harness import keys
from harness.errors import ConfigError
from harness.registry import adapters as registry_adapters
from harness.registry import backend_module, get_adapter
from harness.runner import RunResult, RunSpec, metric_mode
from suites import get_suite
from suites.spec import Suite

#: ``Run.role`` of the reference trajectory's run (never ranked on the leaderboard).
REFERENCE_ROLE = "approx_reference"
#: ``Sweep.kind`` of an approximation-quality evaluation.
SWEEP_KIND = "approx"
#: Method name of the exact natural-gradient rows (computed, not an adapter).
EXACT_METHOD = "exact_ng"
#: Largest dense output Jacobian (``B*C*P`` float64 entries, ~160 MB) for the exact NG.
EXACT_MAX_ENTRIES = 20_000_000
#: Largest output-space system (``B*C`` rows) for the exact NG.
EXACT_MAX_ROWS = 4096
#: Per-sample gradients are formed in chunks of at most this many entries (``rows * P``).
IMBALANCE_MAX_ENTRIES = 1 << 26
#: Reference batch losses kept per run (evaluations at the checkpoints are all kept).
LOG_POINTS = 250
#: Columns of the rows, in order (the ``approx_quality`` table without ``id``/``run_id``).
COLUMNS: tuple[str, ...] = APPROX_COLUMNS


# --------------------------------------------------------------------------- the indicator


def indicator(dtg: float, dtgd: float) -> float:
    """``gamma = sqrt(d^T G d) / |d^T g|`` (iEF paper Eqn 15); NaN when undefined.

    ``d^T G d`` is a GGN quadratic form, non-negative up to rounding: a tiny negative value is
    read as 0, a clearly negative one (or ``d^T g = 0``) gives NaN.
    """
    if not (math.isfinite(dtg) and math.isfinite(dtgd)) or dtg == 0.0:
        return math.nan
    if dtgd < 0.0:
        if dtgd < -1e-12 * abs(dtg) * abs(dtg):
            return math.nan
        dtgd = 0.0
    return math.sqrt(dtgd) / abs(dtg)


def checkpoint_steps(total_steps: int, checkpoints: int) -> list[int]:
    """Steps ``round(k T / (N - 1))``, ``k = 0 .. N-1`` (0 % .. 100 %), duplicates removed.

    A single checkpoint is the initial point (step 0).
    """
    if checkpoints < 1:
        raise ConfigError(f"checkpoints must be >= 1, got {checkpoints}")
    if checkpoints == 1:
        return [0]
    steps = [round(k * total_steps / (checkpoints - 1)) for k in range(checkpoints)]
    return sorted(set(steps))


def imbalance(norms: np.ndarray) -> float:
    """``max_n ||v_n|| / min_n ||v_n||`` (``inf`` when a sample's vector is exactly zero)."""
    norms = np.asarray(norms, dtype=np.float64)
    if norms.size == 0 or not np.all(np.isfinite(norms)):
        return math.nan
    low = float(norms.min())
    return math.inf if low == 0.0 else float(norms.max()) / low


# --------------------------------------------------------------------------- exact natural gradient


class OutputSpaceNG:
    """Exact damped natural gradient ``(G + lam I)^{-1} g`` of one batch, in float64.

    With ``Jz`` the stacked output Jacobian (``B*C x P``), ``Q = blockdiag(Q_n)`` and ``r`` the
    logit gradients, ``G = (1/B) Jz^T Q Jz`` and ``g = (1/B) Jz^T r``. Factor each ``Q_n = S_n
    S_n^T`` from its eigendecomposition (eigenvalues below ``q_tol`` times the largest are
    numerically null: CE's ``1`` direction, classes with vanishing probability) and take
    ``s_n = S_n^+ r_n`` (exact: ``r_n`` lies in ``range(Q_n)``, ``1^T r_n = 0`` for CE). With
    ``Jt_n = S_n^T Jz_n``, ``G = (1/B) Jt^T Jt`` and ``g = (1/B) Jt^T s``, and the push-through
    identity gives (docs/methods.md, "EGN"; EGN's output-space solve)::

        (G + lam I)^{-1} g = Jt^T (Jt Jt^T + B lam I)^{-1} s
        G^+ g              = Jt^T (Jt Jt^T)^+ s                      (lam -> 0)

    One eigendecomposition ``Jt Jt^T = U diag(w) U^T`` serves every ``lam``; with ``c = U^T s``
    the quadratic terms are closed forms::

        d^T g   = (1/B) sum_i w_i c_i^2 / (w_i + B lam)
        d^T G d = (1/B) sum_i (w_i c_i / (w_i + B lam))^2
        gamma_min^2 = 1 / (g^T G^+ g) = B / sum_{w_i > 0} c_i^2

    Eigenvalues ``w_i <= max(w) * B C * eps`` are treated as exact zeros (``Jt^T u_i = 0``), for
    the damped solve as for the pseudo-inverse.
    """

    def __init__(self, jz: np.ndarray, q: np.ndarray, r: np.ndarray, *, q_tol: float) -> None:
        jz = np.asarray(jz, dtype=np.float64)
        B, C, P = jz.shape
        self.batch_size = B
        w, V = np.linalg.eigh(np.asarray(q, dtype=np.float64))  # (B, C), (B, C, C)
        keep = w > q_tol * np.maximum(w.max(axis=1, keepdims=True), np.finfo(np.float64).tiny)
        root = np.where(keep, np.sqrt(np.where(keep, w, 1.0)), 0.0)
        inv_root = np.where(keep, 1.0 / root.clip(min=np.finfo(np.float64).tiny), 0.0)
        S = V * root[:, None, :]
        s = inv_root * np.einsum("nck,nc->nk", V, np.asarray(r, dtype=np.float64))
        self.jt = np.einsum("nck,ncp->nkp", S, jz).reshape(B * C, P)
        self.s = s.reshape(-1)
        evals, U = np.linalg.eigh(self.jt @ self.jt.T)
        tol = max(float(evals.max(initial=0.0)), 0.0) * B * C * np.finfo(np.float64).eps
        self.nonzero = evals > tol
        self.evals = np.where(self.nonzero, evals, 0.0)
        self.U = U
        self.coef = U.T @ self.s

    @property
    def grad(self) -> np.ndarray:
        """``g = (1/B) Jt^T s`` (equals the oracle's gradient up to rounding)."""
        return self.jt.T @ self.s / self.batch_size

    def _weights(self, damping: float | None) -> np.ndarray:
        lam = 0.0 if damping is None else float(damping)
        denom = self.evals + self.batch_size * lam
        safe = np.where(self.nonzero, denom, 1.0)
        return np.where(self.nonzero, 1.0 / safe, 0.0)

    def direction(self, damping: float | None) -> np.ndarray:
        """``(G + lam I)^{-1} g``; ``None`` or ``0``: ``G^+ g``."""
        return self.jt.T @ (self.U @ (self.coef * self._weights(damping)))

    def quadratic_terms(self, damping: float | None) -> tuple[float, float]:
        """``(d^T g, d^T G d)`` of :meth:`direction` in closed form."""
        h = self._weights(damping)
        dtg = float(np.sum(self.evals * self.coef**2 * h)) / self.batch_size
        dtgd = float(np.sum((self.evals * self.coef * h) ** 2)) / self.batch_size
        return dtg, dtgd

    @property
    def gamma_min(self) -> float:
        """``1 / sqrt(g^T G^+ g)``: the smallest ``gamma`` any direction attains on this batch."""
        total = float(np.sum(self.coef[self.nonzero] ** 2))
        return math.sqrt(self.batch_size / total) if total > 0 else math.nan


def exact_size(batch_size: int, num_outputs: int, num_params: int) -> int:
    """Entries of the dense output Jacobian the exact NG needs."""
    return batch_size * num_outputs * num_params


def output_hessian(problem: Any, oracle: Any, batch_size: int, num_outputs: int) -> np.ndarray:
    """``Q_n`` (``B x C x C``) by applying the oracle's output Hessian to the unit vectors."""
    cols = []
    for c in range(num_outputs):
        unit = np.zeros((batch_size, num_outputs))
        unit[:, c] = 1.0
        cols.append(np.asarray(problem.to_numpy(oracle.output_hessian_apply(problem.from_numpy(unit)))))
    return np.stack(cols, axis=-1).astype(np.float64)


def exact_natural_gradient(problem: Any, oracle: Any) -> OutputSpaceNG:
    """:class:`OutputSpaceNG` of the oracle's batch (dense output Jacobian, float64)."""
    jz = np.asarray(problem.to_numpy(oracle.output_jacobian()))
    eps = float(np.finfo(jz.dtype).eps) if np.issubdtype(jz.dtype, np.floating) else 1e-16
    B, C, _ = jz.shape
    q = output_hessian(problem, oracle, B, C)
    r = np.asarray(problem.to_numpy(oracle.logit_grads()))
    # Q is as accurate as the working dtype: its numerically null eigenvalues (CE's 1 direction)
    # sit near C*eps of the largest.
    return OutputSpaceNG(jz, q, r, q_tol=10.0 * C * eps)


# --------------------------------------------------------------------------- per-sample norms


def slice_batch(batch: Batch[Any], start: int, stop: int) -> Batch[Any]:
    """Samples ``start:stop`` of a batch (noise is ``(rows, B, C)``)."""
    return Batch(batch.x[start:stop], batch.y[start:stop], batch.index[start:stop], batch.noise[:, start:stop])


def per_sample_grad_norms(
    problem: Any, params: Any, batch: Batch[Any], oracle: Any, max_entries: int = IMBALANCE_MAX_ENTRIES
) -> np.ndarray:
    """``||grad l_n||`` for every sample, float64.

    Per-sample gradients (``oracle.per_sample_grads``) are formed for at most ``max_entries /
    P`` samples at a time (sub-batch oracles), so memory stays bounded on large models; the
    squared norms are reduced on the device.
    """
    B = int(batch.x.shape[0])
    P = int(problem.num_params)
    chunk = max(1, max_entries // max(P, 1))
    out = []
    for start in range(0, B, chunk):
        stop = min(B, start + chunk)
        o = oracle if (start == 0 and stop == B) else problem.oracle(params, slice_batch(batch, start, stop))
        J = o.per_sample_grads()
        out.append(np.asarray(problem.to_numpy((J * J).sum(-1)), dtype=np.float64))
    return np.sqrt(np.concatenate(out))


# --------------------------------------------------------------------------- methods and state


@dataclass
class Variant:
    """One method at one damping: its adapter, resolved hyperparameters, how it gets its state."""

    method: str
    adapter_cls: type[Adapter]
    hparams: Any
    #: The damping column of its rows (``None``: the method has no ``damping``).
    damping: float | None
    #: ``adaptive_damping`` was switched off by the damping sweep.
    fixed_damping: bool = False
    #: Its state is fed along the reference trajectory.
    fed: bool = False
    adapter: Adapter = field(init=False)

    def __post_init__(self) -> None:
        self.adapter = self.adapter_cls()

    @property
    def label(self) -> str:
        return self.method if self.damping is None else f"{self.method}@{self.damping:g}"


def _is_counter(value: Any, to_numpy: Callable[[Any], Any]) -> bool:
    if isinstance(value, (bool, int, str)):
        return True
    if value is None or isinstance(value, (tuple, list, dict, float)):
        return False
    try:
        arr = np.asarray(to_numpy(value))
    except Exception:  # not an array of this backend: treat as state
        return False
    return arr.ndim == 0 and arr.dtype.kind in "biu"


def needs_feeding(adapter_cls: type[Adapter], state: Any, problem: Any) -> bool:
    """Whether a method's direction may depend on state built up over steps.

    The adapter's ``capabilities.stateful_direction`` decides when it exists; otherwise a state
    whose fields besides ``hparams`` are all counters (Python ints, 0-d integer arrays) needs
    no feeding (EF, iEF, SF: a step counter for the learning-rate schedule), and anything else
    -- arrays, floats, ``None`` placeholders that later hold arrays -- does.
    """
    declared = getattr(adapter_cls.capabilities, "stateful_direction", None)
    if isinstance(declared, bool):
        return declared
    fields = state._asdict() if hasattr(state, "_asdict") else None
    if fields is None:
        return True
    return not all(_is_counter(v, problem.to_numpy) for k, v in fields.items() if k != "hparams")


def state_damping(state: Any, problem: Any) -> float | None:
    """The damping a state carries (K-FAC's, EGN's, AdamQLR's adapted ``lam``), if any."""
    value = getattr(state, "damping", None)
    if value is None or isinstance(value, bool):
        return None
    try:
        arr = np.asarray(problem.to_numpy(value) if not isinstance(value, (int, float)) else value, dtype=np.float64)
    except Exception:  # an unexpected type: no damping to report
        return None
    return float(arr) if arr.ndim == 0 and np.isfinite(arr) else None


# --------------------------------------------------------------------------- the spec


@dataclass(frozen=True)
class ApproxSpec:
    """What to evaluate (see the module docstring).

    ``optimizers``: method names or ``module:Class`` references (``None``: every available
    adapter of the backend); ``damping``: the sweep (``None``: each method's own);
    ``hparams``: per-method overrides applied before the damping; ``steps``: the reference
    trajectory's length (default: the suite's step budget); ``exact_limit``: largest ``B*C*P``
    for the exact NG (0 disables it).
    """

    suite: str
    backend: str = "torch"
    optimizers: tuple[str, ...] | None = None
    reference: str = "adamw"
    reference_hparams: Mapping[str, Any] = field(default_factory=dict)
    checkpoints: int = 5
    batches: int = 16
    damping: tuple[float, ...] | None = None
    seed: int = 0
    steps: int | None = None
    state_window: int | None = None
    dtype: str = "float32"
    device: str = "auto"
    hparams: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    exact_limit: int = EXACT_MAX_ENTRIES
    tag: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["optimizers"] = list(self.optimizers) if self.optimizers is not None else None
        out["damping"] = list(self.damping) if self.damping is not None else None
        out["hparams"] = {k: dict(v) for k, v in self.hparams.items()}
        out["reference_hparams"] = dict(self.reference_hparams)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ApproxSpec:
        data = dict(data)
        for name in ("optimizers", "damping"):
            if data.get(name) is not None:
                data[name] = tuple(data[name])
        return cls(**data)

    def adapter_names(self) -> list[str]:
        """Reference and methods, named without importing any adapter (``harness.external``)."""
        from harness import external, registry

        methods = list(self.optimizers) if self.optimizers is not None else None
        if methods is None:
            methods = registry.builtin_names(self.backend) + external.entry_point_names(self.backend)
        return [self.reference, *methods]

    @property
    def involves_third_party(self) -> bool:
        """Whether any adapter of the evaluation comes from outside ngbench (then it runs in a
        worker). Unknown names are not third-party: they fail validation in the parent."""
        from harness import external

        offered = set(external.entry_point_names(self.backend))
        return any(
            ":" in name or (name in offered and not external.is_builtin(name, self.backend))
            for name in self.adapter_names()
        )


@dataclass
class Plan:
    """A validated spec: suite, reference adapter and hyperparameters, methods, skips."""

    spec: ApproxSpec
    suite: Suite
    steps: int
    reference_cls: type[Adapter]
    reference_hparams: Any
    methods: list[tuple[str, type[Adapter], Any]]
    skipped: dict[str, str]


def prepare(spec: ApproxSpec) -> Plan:
    """Resolve names and hyperparameters; raises the user errors of bad input before anything runs."""
    suite = get_suite(spec.suite)
    backend_module(spec.backend)
    if spec.dtype not in ("float32", "float64"):
        raise ConfigError(f"unknown dtype {spec.dtype!r} (known: float32, float64)")
    if spec.checkpoints < 1:
        raise ConfigError(f"checkpoints must be >= 1, got {spec.checkpoints}")
    if spec.batches < 1:
        raise ConfigError(f"batches must be >= 1, got {spec.batches}")
    if spec.steps is not None and spec.steps < 0:
        raise ConfigError(f"steps must be >= 0, got {spec.steps}")
    if spec.state_window is not None and spec.state_window < 1:
        raise ConfigError(f"state_window must be >= 1 (or None for the whole trajectory), got {spec.state_window}")
    if spec.exact_limit < 0:
        raise ConfigError(f"exact_limit must be >= 0, got {spec.exact_limit}")
    for lam in spec.damping or ():
        if not (isinstance(lam, (int, float)) and math.isfinite(lam) and lam >= 0):
            raise ConfigError(f"damping values must be finite and >= 0, got {lam!r}")
    reference_cls = get_adapter(spec.reference, spec.backend)
    if suite.likelihood not in reference_cls.capabilities.likelihoods:
        raise ConfigError(f"reference {spec.reference!r} does not support likelihood {suite.likelihood!r}")
    reference_hparams = reference_cls.resolve(spec.reference_hparams)
    names = list(spec.optimizers) if spec.optimizers is not None else list(registry_adapters(spec.backend))
    if not names:
        raise ConfigError("no optimizers to evaluate")
    if len(set(names)) != len(names):
        raise ConfigError(f"optimizers listed twice: {', '.join(sorted({n for n in names if names.count(n) > 1}))}")
    unknown = set(spec.hparams) - set(names)
    if unknown:
        raise ConfigError(f"hyperparameters given for optimizers not evaluated: {', '.join(sorted(unknown))}")
    methods: list[tuple[str, type[Adapter], Any]] = []
    skipped: dict[str, str] = {}
    for name in names:
        cls = get_adapter(name, spec.backend)
        overrides = dict(spec.hparams.get(name, {}))
        base = cls.resolve(overrides)  # bad user hyperparameters are input errors
        label = cls.name if ":" in name else name
        if suite.likelihood not in cls.capabilities.likelihoods:
            skipped[label] = f"does not support likelihood {suite.likelihood!r}"
            continue
        cap = cls.capabilities.max_params
        if cap is not None and suite.model.num_params() > cap:
            skipped[label] = f"{suite.model.num_params()} parameters exceed its max_params {cap}"
            continue
        methods.append((label, cls, (overrides, base)))
    steps = int(spec.steps if spec.steps is not None else suite.budget.steps)
    return Plan(spec, suite, steps, reference_cls, reference_hparams, methods, skipped)


def build_variants(plan: Plan) -> tuple[list[Variant], dict[str, str]]:
    """One :class:`Variant` per method and damping; damping values a method rejects are skipped."""
    variants: list[Variant] = []
    skipped: dict[str, str] = {}
    for name, cls, (overrides, base) in plan.methods:
        fields = hparam_fields(cls.Hyperparams)
        if plan.spec.damping is None or "damping" not in fields:
            damping = getattr(base, "damping", None) if "damping" in fields else None
            variants.append(Variant(name, cls, base, None if damping is None else float(damping)))
            continue
        for lam in plan.spec.damping:
            sweep: dict[str, Any] = {**overrides, "damping": float(lam)}
            fixed = "adaptive_damping" in fields and isinstance(getattr(base, "adaptive_damping", None), bool)
            if fixed:
                sweep["adaptive_damping"] = False
            try:
                hp = cls.resolve(sweep)
            except HyperparameterError as exc:
                skipped[f"{name}@{lam:g}"] = str(exc)
                continue
            variants.append(Variant(name, cls, hp, float(lam), fixed_damping=fixed))
    return variants, skipped


# --------------------------------------------------------------------------- feeding lanes


@dataclass
class _Lane:
    """A variant's state fed from ``start`` on, serving the checkpoints ``serves``."""

    variant: Variant
    start: int
    serves: tuple[int, ...]
    state: Any = None
    #: Reference steps whose feeding step raised (skipped: the last good state is kept).
    feed_errors: int = 0
    first_feed_error: str | None = None


def _plan_lanes(variants: Sequence[Variant], ckpt_steps: Sequence[int], window: int | None) -> list[_Lane]:
    lanes: list[_Lane] = []
    for v in variants:
        if not v.fed or window is None or window >= max(ckpt_steps):
            lanes.append(_Lane(v, 0, tuple(range(len(ckpt_steps)))))
            continue
        starts: dict[int, list[int]] = {}
        for k, s in enumerate(ckpt_steps):
            starts.setdefault(max(0, s - window), []).append(k)
        lanes.extend(_Lane(v, start, tuple(ks)) for start, ks in sorted(starts.items()))
    return lanes


def _one_line(exc: BaseException) -> str:
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" ({frames[-1].filename}:{frames[-1].lineno})" if frames else ""
    return f"{type(exc).__name__}: {exc}{where}"[:1000]


# --------------------------------------------------------------------------- the result


@dataclass
class ApproxResult:
    """Rows, the reference run, and what was skipped."""

    spec: ApproxSpec
    rows: list[dict[str, Any]]
    reference: RunResult
    checkpoint_steps: list[int]
    #: Per evaluated checkpoint: ``step``, ``progress`` and the reference's evaluation metrics.
    checkpoint_metrics: list[dict[str, Any]]
    skipped: dict[str, str]
    variants: list[dict[str, Any]]
    exact_ng: dict[str, Any]
    #: Per method (``name@damping`` in a sweep): its first direction error, or its feeding failures.
    errors: dict[str, str]
    wall_time_s: float
    run_id: int | None = None
    sweep_id: int | None = None

    def frame(self) -> pd.DataFrame:
        """The rows as a DataFrame with :data:`COLUMNS` (plus ``attrs``: skipped, run_id ...)."""
        frame = pd.DataFrame(self.rows, columns=list(COLUMNS))
        for col in COLUMNS:
            if col not in ("method", "extra", "checkpoint", "step", "batch"):
                frame[col] = pd.to_numeric(frame[col], errors="coerce").astype(float)
        frame.attrs.update(
            skipped=dict(self.skipped),
            run_id=self.run_id,
            sweep_id=self.sweep_id,
            reference=self.spec.reference,
            checkpoint_steps=list(self.checkpoint_steps),
            checkpoint_metrics=list(self.checkpoint_metrics),
            exact_ng=dict(self.exact_ng),
            errors=dict(self.errors),
            wall_time_s=self.wall_time_s,
        )
        return frame

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["spec"] = self.spec.to_dict()
        out["reference"] = self.reference.to_dict()
        return _json_safe(out)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ApproxResult:
        data = dict(data)
        data["spec"] = ApproxSpec.from_dict(data["spec"])
        data["reference"] = RunResult.from_dict(data["reference"])
        return cls(**data)

    def sweep_spec(self) -> dict[str, Any]:
        """What the ``sweeps`` row of this evaluation records (JSON)."""
        return {
            "approx": self.spec.to_dict(),
            "steps": self.reference.steps,
            "checkpoint_steps": self.checkpoint_steps,
            "checkpoints": self.checkpoint_metrics,
            "variants": self.variants,
            "skipped": self.skipped,
            "exact_ng": self.exact_ng,
            "errors": self.errors,
            "wall_time_s": self.wall_time_s,
        }


def summary(frame: pd.DataFrame, value: str = "gamma_ratio_sgd") -> pd.DataFrame:
    """Median of ``value`` per (method, damping) x checkpoint, methods in row order."""
    if frame.empty:
        return pd.DataFrame()
    f = frame.assign(damping_key=frame["damping"].astype(float), _value=pd.to_numeric(frame[value], errors="coerce"))
    table = f.groupby(["method", "damping_key", "checkpoint"], dropna=False)["_value"].median().unstack("checkpoint")
    order = {m: i for i, m in enumerate(dict.fromkeys(frame["method"]))}
    table = table.reset_index()
    table["_order"] = table["method"].map(order)
    table = table.sort_values(["_order", "damping_key"], na_position="first").drop(columns="_order")
    table = table.rename(columns={"damping_key": "damping"}).set_index(["method", "damping"])
    table.columns.name = "checkpoint"
    return table


def non_descent_counts(frame: pd.DataFrame) -> dict[tuple[str, float | None], int]:
    """Rows per (method, damping) whose direction is not a descent direction (``d^T g <= 0``)."""
    out: dict[tuple[str, float | None], int] = {}
    for row in frame.itertuples(index=False):
        if row.dtg is not None and math.isfinite(row.dtg) and row.dtg <= 0:
            key = (row.method, None if not math.isfinite(row.damping) else float(row.damping))
            out[key] = out.get(key, 0) + 1
    return out


# --------------------------------------------------------------------------- evaluation


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _scalar(problem: Any, x: Any) -> float:
    """A 0-d framework array or Python number as a float (NaN when it is neither)."""
    if x is None:
        return math.nan
    if isinstance(x, (int, float, np.number)):
        return float(x)
    try:
        return float(np.asarray(problem.to_numpy(x)))
    except (TypeError, ValueError, AttributeError):
        return math.nan


def _row(
    checkpoint: int,
    step: int,
    method: str,
    damping: float | None,
    batch: int,
    imbalance_value: float,
    extra: dict[str, Any],
    **figures: float | None,
) -> dict[str, Any]:
    row: dict[str, Any] = dict.fromkeys(COLUMNS)
    row.update(checkpoint=checkpoint, step=step, method=method, damping=damping, batch=batch)
    row["grad_norm_imbalance"] = imbalance_value
    row.update(figures)
    row["extra"] = extra
    return row


class _BatchContext:
    """Everything shared by the methods on one batch: ``g``, ``gamma_SGD``, imbalance, exact NG."""

    def __init__(self, problem: Any, params: Any, batch: Batch[Any], exact_allowed: bool) -> None:
        self.problem = problem
        self.oracle = problem.oracle(params, batch)
        g = self.oracle.grad()
        self.g = np.asarray(problem.to_numpy(g), dtype=np.float64)
        self.gamma_sgd = indicator(float(self.g @ self.g), _scalar(problem, self.oracle.ggn_quad(g)))
        norms = per_sample_grad_norms(problem, params, batch, self.oracle)
        self.imbalance = imbalance(norms)
        r = np.asarray(problem.to_numpy(self.oracle.logit_grads()), dtype=np.float64)
        self.logit_imbalance = imbalance(np.linalg.norm(r, axis=-1))
        self.zero_grad_samples = int(np.sum(norms == 0.0))
        self.exact: OutputSpaceNG | None = None
        self.exact_error: str | None = None
        self._ng: dict[float | None, np.ndarray] = {}
        if exact_allowed:
            try:
                self.exact = exact_natural_gradient(problem, self.oracle)
            except Exception as exc:  # harness-side numerics: report, keep the gamma figures
                self.exact_error = _one_line(exc)

    def ng(self, damping: float | None) -> np.ndarray:
        key = None if not damping else float(damping)
        if key not in self._ng:
            assert self.exact is not None
            self._ng[key] = self.exact.direction(key)
        return self._ng[key]

    def base_extra(self) -> dict[str, Any]:
        extra: dict[str, Any] = {"gamma_sgd": self.gamma_sgd, "logit_grad_norm_imbalance": self.logit_imbalance}
        if self.zero_grad_samples:
            extra["zero_grad_samples"] = self.zero_grad_samples
        if self.exact is not None:
            extra["gamma_min"] = self.exact.gamma_min
        if self.exact_error is not None:
            extra["exact_ng_error"] = self.exact_error
        return extra

    def figures(self, d_arr: Any, ng_damping: float | None) -> tuple[dict[str, float | None], dict[str, Any]]:
        """The row figures of a direction ``d`` (one JVP for ``d^T G d``)."""
        d = np.asarray(self.problem.to_numpy(d_arr), dtype=np.float64)
        extra: dict[str, Any] = {}
        if d.shape != self.g.shape:
            raise ValueError(f"direction has shape {d.shape}, expected {self.g.shape}")
        if not np.all(np.isfinite(d)):
            extra["nonfinite_direction"] = True
            nan = math.nan
            return {"gamma": nan, "gamma_ratio_sgd": nan, "dtg": nan, "dtgd": nan, "update_norm": nan}, extra
        dtg = float(d @ self.g)
        dtgd = _scalar(self.problem, self.oracle.ggn_quad(d_arr))
        gamma = indicator(dtg, dtgd)
        out: dict[str, float | None] = {
            "gamma": gamma,
            "gamma_ratio_sgd": gamma / self.gamma_sgd if self.gamma_sgd and math.isfinite(self.gamma_sgd) else math.nan,
            "dtg": dtg,
            "dtgd": dtgd,
            "update_norm": float(np.linalg.norm(d)),
        }
        extra["descent"] = bool(dtg > 0)
        if self.exact is not None:
            ng = self.ng(ng_damping)
            ng_norm, d_norm = float(np.linalg.norm(ng)), float(np.linalg.norm(d))
            if ng_norm > 0 and d_norm > 0:
                out["cos_ng"] = float(d @ ng) / (d_norm * ng_norm)
                out["rel_err_ng"] = float(np.linalg.norm(d - ng)) / ng_norm
            extra["ng_damping"] = ng_damping
        return out, extra

    def exact_rows(
        self, checkpoint: int, step: int, batch: int, dampings: Iterable[float | None], base: dict[str, Any]
    ) -> list[dict[str, Any]]:
        """Rows of the exact NG itself (closed-form quadratic terms)."""
        rows: list[dict[str, Any]] = []
        if self.exact is None:
            return rows
        for lam in dampings:
            dtg, dtgd = self.exact.quadratic_terms(lam)
            gamma = indicator(dtg, dtgd)
            ratio = gamma / self.gamma_sgd if self.gamma_sgd and math.isfinite(self.gamma_sgd) else math.nan
            rows.append(
                _row(
                    checkpoint,
                    step,
                    EXACT_METHOD,
                    lam,
                    batch,
                    self.imbalance,
                    {**base, "descent": dtg > 0, "ng_damping": lam},
                    gamma=gamma,
                    gamma_ratio_sgd=ratio,
                    dtg=dtg,
                    dtgd=dtgd,
                    update_norm=float(np.linalg.norm(self.ng(lam))),
                    cos_ng=1.0,
                    rel_err_ng=0.0,
                )
            )
        return rows


def evaluate(
    spec: ApproxSpec, *, on_progress: Callable[[str], None] | None = None, plan: Plan | None = None
) -> ApproxResult:
    """Run the reference trajectory, feed the states, and measure every method at every checkpoint."""
    wall_start = time.perf_counter()
    plan = plan or prepare(spec)
    say = on_progress or (lambda message: None)
    suite = plan.suite
    backend = backend_module(spec.backend)
    problem = backend.build_problem(suite, seed=spec.seed, dtype=spec.dtype, device=spec.device)
    T = plan.steps
    problem.step_budget = T
    ckpts = checkpoint_steps(T, spec.checkpoints)
    last = ckpts[-1]

    variants, skipped_variants = build_variants(plan)
    skipped = {**plan.skipped, **skipped_variants}
    for v in variants:
        v.fed = needs_feeding(v.adapter_cls, v.adapter.init(problem, v.hparams), problem)
    lanes = _plan_lanes(variants, ckpts, spec.state_window)
    lane_for: dict[tuple[int, int], _Lane] = {(id(ln.variant), k): ln for ln in lanes for k in ln.serves}

    B, C, P = suite.batch_size, suite.num_outputs, problem.num_params
    size = exact_size(B, C, P)
    exact_allowed = 0 < size <= spec.exact_limit and B * C <= EXACT_MAX_ROWS
    if exact_allowed:
        exact_info: dict[str, Any] = {"available": True, "entries": size}
    else:
        why = (
            "disabled (exact_limit=0)"
            if spec.exact_limit == 0
            else (
                f"B*C*P = {B}*{C}*{P} = {size} exceeds the limit {spec.exact_limit}"
                if size > spec.exact_limit
                else f"B*C = {B * C} exceeds {EXACT_MAX_ROWS}"
            )
        )
        exact_info = {"available": False, "reason": why}
    exact_dampings: list[float | None] = [None, *[float(x) for x in spec.damping or () if x > 0]]

    result = RunResult(
        spec=RunSpec(
            suite=suite.name,
            optimizer=spec.reference,
            backend=spec.backend,
            seed=spec.seed,
            steps=T,
            hparams=dict(spec.reference_hparams),
            device=spec.device,
            dtype=spec.dtype,
            tag=spec.tag,
            stop_at_target=False,
        ),
        status="done",
        suite_version=suite.version,
        adapter_version=keys.adapter_version(plan.reference_cls),
        hparams=hparams_dict(plan.reference_hparams),
        device=str(getattr(problem, "device", spec.device)),
        val_metric=suite.val_metric,
        target=suite.target.describe() if suite.target else None,
        started_at=_now(),
    )
    from harness.environment import fingerprint

    result.environment = fingerprint(spec.backend, result.device or spec.device)
    mode = metric_mode(suite.val_metric, suite)

    ref = plan.reference_cls()
    ref_state = ref.init(problem, plan.reference_hparams)
    ref_step = problem.make_step(ref)
    params = problem.params0
    rows: list[dict[str, Any]] = []
    ckpt_metrics: list[dict[str, Any]] = []
    directions: dict[int, Any] = {}
    step_fns: dict[int, Any] = {}
    clock = 0.0
    log_every = max(1, T // LOG_POINTS)
    initial_loss: float | None = None
    ckpt_index = {s: k for k, s in enumerate(ckpts)}

    def direction_fn(v: Variant) -> Any:
        if id(v) not in directions:
            make = getattr(problem, "make_direction", None)
            directions[id(v)] = (
                make(v.adapter) if make is not None else (lambda p, s, b, _a=v.adapter: _a.direction(problem, p, s, b))
            )
        return directions[id(v)]

    def evaluate_checkpoint(k: int, step: int) -> None:
        t0 = time.perf_counter()
        ev = problem.evaluate(params)
        for name, value in ev.items():
            result.metrics.append((step, clock, name, value))
        result.final_metrics = ev
        if suite.val_metric in ev and math.isfinite(ev[suite.val_metric]):
            best = result.best_val_metric
            value = ev[suite.val_metric]
            if best is None or (value > best if mode == "max" else value < best):
                result.best_val_metric = value
        if k == 0:
            result.initial_train_loss = ev.get("train_loss")
        result.final_train_loss = ev.get("train_loss")
        progress = step / T if T else 0.0
        ckpt_metrics.append({"checkpoint": k, "step": step, "progress": progress, **ev})
        for j in range(spec.batches):
            batch = problem.device_batch(step + j)
            ctx = _BatchContext(problem, params, batch, exact_allowed)
            base = {"progress": progress, **ctx.base_extra()}
            rows.extend(ctx.exact_rows(k, step, j, exact_dampings, base))
            for v in variants:
                lane = lane_for[(id(v), k)]
                extra: dict[str, Any] = dict(base)
                if v.fixed_damping:
                    extra["fixed_damping"] = True
                if lane.feed_errors:
                    extra["feed_errors"] = lane.feed_errors
                    extra["feed_error"] = lane.first_feed_error
                state = lane.state
                lam_state = state_damping(state, problem)
                if lam_state is not None:
                    extra["state_damping"] = lam_state
                ng_damping = lam_state if lam_state is not None else v.damping
                try:
                    d = direction_fn(v)(params, state, batch)
                    figures, more = ctx.figures(d, ng_damping)
                except Exception as exc:  # an adapter's failure is a recorded result
                    extra["error"] = f"direction: {_one_line(exc)}"
                    rows.append(_row(k, step, v.method, v.damping, j, ctx.imbalance, extra))
                    continue
                extra.update(more)
                rows.append(_row(k, step, v.method, v.damping, j, ctx.imbalance, extra, **figures))
        for lane in lanes:
            if lane.serves and max(lane.serves) == k:
                lane.state = None  # served its last checkpoint: free it (FNGD's table, K-FAC's factors)
        say(f"checkpoint {k + 1}/{len(ckpts)} (step {step}) evaluated in {time.perf_counter() - t0:.1f} s")

    status = "done"
    for t in range(last + 1):
        for lane in lanes:
            if lane.start == t and lane.state is None:
                lane.state = lane.variant.adapter.init(problem, lane.variant.hparams)
        if t in ckpt_index:
            evaluate_checkpoint(ckpt_index[t], t)
        if t == last:
            break
        batch = problem.device_batch(t)
        for lane in lanes:
            if not lane.variant.fed or lane.start > t:
                continue
            if t >= max(ckpts[k] for k in lane.serves):
                continue
            key = id(lane.variant)
            if key not in step_fns:  # one prepared (in JAX: compiled) step per variant, shared by its lanes
                step_fns[key] = problem.make_step(lane.variant.adapter)
            try:
                _, lane.state, _ = step_fns[key](params, lane.state, batch)
            except Exception as exc:  # a skipped step, counted on the method's rows
                lane.feed_errors += 1
                if lane.first_feed_error is None:
                    lane.first_feed_error = f"state feeding at step {t}: {_one_line(exc)}"
        problem.block(params)
        t_start = time.perf_counter()
        params, ref_state, stats = ref_step(params, ref_state, batch)
        problem.block(params, stats)
        clock += time.perf_counter() - t_start
        result.steps = t + 1
        loss = _scalar(problem, stats.get("loss"))
        if initial_loss is None:
            initial_loss = loss
        threshold = suite.divergence_factor * max(abs(initial_loss) if math.isfinite(initial_loss) else 0.0, 1e-3)
        if not math.isfinite(loss) or loss > threshold or t % log_every == 0 or t == last - 1:
            result.metrics.append((t, clock, "train_loss_batch", loss))
        if not math.isfinite(loss) or loss > threshold:
            status = "diverged"
            result.error = f"reference loss {loss:.6g} at step {t} (initial {initial_loss:.6g})"
            missing = [s for s in ckpts if s > t]
            skipped["checkpoints"] = f"reference diverged at step {t}; steps {missing} not evaluated"
            break
        if on_progress is not None and (t + 1) % max(1, T // 10) == 0:
            say(f"reference step {t + 1}/{last}")

    result.status = status
    result.train_time_s = clock
    result.loop_time_s = clock
    result.finished_at = _now()
    errors: dict[str, str] = {}
    for lane in lanes:
        if lane.feed_errors and lane.variant.label not in errors:
            errors[lane.variant.label] = (
                f"state feeding failed at {lane.feed_errors} reference step(s) (skipped, last good state kept); "
                f"first: {lane.first_feed_error}"
            )
    for r in rows:
        label = (
            r["method"] if r["damping"] is None or r["method"] == EXACT_METHOD else f"{r['method']}@{r['damping']:g}"
        )
        if r["extra"].get("error") and label not in errors:
            errors[label] = f"checkpoint {r['checkpoint']}, batch {r['batch']}: {r['extra']['error']}"
    info = [
        {
            "method": v.method,
            "damping": v.damping,
            "fed": v.fed,
            "fixed_damping": v.fixed_damping,
            "adapter_version": keys.adapter_version(v.adapter_cls),
            "hparams": hparams_dict(v.hparams),
        }
        for v in variants
    ]
    return ApproxResult(
        spec=spec,
        rows=rows,
        reference=result,
        checkpoint_steps=ckpts,
        checkpoint_metrics=ckpt_metrics,
        skipped=skipped,
        variants=info,
        exact_ng=exact_info,
        errors=errors,
        wall_time_s=time.perf_counter() - wall_start,
    )


# --------------------------------------------------------------------------- storage


def _json_safe(value: Any) -> Any:
    """Non-finite floats become ``None``; numpy scalars become Python numbers."""
    if isinstance(value, (np.floating, np.integer, np.bool_)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def store_result(store: Any, result: ApproxResult) -> int:
    """Write the evaluation in ONE transaction: a ``sweeps`` row (kind ``approx``, the spec,
    skips and checkpoint metrics), the reference run (role :data:`REFERENCE_ROLE`, linked to the
    sweep) and its ``approx_quality`` rows. Returns the run id (also set on ``result``)."""
    sweep_id, run_id = store.save_approx(
        result.reference,
        [_json_safe(r) for r in result.rows],
        sweep_name=f"approx:{result.spec.suite}",
        sweep_spec=_json_safe(result.sweep_spec()),
        role=REFERENCE_ROLE,
        tag=result.spec.tag,
    )
    result.run_id, result.sweep_id = run_id, sweep_id
    return run_id


def evaluate_request(request: Mapping[str, Any]) -> dict[str, Any]:
    """Body of the worker's ``approx`` request: ``{"result": ...}`` or ``{"error": message}``."""
    from harness.errors import USER_ERRORS

    spec = ApproxSpec.from_dict(request["spec"])
    try:
        plan = prepare(spec)
    except USER_ERRORS as exc:
        return {"error": str(exc)}
    return {"result": evaluate(spec, plan=plan).to_dict()}


def evaluate_isolated(spec: ApproxSpec) -> ApproxResult:
    """:func:`prepare` and :func:`evaluate` in a scrubbed worker (third-party adapters must not
    run in a process that holds database credentials); user errors are raised here."""
    from harness.errors import ConfigError
    from harness.worker import request_in_worker

    envelope = request_in_worker({"op": "approx", "spec": spec.to_dict()}, timeout_s=None)
    if "error" in envelope:
        raise ConfigError(envelope["error"])
    return ApproxResult.from_dict(envelope["result"])
