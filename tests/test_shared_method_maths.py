"""The framework-neutral method maths (``backends.kfac_maths``, ``backends.egn_gram``,
``backends.adamqlr_maths``, ``backends.schedules.scheduled_update``) on both array namespaces:
each against a dense NumPy reference, and the two frameworks against each other."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import jax.numpy as jnp
import numpy as np
import pytest
import torch

from backends import adamqlr_maths, egn_gram, kfac_maths, schedules
from backends.jax.ops import JAX_OPS
from backends.methods import adamqlr, kfac
from backends.torch.ops import TORCH_OPS

BACKENDS = {"torch": (TORCH_OPS, lambda a: torch.as_tensor(np.asarray(a))), "jax": (JAX_OPS, jnp.asarray)}


def _np(x: Any) -> np.ndarray:
    return np.asarray(x.detach().numpy() if isinstance(x, torch.Tensor) else x)


def _spd(rng: np.random.Generator, n: int, rank: int | None = None) -> np.ndarray:
    M = rng.standard_normal((n, rank or n))
    return M @ M.T / (rank or n)


@pytest.mark.parametrize("backend", list(BACKENDS))
@pytest.mark.parametrize("form", ["pi", "exact"])
def test_kfac_layer_inverse_is_the_damped_kronecker_inverse(backend: str, form: str) -> None:
    """``apply_inverse(layer_inverse(...), X)`` solves with ``T (G kron A) + gamma^2 I`` (exact) or
    ``T (G + c/pi I) kron (A + c pi I)`` (pi, ``c = sqrt(gamma^2 / T)``), in row-major ``vec(X)``."""
    ops, arr = BACKENDS[backend]
    rng = np.random.default_rng(0)
    A, G, T, gamma2 = _spd(rng, 4, rank=2), _spd(rng, 3), 5, 0.3
    X = rng.standard_normal((3, 4))
    inv = kfac_maths.layer_inverse(ops, arr(A), arr(G), gamma2, T, form)
    if form == "exact":
        dense = T * np.kron(G, A) + gamma2 * np.eye(12)
    else:
        c = np.sqrt(gamma2 / T)
        pi = np.sqrt((np.trace(A) / 4) / (np.trace(G) / 3))
        dense = T * np.kron(G + (c / pi) * np.eye(3), A + c * pi * np.eye(4))
    got = _np(kfac_maths.apply_inverse(inv, arr(X)))
    np.testing.assert_allclose(got.reshape(-1), np.linalg.solve(dense, X.reshape(-1)), rtol=1e-10)


@pytest.mark.parametrize("backend", list(BACKENDS))
def test_kfac_quadratic_step_minimises_the_two_dimensional_model(backend: str) -> None:
    """``(w1, w2)`` solve ``[p v]^T (C + (eta + lam) I) [p v] w = -[p v]^T grad h`` with ``C`` from
    the output tangents and ``Q``; the model change is ``M(w)`` without ``lam`` (kfac-jax preset)."""
    ops, arr = BACKENDS[backend]
    rng = np.random.default_rng(1)
    B, C, P = 6, 3, 5
    J = rng.standard_normal((B, C, P))
    Q = np.stack([_spd(rng, C) for _ in range(B)])
    p, v, gh = rng.standard_normal(P), rng.standard_normal(P), rng.standard_normal(P)
    oracle = SimpleNamespace(output_hessian_apply=lambda w: ops.einsum("bij,bj->bi", arr(Q), w))
    hp = kfac.KFACHyperparams(l2_reg=1e-2, include_damping_in_quad_change=False)
    lam = 0.25
    tangents = [arr(J @ p), arr(J @ v)]
    w1, w2, change = kfac_maths.quadratic_step(ops, hp, oracle, tangents, arr(p), arr(v), arr(gh), arr(lam))
    ggn = np.einsum("bcp,bcd,bdq->pq", J, Q, J) / B
    V = np.stack([p, v], axis=1)
    undamped = V.T @ (ggn + hp.l2_reg * np.eye(P)) @ V
    expected = -np.linalg.solve(undamped + lam * V.T @ V, V.T @ gh)
    np.testing.assert_allclose([float(w1), float(w2)], expected, rtol=1e-10)
    np.testing.assert_allclose(float(change), 0.5 * expected @ undamped @ expected + expected @ (V.T @ gh), rtol=1e-10)


@pytest.mark.parametrize("backend", list(BACKENDS))
def test_kfac_adapt_damping_applies_the_lm_rule_to_the_regularised_objective(backend: str) -> None:
    """``rho = (h' - h) / M`` with ``h = L + eta/2 ||theta||^2``; a good step lowers lambda."""
    ops, arr = BACKENDS[backend]
    hp = kfac.KFACHyperparams(l2_reg=0.1)
    params, new_params = np.array([1.0, 2.0]), np.array([1.0, 1.0])
    old_h, new_h = 3.0 + 0.05 * 5.0, 2.0 + 0.05 * 2.0
    change = new_h - old_h  # rho = 1
    rho, lam = kfac_maths.adapt_damping(
        ops, hp, arr(1.0), arr(3.0), arr(2.0), arr(params), arr(new_params), arr(change)
    )
    assert float(rho) == pytest.approx(1.0, rel=1e-12)
    assert float(lam) == pytest.approx(kfac.lm_rule(hp).decrease, rel=1e-12)


@pytest.mark.parametrize("backend", list(BACKENDS))
@pytest.mark.parametrize("jitter", [0.0, 1e-3])
def test_egn_output_factor_factors_the_softmax_hessian(backend: str, jitter: float) -> None:
    """``S_n S_n^T = diag(p) - p p^T (+ jitter I)`` and ``S_n s_n = r_n`` for ``r_n = p_n - y_n``."""
    ops, arr = BACKENDS[backend]
    rng = np.random.default_rng(2)
    z = rng.standard_normal((4, 3))
    p = np.exp(z) / np.exp(z).sum(-1, keepdims=True)
    r = p - np.eye(3)[[0, 2, 1, 1]]
    S, s = egn_gram.output_factor(ops, "softmax_ce", arr(z), arr(r), jitter)
    S, s = _np(S), _np(s)
    Q = np.stack([np.diag(pn) - np.outer(pn, pn) for pn in p]) + jitter * np.eye(3)
    np.testing.assert_allclose(S @ np.swapaxes(S, 1, 2), Q, atol=1e-14)
    np.testing.assert_allclose(np.einsum("nck,nk->nc", S, s), r, atol=1e-12)
    assert egn_gram.output_factor(ops, "mse", arr(z), arr(r), jitter)[0] is None


@pytest.mark.parametrize("backend", list(BACKENDS))
def test_egn_dense_solve_is_the_damped_gauss_newton_direction(backend: str) -> None:
    """``d = (G + lam I)^{-1} g`` with ``G = Jz^T Q Jz / B``, ``g = Jz^T r / B``; the closed forms
    of ``g^T d`` and ``d^T G d`` match the dense ones."""
    ops, arr = BACKENDS[backend]
    rng = np.random.default_rng(3)
    B, C, P, lam = 4, 3, 15, 0.2
    z, Jz = rng.standard_normal((B, C)), rng.standard_normal((B, C, P))
    p = np.exp(z) / np.exp(z).sum(-1, keepdims=True)
    r = p - np.eye(C)[[0, 1, 2, 0]]
    S, s = egn_gram.output_factor(ops, "softmax_ce", arr(z), arr(r), 0.0)
    sol = egn_gram.solve_dense(ops, S, arr(Jz), s.reshape(-1), arr(lam))
    Q = np.stack([np.diag(pn) - np.outer(pn, pn) for pn in p])
    G = np.einsum("bcp,bcd,bdq->pq", Jz, Q, Jz) / B
    g = np.einsum("bcp,bc->p", Jz, r) / B
    d = np.linalg.solve(G + lam * np.eye(P), g)
    np.testing.assert_allclose(_np(sol.d), d, rtol=1e-9)
    np.testing.assert_allclose(float(egn_gram.grad_dot_direction(sol, B, arr(lam))), g @ d, rtol=1e-9)
    np.testing.assert_allclose(float(egn_gram.ggn_quad(ops, sol, B, arr(lam))), d @ G @ d, rtol=1e-9)


@pytest.mark.parametrize("backend", list(BACKENDS))
@pytest.mark.parametrize(("overrides", "expected_s"), [({}, -2.0), ({"lr_clipping": 0.5}, -0.5)])
def test_adamqlr_step_size_and_damping(backend: str, overrides: dict[str, Any], expected_s: float) -> None:
    """``s = -g^T d / (q + lam ||d||^2)`` (clipped), ``M = 1/2 s^2 (q + lam ||d||^2) + s g^T d``."""
    ops, arr = BACKENDS[backend]
    hp = adamqlr.AdamQLRHyperparams(**overrides)
    g, d = np.array([3.0, 1.0]), np.array([1.0, 1.0])  # g^T d = 4, ||d||^2 = 2
    lam, q = 0.5, 1.0  # damped curvature 2
    step = adamqlr_maths.quadratic_step(ops, hp, arr(q), arr(g), arr(d), arr(lam))
    assert float(step.s) == pytest.approx(expected_s, rel=1e-12)
    np.testing.assert_allclose(_np(adamqlr_maths.update(ops, arr(np.zeros(2)), step, arr(d))), expected_s * d)
    change = 0.5 * expected_s**2 * 2.0 + expected_s * 4.0
    rho, new_lam, model_change = adamqlr_maths.adapt_damping(ops, hp, arr(lam), step, arr(1.0), arr(1.0 + change))
    assert float(model_change) == pytest.approx(change, rel=1e-12)
    assert float(rho) == pytest.approx(1.0, rel=1e-12)
    assert float(new_lam) == pytest.approx(lam * adamqlr.lm_rule(hp).decrease, rel=1e-12)


@pytest.mark.parametrize("backend", list(BACKENDS))
def test_scheduled_update_normalises_and_decays(backend: str) -> None:
    """Step 3 of 4 with linear decay: ``lr_t = lr / 4``; normalised, the step length is ``lr_t``."""
    ops, arr = BACKENDS[backend]
    hp = SimpleNamespace(lr=0.2, lr_decay="linear", normalise_update=True)
    new, stats = schedules.scheduled_update(ops, hp, arr(np.zeros(2)), arr(np.array([3.0, 4.0])), 3, 4)
    np.testing.assert_allclose(_np(new), -0.05 * np.array([0.6, 0.8]), rtol=1e-9)
    assert float(stats["lr_schedule"]) == pytest.approx(0.05)
    assert float(stats["direction_norm"]) == pytest.approx(5.0)
    assert float(stats["update_norm"]) == pytest.approx(0.05, rel=1e-9)
