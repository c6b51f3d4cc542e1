"""The shared Levenberg-Marquardt rule and quadratic-model solves (``backends.damping``): the
same numbers on Python floats, torch and jnp scalars, and agreement with kfac-jax's
``Optimizer._compute_new_damping_and_rho`` and ``_solve_quad_model``."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from backends import damping as lm

RULE = lm.LMRule(decrease=0.5, increase=2.0, min_damping=1e-3, max_damping=10.0)


def _torch(x: float) -> torch.Tensor:
    return torch.tensor(x, dtype=torch.float64)


@pytest.mark.parametrize(
    ("rho", "damping", "expected"),
    [
        (0.9, 1.0, 0.5),  # trusted model: decrease
        (0.75, 1.0, 1.0),  # thresholds are strict
        (0.5, 1.0, 1.0),
        (0.25, 1.0, 1.0),
        (0.1, 1.0, 2.0),  # poor model: increase
        (-3.0, 1.0, 2.0),  # the loss went up
        (0.9, 1.5e-3, 1e-3),  # clipped below
        (0.1, 8.0, 10.0),  # clipped above
        (math.nan, 1.0, 2.0),  # NaN raises (kfac-jax)
        (math.inf, 1.0, 0.5),
    ],
)
def test_lm_rule_on_floats_and_torch(rho: float, damping: float, expected: float) -> None:
    assert lm.lm_update(damping, rho, RULE) == pytest.approx(expected)
    got = lm.lm_update(_torch(damping), _torch(rho), RULE, where=torch.where)
    assert isinstance(got, torch.Tensor) and got.dtype == torch.float64
    assert float(got) == pytest.approx(expected)


def test_nan_rho_can_keep_the_damping() -> None:
    keep = RULE._replace(nan_rho="keep")
    assert lm.lm_update(1.0, math.nan, keep) == 1.0
    assert float(lm.lm_update(_torch(1.0), _torch(math.nan), keep, where=torch.where)) == 1.0


def test_reduction_ratio_and_the_zero_model_change() -> None:
    assert lm.reduction_ratio(1.0, 0.7, -0.4) == pytest.approx(0.75)
    assert math.isnan(lm.reduction_ratio(1.0, 0.7, 0.0))
    assert torch.isnan(lm.reduction_ratio(_torch(1.0), _torch(0.7), _torch(0.0), where=torch.where))


def test_one_dimensional_step_minimises_the_damped_model() -> None:
    gd, q, dd, lam = 2.0, 3.0, 4.0, 0.5
    s, change = lm.quadratic_step_1d(gd, q, dd, lam)
    assert s == pytest.approx(-2.0 / 5.0)
    assert gd + s * (q + lam * dd) == pytest.approx(0.0)
    assert change == pytest.approx(-0.5 * gd * gd / (q + lam * dd))
    assert lm.quadratic_step_1d(1.0, 0.0, 0.0, 1.0) == (0.0, 0.0)


def test_two_dimensional_solve_matches_numpy_and_its_special_cases(rng: np.random.Generator) -> None:
    for _ in range(5):
        m = rng.normal(size=(2, 2))
        A = m @ m.T + 0.1 * np.eye(2)
        b = rng.normal(size=2)
        model = lm.Quadratic2D(A[0, 0], A[0, 1], A[1, 1], b[0], b[1])
        w = lm.solve_quadratic_2d(model)
        np.testing.assert_allclose(w, -np.linalg.solve(A, b), rtol=1e-12)
        # With one coefficient fixed the other minimises M given it.
        w1, w2 = lm.solve_quadratic_2d(model, fixed1=0.3)
        assert w1 == 0.3 and A[1, 0] * w1 + A[1, 1] * w2 + b[1] == pytest.approx(0.0, abs=1e-12)
        w1, w2 = lm.solve_quadratic_2d(model, fixed2=-0.2)
        assert w2 == -0.2 and A[0, 0] * w1 + A[0, 1] * w2 + b[0] == pytest.approx(0.0, abs=1e-12)
    # A zero second vector (K-FAC's first step) gives the 1-D solution; a zero first one gives 0.
    assert lm.solve_quadratic_2d(lm.Quadratic2D(2.0, 0.0, 0.0, -1.0, 0.0)) == (0.5, 0.0)
    assert lm.solve_quadratic_2d(lm.Quadratic2D(0.0, 0.0, 0.0, 0.0, 0.0)) == (0.0, 0.0)
    t = [_torch(v) for v in (2.0, 0.0, 0.0, -1.0, 0.0)]
    w1, w2 = lm.solve_quadratic_2d(lm.Quadratic2D(*t), where=torch.where)
    assert (float(w1), float(w2)) == (0.5, 0.0)


def test_collinear_vectors_give_the_finite_one_dimensional_solution() -> None:
    """v2 = c v1 makes A singular (near a minimum in float32 it is singular to rounding); the
    span is one-dimensional and the solve returns the 1-D minimiser along v1, never inf/nan."""
    c, a, g = -0.7, 3.0, 1.5  # A = [[a, c a], [c a, c^2 a]], b = [g, c g]
    model = lm.Quadratic2D(a, c * a, c * c * a, g, c * g)
    # The 1-D branch returns w2 = 0; rounding in the collinearity test may leave ~1e-17 instead.
    assert lm.solve_quadratic_2d(model) == (pytest.approx(-g / a), pytest.approx(0.0, abs=1e-12))
    t = lm.Quadratic2D(*[torch.tensor(v, dtype=torch.float32) for v in model])
    w1, w2 = lm.solve_quadratic_2d(t, where=torch.where)
    assert float(w1) == pytest.approx(-g / a) and float(w2) == pytest.approx(0.0, abs=1e-6)
    # Slightly off collinear (float32 rounding) is still 1-D; clearly apart is the 2-D solve.
    off = model._replace(a22=c * c * a * (1 + 1e-8))
    assert lm.solve_quadratic_2d(off) == (pytest.approx(-g / a), pytest.approx(0.0, abs=1e-12))
    apart = model._replace(a22=c * c * a * 2)
    A = np.array([[apart.a11, apart.a12], [apart.a12, apart.a22]])
    np.testing.assert_allclose(
        lm.solve_quadratic_2d(apart), -np.linalg.solve(A, [apart.b1, apart.b2]), rtol=1e-12, atol=1e-12
    )


def test_same_numbers_on_jax_scalars() -> None:
    jnp = pytest.importorskip("jax.numpy")
    model = (2.0, 0.5, 1.0, -1.0, 0.3)
    w_py = lm.solve_quadratic_2d(lm.Quadratic2D(*model))
    w_jx = lm.solve_quadratic_2d(lm.Quadratic2D(*[jnp.asarray(v) for v in model]), where=jnp.where)
    np.testing.assert_allclose([float(w) for w in w_jx], w_py, rtol=1e-6)
    for rho in (0.9, 0.5, 0.1, math.nan):
        assert float(lm.lm_update(jnp.asarray(1.0), jnp.asarray(rho), RULE, where=jnp.where)) == pytest.approx(
            lm.lm_update(1.0, rho, RULE)
        )


@pytest.fixture(scope="module")
def kfac_jax_optimizer():  # type: ignore[no-untyped-def]
    jax = pytest.importorskip("jax")
    jnp = pytest.importorskip("jax.numpy")
    kfac_jax = pytest.importorskip("kfac_jax")
    return kfac_jax.Optimizer(
        value_and_grad_func=jax.value_and_grad(lambda p, b: jnp.sum(p**2)),
        l2_reg=0.01,
        use_adaptive_damping=True,
        initial_damping=1.0,
        use_adaptive_learning_rate=True,
        use_adaptive_momentum=True,
        damping_adaptation_decay=0.9,
        damping_adaptation_interval=5,
        min_damping=1e-8,
        multi_device=False,
    )


@pytest.mark.kfac_jax
def test_lm_rule_matches_kfac_jax(kfac_jax_optimizer) -> None:  # type: ignore[no-untyped-def]
    jnp = pytest.importorskip("jax.numpy")
    rule = lm.LMRule(decrease=0.9**5, increase=0.9**-5, min_damping=1e-8)
    for old, new, change, lam in [
        (1.0, 0.5, -0.6, 2.0),
        (1.0, 0.9, -0.6, 2.0),
        (1.0, 1.2, -0.6, 2.0),
        (1.0, math.nan, -0.6, 2.0),
        (1.0, 0.8, -0.3, 1e-8),
    ]:
        ref_lam, ref_rho = kfac_jax_optimizer._compute_new_damping_and_rho(
            jnp.asarray(old), jnp.asarray(new), jnp.asarray(change), jnp.asarray(lam)
        )
        rho = lm.reduction_ratio(old, new, change)
        np.testing.assert_allclose(rho, float(ref_rho), rtol=1e-6)
        np.testing.assert_allclose(lm.lm_update(lam, rho, rule), float(ref_lam), rtol=1e-6)


@pytest.mark.kfac_jax
def test_quadratic_solve_matches_kfac_jax(kfac_jax_optimizer) -> None:  # type: ignore[no-untyped-def]
    """kfac-jax's (A, D, R, b) model with l2 = 0.01 and damping 0.1; quad change without damping
    (their default include_damping_in_quad_change=False)."""
    jnp = pytest.importorskip("jax.numpy")
    A = np.array([[2.0, 0.5], [0.5, 1.0]])
    D = np.array([[1.0, 0.2], [0.2, 0.5]])
    b = np.array([-1.0, 0.3])
    lam, l2 = 0.1, 0.01
    undamped = A + l2 * D
    damped = undamped + lam * D
    for fixed in ((None, None), (-0.3, None), (None, 0.4)):
        (ref_w, ref_change) = kfac_jax_optimizer._solve_quad_model(
            tuple(jnp.asarray(m, dtype=jnp.float32) for m in (A, D, D, b)), jnp.asarray(lam), fixed
        )
        q_damped = lm.Quadratic2D(damped[0, 0], damped[0, 1], damped[1, 1], b[0], b[1])
        w = lm.solve_quadratic_2d(q_damped, fixed1=fixed[0], fixed2=fixed[1])
        np.testing.assert_allclose(w, [float(v) for v in ref_w], rtol=1e-5)
        q_undamped = lm.Quadratic2D(undamped[0, 0], undamped[0, 1], undamped[1, 1], b[0], b[1])
        np.testing.assert_allclose(q_undamped.value(*w), float(ref_change), rtol=1e-5)
