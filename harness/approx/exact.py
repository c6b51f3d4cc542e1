"""The exact quantities of the approximation-quality track: the indicator ``gamma`` (the iEF paper's
Eqn 15), checkpoint placement, the per-sample gradient-norm imbalance, and the exact damped natural
gradient solved in output space (docs/approximation.md).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from backends.spec import Batch
from harness.errors import ConfigError

#: Largest dense output Jacobian (``B*C*P`` float64 entries, ~160 MB) for the exact NG.
EXACT_MAX_ENTRIES = 20_000_000
#: Largest output-space system (``B*C`` rows) for the exact NG.
EXACT_MAX_ROWS = 4096
#: Per-sample gradients are formed in chunks of at most this many entries (``rows * P``).
IMBALANCE_MAX_ENTRIES = 1 << 26
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

    def solve(self, v: np.ndarray, damping: float) -> np.ndarray:
        """``(G + mu I)^{-1} v`` for any ``v`` (``(P,)``) and ``mu > 0``, by Woodbury:
        ``(1/mu) (v - Jt^T (Jt Jt^T + B mu I)^{-1} Jt v)`` (the natural gradient of a regularised
        objective, whose gradient is not in the row space of ``Jt``)."""
        mu = float(damping)
        if not mu > 0.0:
            raise ValueError(f"solve needs a positive damping, got {damping}")
        v = np.asarray(v, dtype=np.float64)
        inner = self.U @ ((self.U.T @ (self.jt @ v)) / (self.evals + self.batch_size * mu))
        return (v - self.jt.T @ inner) / mu

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
