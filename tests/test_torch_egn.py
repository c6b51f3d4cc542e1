"""EGN on PyTorch against dense references: the exact damped natural gradient, the paper's
output-space formula, the jittered Cholesky variant, momentum, Armijo line search, LM damping."""

from __future__ import annotations

import pickle

import pytest
import torch

from backends.methods import egn
from backends.torch.optimizers.egn import EGN, taps_gram_applicable
from harness import api
from suites.layers import Conv2d, Flatten, Linear, ModelSpec, Reshape, Tanh
from tests.second_order_dense import (
    assert_close,
    batch_loss,
    custom_problem,
    dense_ggn,
    dense_jacobian,
    dense_q,
    loss_and_grad,
    problem_and_batch,
)

RTOL = 1e-8


def _direction(p, b, params=None, **hp):  # type: ignore[no-untyped-def]
    adapter = EGN()
    return adapter.direction(p, p.params0 if params is None else params, adapter.init(p, EGN.resolve(hp)), b)


@pytest.mark.parametrize("gram", ["dense", "taps"])
def test_direction_is_the_exact_damped_natural_gradient(tiny_suite: str, gram: str) -> None:
    p, b = problem_and_batch(tiny_suite)
    lam = 0.05
    d = _direction(p, b, damping=lam, gram=gram)
    G = dense_ggn(p, p.params0, b)
    _, g = loss_and_grad(p, p.params0, b)
    assert_close(d, torch.linalg.solve(G + lam * torch.eye(p.num_params, dtype=G.dtype), g), rtol=RTOL)


def test_direction_is_the_papers_output_space_formula(tiny_suite: str) -> None:
    """d = Jz^T solve(Q Jz Jz^T + B lam I, r), the non-symmetric system of the paper's code (LU)."""
    p, b = problem_and_batch(tiny_suite, step=4)
    lam = 0.3
    Jz = dense_jacobian(p, p.params0, b.x)
    B, C, P = Jz.shape
    z = p.fmodel(p.params0, b.x).detach()
    Q = torch.block_diag(*dense_q(p.likelihood, z))
    J = Jz.reshape(B * C, P)
    r = (torch.softmax(z, -1) - torch.nn.functional.one_hot(b.y, C)) if p.likelihood == "softmax_ce" else z - b.y
    expected = J.T @ torch.linalg.solve(Q @ J @ J.T + B * lam * torch.eye(B * C, dtype=J.dtype), r.reshape(-1))
    assert_close(_direction(p, b, damping=lam), expected, rtol=RTOL)


def test_q_jitter_solves_with_the_jittered_curvature() -> None:
    """somax v1.0's Cholesky of Q + eps I gives (Jz^T (Q + eps I) Jz / B + lam I)^{-1} g."""
    p, b = problem_and_batch("tiny-ce")
    eps, lam = 1e-3, 0.1
    Jz = dense_jacobian(p, p.params0, b.x)
    z = p.fmodel(p.params0, b.x).detach()
    Q_eps = dense_q(p.likelihood, z) + eps * torch.eye(3, dtype=z.dtype)
    G_eps = torch.einsum("bcp,bcd,bdq->pq", Jz, Q_eps, Jz) / Jz.shape[0]
    _, g = loss_and_grad(p, p.params0, b)
    expected = torch.linalg.solve(G_eps + lam * torch.eye(p.num_params, dtype=g.dtype), g)
    for gram in ("dense", "taps"):
        assert_close(_direction(p, b, damping=lam, q_jitter=eps, gram=gram), expected, rtol=RTOL)
    # ... which is not the exact direction: eps changes the curvature.
    exact = _direction(p, b, damping=lam)
    assert float((exact - expected).norm() / expected.norm()) > 1e-5


def test_conv_models_use_the_dense_jacobian_and_stay_exact() -> None:
    model = ModelSpec((64,), (Reshape((1, 8, 8)), Conv2d(1, 2, 3, stride=2), Tanh(), Flatten(), Linear(18, 10)))
    p = custom_problem("digits-mlp", model, batch_size=3)
    b = p.device_batch(0)
    assert not taps_gram_applicable(p)
    with pytest.raises(ValueError, match="taps"):
        _direction(p, b, gram="taps")
    G = dense_ggn(p, p.params0, b)
    _, g = loss_and_grad(p, p.params0, b)
    expected = torch.linalg.solve(G + 0.2 * torch.eye(p.num_params, dtype=G.dtype), g)
    assert_close(_direction(p, b, damping=0.2), expected, rtol=RTOL)


def test_bias_corrected_momentum_over_two_steps() -> None:
    p, _ = problem_and_batch("tiny-mse")
    beta, lr = 0.7, 0.5
    adapter = EGN()
    state = adapter.init(p, EGN.resolve({"momentum": beta, "lr": lr}))
    b0, b1 = p.device_batch(0), p.device_batch(1)
    d0 = _direction(p, b0, lr=lr)
    params1, state, _ = adapter.step(p, p.params0, state, b0)
    assert_close(params1, p.params0 - lr * d0, rtol=1e-12)  # m1 / (1 - beta) = d0
    d1 = _direction(p, b1, params=params1, lr=lr)
    assert_close(adapter.direction(p, params1, state, b1), (beta * (1 - beta) * d0 + (1 - beta) * d1) / (1 - beta**2))
    params2, state, _ = adapter.step(p, params1, state, b1)
    assert_close(params2, params1 - lr * (beta * (1 - beta) * d0 + (1 - beta) * d1) / (1 - beta**2), rtol=1e-10)


def test_armijo_backtracking_accepts_the_first_sufficient_decrease() -> None:
    p, b = problem_and_batch("tiny-ce")
    hp = EGN.resolve({"line_search": True, "lr": 5.0, "damping": 0.01})
    adapter = EGN()
    state = adapter.init(p, hp)
    d = adapter.direction(p, p.params0, state, b)
    new, state, stats = adapter.step(p, p.params0, state, b)
    k = int(stats["line_search_steps"])
    alpha = float(stats["lr"])
    assert 1 <= k < 15 and alpha == pytest.approx(5.0 * 0.8**k)
    _, g = loss_and_grad(p, p.params0, b)
    gd = float(g @ d)
    assert float(stats["grad_dot_direction"]) == pytest.approx(gd, rel=1e-9)  # the closed form s^T s/B - lam s^T v
    f0 = batch_loss(p, p.params0, b)
    assert batch_loss(p, new, b) <= f0 - 0.1 * alpha * gd + 1e-15
    assert batch_loss(p, p.params0 - (alpha / 0.8) * d, b) > f0 - 0.1 * (alpha / 0.8) * gd
    assert_close(new, p.params0 - alpha * d, rtol=1e-12)
    # The next step starts from min(1.5 alpha, lr).
    assert egn.initial_step_size(hp, state.step_size) == pytest.approx(min(1.5 * alpha, 5.0))


def test_line_search_gives_up_after_maxls_backtracks() -> None:
    p, b = problem_and_batch("tiny-mse")
    hp = EGN.resolve({"line_search": True, "lr": 1e6, "ls_max_steps": 3})
    _, _, stats = EGN().step(p, p.params0, EGN().init(p, hp), b)
    assert int(stats["line_search_steps"]) == 3 and float(stats["lr"]) == pytest.approx(1e6 * 0.8**3)


def test_lm_damping_uses_the_undamped_model_and_moves_both_ways() -> None:
    p, b = problem_and_batch("tiny-ce")
    adapter = EGN()
    for lr, direction in ((1.0, "down"), (200.0, "up")):
        hp = EGN.resolve({"adaptive_damping": True, "lr": lr, "damping": 0.5})
        d = adapter.direction(p, p.params0, adapter.init(p, hp), b)
        new, state, stats = adapter.step(p, p.params0, adapter.init(p, hp), b)
        G = dense_ggn(p, p.params0, b)
        _, g = loss_and_grad(p, p.params0, b)
        model = -lr * float(g @ d) + 0.5 * lr**2 * float(d @ G @ d)
        rho = (batch_loss(p, new, b) - batch_loss(p, p.params0, b)) / model
        assert float(stats["rho"]) == pytest.approx(rho, rel=1e-7)
        if direction == "down":
            assert rho > 0.75 and float(state.damping) == pytest.approx(0.5 * 0.99)
        else:
            assert rho < 0.25 and float(state.damping) == pytest.approx(0.5 * 1.01)


def test_contract_shapes_dtypes_no_mutation_and_pickle() -> None:
    from backends.torch import build_problem
    from suites import get_suite

    for dtype in ("float32", "float64"):
        p = build_problem(get_suite("tiny-ce"), seed=1, dtype=dtype)
        adapter = EGN()
        state = adapter.init(p, EGN.resolve({"momentum": 0.5, "line_search": True, "adaptive_damping": True}))
        params = p.params0
        before = params.clone()
        for t in range(3):
            b = p.device_batch(t)
            d = adapter.direction(p, params, state, b)
            assert d.shape == params.shape and d.dtype == params.dtype
            new, state, stats = adapter.step(p, params, state, b)
            assert new.dtype == params.dtype and {"loss", "lr", "damping", "rho"} <= set(stats)
            params = new
        assert torch.equal(p.params0, before)
        restored = pickle.loads(pickle.dumps(state))
        b = p.device_batch(3)
        assert torch.equal(adapter.step(p, params, state, b)[0], adapter.step(p, params, restored, b)[0])


def test_pass_counts_per_step() -> None:
    """Both Grams book the same C reverse passes for the same rows of ``Jt``: the taps Gram one
    forward and C backward passes; the dense Gram (``vmap(jacrev)``) the same plus the forward
    that ``jacrev`` runs again (issue 16: it used to book one per-sample pass)."""
    p, b = problem_and_batch("tiny-ce")
    C = 3
    counts = {}
    for gram in ("taps", "dense"):
        before = p.counters.snapshot()
        EGN().step(p, p.params0, EGN().init(p, EGN.resolve({"gram": gram})), b)
        after = p.counters.snapshot()
        counts[gram] = {k: after[k] - before[k] for k in after if after[k] != before[k]}
    assert counts["taps"] == {"forward": 1, "backward": C}
    assert counts["dense"] == {"forward": 2, "backward": C}
    assert counts["dense"]["backward"] == counts["taps"]["backward"]


def test_presets_resolve_and_take_a_step() -> None:
    p, b = problem_and_batch("tiny-ce")
    for preset in EGN.presets:
        new, _, stats = EGN().step(p, p.params0, EGN().init(p, EGN.resolve(preset=preset)), b)
        assert torch.isfinite(new).all() and batch_loss(p, new, b) < float(stats["loss"])
    assert EGN.resolve(preset="paper-code") == EGN.resolve()
    assert EGN.resolve(preset="armijo").line_search


@pytest.mark.parametrize("suite", ["digits-mlp", "diabetes-mlp"])
def test_default_egn_trains(suite: str) -> None:
    r = api.run(suite, "egn", steps=150, device="cpu", stop_at_target=False, eval_every=150)
    assert r.status in ("budget_exhausted", "target_reached", "done"), r.error
    assert r.final_train_loss is not None and r.initial_train_loss is not None
    assert r.final_train_loss < 0.6 * r.initial_train_loss
