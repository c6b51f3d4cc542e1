"""K-FAC on PyTorch: factors against curvlinops and hand computations, known-exact cases, the
dense damped preconditioner, the quadratic model, Levenberg-Marquardt damping, training.

Normalisations for the curvlinops comparisons (``KFACLinearOperator``, curvlinops-for-pytorch
3.0.1): ``fisher_type="type-2"`` is the exact expectation over labels, which is our
``estimator="fisher_exact"`` (one backward pass per column of ``Q_n``'s square root);
``separate_weight_and_bias=False`` gives the joint ``[W, b]`` block as ours; both order the
flat vector as the parameters (weight row-major, then bias), so dense matrices compare
entrywise. ``CrossEntropyLoss(reduction="mean")`` is our mean loss; ``MSELoss(reduction="mean")``
averages ``(z - y)^2`` over ``B * C`` entries, so with ``C = 1`` it is twice our
``0.5 ||z - y||^2`` and its curvature is twice ours. For Conv2d curvlinops' "expand" factors
are ``A / (B T)`` and ``sum e e^T / B``; their product equals our ``T * (G kron A)``.
"""

from __future__ import annotations

import itertools
import pickle

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from curvlinops import KFACLinearOperator

from backends.methods import kfac
from backends.torch import kfac_factors as kf
from backends.torch import likelihoods
from backends.torch.optimizers.kfac import KFAC, batch_factors
from harness import api
from suites.layers import Conv2d, Flatten, Linear, ModelSpec, Reshape, Tanh
from tests.second_order_dense import (
    assert_close,
    batch_loss,
    custom_problem,
    dense_ggn,
    dense_jacobian,
    loss_and_grad,
    problem_and_batch,
)

RTOL = 1e-8


def _curvlinops_kfac(p, b) -> torch.Tensor:  # type: ignore[no-untyped-def]
    params = [q for q in p.model.parameters() if q.requires_grad]
    loss = torch.nn.CrossEntropyLoss() if p.likelihood == "softmax_ce" else torch.nn.MSELoss()
    op = KFACLinearOperator(
        p.model,
        loss,
        params,
        [(b.x, b.y)],
        fisher_type="type-2",
        separate_weight_and_bias=False,
        check_deterministic=False,
    )
    dense = op @ torch.eye(p.num_params, dtype=torch.float64)
    return dense / 2.0 if p.likelihood == "mse" else dense  # MSELoss(mean) = 2 x our loss for C = 1


def _factors(p, params, b, estimator: str) -> list[kf.LayerStats]:  # type: ignore[no-untyped-def]
    return batch_factors(p, p.oracle(params, b, taps=True), b, estimator)


def _conv_problem():  # type: ignore[no-untyped-def]
    model = ModelSpec(
        (64,), (Reshape((1, 8, 8)), Conv2d(1, 3, 3, stride=2, padding=1), Tanh(), Flatten(), Linear(3 * 16, 10))
    )
    return custom_problem("digits-mlp", model, batch_size=4)


# --------------------------------------------------------------------------- factors


def test_exact_factors_match_curvlinops_kfac(tiny_suite: str) -> None:
    p, b = problem_and_batch(tiny_suite)
    mine = kf.dense_kfac(p.layout, _factors(p, p.params0, b, "fisher_exact"), p.num_params)
    assert_close(mine, _curvlinops_kfac(p, b), rtol=1e-10)


def test_weight_shared_linear_factors_match_curvlinops_expand() -> None:
    """A Linear layer applied at 8 positions ((B, 8, 8) inputs): T = 8, KFAC-expand."""
    model = ModelSpec((64,), (Reshape((8, 8)), Linear(8, 4), Tanh(), Flatten(), Linear(32, 10)))
    p = custom_problem("digits-mlp", model, batch_size=4)
    b = p.device_batch(0)
    stats = _factors(p, p.params0, b, "fisher_exact")
    assert [s.locations for s in stats] == [8, 1]
    assert_close(kf.dense_kfac(p.layout, stats, p.num_params), _curvlinops_kfac(p, b), rtol=1e-10)


def test_conv_factors_match_curvlinops_and_the_kfc_normalisation() -> None:
    p = _conv_problem()
    b = p.device_batch(0)
    stats = _factors(p, p.params0, b, "fisher_exact")
    assert [s.locations for s in stats] == [16, 1]
    assert_close(kf.dense_kfac(p.layout, stats, p.num_params), _curvlinops_kfac(p, b), rtol=1e-10)
    # A of the conv layer by hand: im2col patches plus a bias coordinate, divided by B * T.
    x = b.x.reshape(-1, 1, 8, 8)
    patches = F.unfold(x, 3, padding=1, stride=2).transpose(1, 2).reshape(-1, 9)
    patches = torch.cat([patches, torch.ones(patches.shape[0], 1, dtype=patches.dtype)], 1)
    assert_close(stats[0].A, patches.T @ patches / (4 * 16), rtol=1e-12)


def test_sampled_factors_are_covariances_of_sampled_label_gradients() -> None:
    """G_i = (1/B) sum_n e_n e_n^T with e_n the bias gradient of l(y^_n) (labels from the batch
    noise); A_i = (1/B) sum_n abar abar^T from the layer inputs, all by plain autograd."""
    p, b = problem_and_batch("tiny-ce")
    stats = _factors(p, p.params0, b, "fisher_gradients")
    z = p.fmodel(p.params0, b.x)
    y_hat = likelihoods.sample_targets(p.likelihood, z, b.noise[:1])[0]
    flat = p.params0.clone().requires_grad_(True)
    rows = []
    for n in range(b.x.shape[0]):
        ln = likelihoods.per_sample_loss(p.likelihood, p.fmodel(flat, b.x[n : n + 1]), y_hat[n : n + 1]).sum()
        rows.append(torch.autograd.grad(ln, flat)[0])
    J_hat = torch.stack(rows)
    W1, b1 = p.params0[:208].view(16, 13), p.params0[208:224]
    inputs = [b.x, torch.tanh(b.x @ W1.T + b1)]
    for layer, st, a in zip(p.layout.tapped, stats, inputs, strict=True):
        e = J_hat[:, layer.bias.offset : layer.bias.stop]
        assert_close(st.G, e.T @ e / e.shape[0], rtol=1e-10)
        abar = torch.cat([a, torch.ones(a.shape[0], 1, dtype=a.dtype)], 1)
        assert_close(st.A, abar.T @ abar / a.shape[0], rtol=1e-12)


def test_curvature_propagation_averages_exactly_to_the_exact_factor() -> None:
    """E[S v v^T S^T] = Q over Rademacher v: the mean over all 2^C sign patterns is exact."""
    p, b = problem_and_batch("tiny-ce")
    exact = _factors(p, p.params0, b, "fisher_exact")
    C = p.num_outputs
    totals = [torch.zeros_like(s.G) for s in exact]
    for signs in itertools.product((0.25, 0.75), repeat=C):
        noise = b.noise.clone()
        noise[0] = torch.tensor(signs, dtype=noise.dtype)
        for total, st in zip(totals, _factors(p, p.params0, b._replace(noise=noise), "curvature_prop"), strict=True):
            total += st.G / 2**C
    for total, st in zip(totals, exact, strict=True):
        assert_close(total, st.G, rtol=1e-10)


@pytest.mark.parametrize("base", ["tiny-ce", "tiny-mse"])
def test_single_linear_layer_batch_of_one_is_exact(base: str) -> None:
    """One Linear layer, B = 1: the exact-estimator block is the GGN, the sampled block is the
    outer product of the sampled-label gradient, and with exact damping the direction is the
    exact damped natural gradient (G + lam I)^{-1} g."""
    n_in, n_out = (13, 3) if base == "tiny-ce" else (10, 1)
    p = custom_problem(base, ModelSpec((n_in,), (Linear(n_in, n_out),)), batch_size=1)
    b = p.device_batch(2)
    params = p.params0
    G = dense_ggn(p, params, b)
    assert_close(kf.dense_kfac(p.layout, _factors(p, params, b, "fisher_exact"), p.num_params), G, rtol=1e-10)

    Jz = dense_jacobian(p, params, b.x)
    z = p.fmodel(params, b.x)
    r_hat = likelihoods.logit_grads(p.likelihood, z, likelihoods.sample_targets(p.likelihood, z, b.noise[:1])[0])
    g_hat = torch.einsum("ncp,nc->p", Jz, r_hat)
    sampled = kf.dense_kfac(p.layout, _factors(p, params, b, "fisher_gradients"), p.num_params)
    assert_close(sampled, torch.outer(g_hat, g_hat), rtol=1e-10)

    hp = KFAC.resolve({"estimator": "fisher_exact", "damping_form": "exact", "damping": 0.3})
    adapter = KFAC()
    d = adapter.direction(p, params, adapter.init(p, hp), b)
    _, g = loss_and_grad(p, params, b)
    assert_close(d, torch.linalg.solve(G + 0.3 * torch.eye(p.num_params, dtype=G.dtype), g), rtol=RTOL)


# --------------------------------------------------------------------------- the preconditioner


def _dense_damped_inverse(p, stats, identity_weight: float, form: str) -> torch.Tensor:  # type: ignore[no-untyped-def]
    """Block-diagonal inverse of the damped K-FAC matrix, built densely from the factors."""
    out = torch.zeros(p.num_params, p.num_params, dtype=torch.float64)
    for layer, st in zip(p.layout.tapped, stats, strict=True):
        T = st.locations
        if form == "exact":
            block = kf.densify_kron(layer, T * st.G, st.A) + identity_weight * torch.eye(
                layer.size, dtype=torch.float64
            )
        else:
            pi = np.sqrt((np.trace(st.A.numpy()) / st.A.shape[0]) / (np.trace(st.G.numpy()) / st.G.shape[0]))
            c = np.sqrt(identity_weight / T)
            eye_a, eye_g = torch.eye(st.A.shape[0], dtype=torch.float64), torch.eye(st.G.shape[0], dtype=torch.float64)
            block = kf.densify_kron(layer, T * (st.G + (c / pi) * eye_g), st.A + c * pi * eye_a)
        lo = layer.weight.offset
        out[lo : lo + layer.size, lo : lo + layer.size] = torch.linalg.inv(block)
    return out


@pytest.mark.parametrize("form", ["pi", "exact"])
def test_direction_is_the_dense_damped_kfac_inverse_times_the_gradient(tiny_suite: str, form: str) -> None:
    p, b = problem_and_batch(tiny_suite)
    hp = KFAC.resolve({"damping": 0.05, "l2_reg": 1e-3, "damping_form": form})
    adapter = KFAC()
    d = adapter.direction(p, p.params0, adapter.init(p, hp), b)
    stats = _factors(p, p.params0, b, "fisher_gradients")
    _, g = loss_and_grad(p, p.params0, b)
    expected = _dense_damped_inverse(p, stats, 0.05 + 1e-3, form) @ (g + 1e-3 * p.params0)
    assert_close(d, expected, rtol=RTOL)


def test_conv_direction_is_the_dense_damped_kfac_inverse_times_the_gradient() -> None:
    p = _conv_problem()
    b = p.device_batch(1)
    adapter = KFAC()
    d = adapter.direction(p, p.params0, adapter.init(p, KFAC.resolve({"damping": 0.02})), b)
    _, g = loss_and_grad(p, p.params0, b)
    expected = _dense_damped_inverse(p, _factors(p, p.params0, b, "fisher_gradients"), 0.02, "pi") @ g
    assert_close(d, expected, rtol=RTOL)


def test_untapped_parameters_get_the_damped_identity() -> None:
    """Parameters outside tapped layers are scaled by ``untapped_scale`` (1 / (lam + eta) in the
    adapter); the suites' layer vocabulary has none yet, so a layout hides the first layer."""
    from types import SimpleNamespace

    p, b = problem_and_batch("tiny-ce")
    stats = _factors(p, p.params0, b, "fisher_gradients")
    layer0, layer1 = p.layout.tapped
    fake = SimpleNamespace(tapped=(layer1,), untapped=(layer0.weight, layer0.bias))
    inv = kf.layer_inverse(stats[1], torch.tensor(0.1, dtype=torch.float64))
    v = torch.linspace(-1, 1, p.num_params, dtype=torch.float64)
    out = kf.precondition(fake, [inv], v, untapped_scale=4.0)  # type: ignore[arg-type]
    assert_close(out[: layer0.size], 4.0 * v[: layer0.size], rtol=1e-15)
    full = kf.precondition(p.layout, [kf.layer_inverse(s, torch.tensor(0.1, dtype=torch.float64)) for s in stats], v)
    assert_close(out[layer0.size :], full[layer0.size :], rtol=1e-15)


# --------------------------------------------------------------------------- moving averages, schedules


def test_ema_weights_follow_the_paper_and_kfac_jax() -> None:
    paper = KFAC.resolve({"ema_mode": "paper", "curvature_ema": 0.95})
    assert [kfac.ema_weight(k, paper) for k in (1, 2, 4)] == [1.0, 0.5, 0.25]
    assert kfac.ema_weight(100, paper) == pytest.approx(0.05)
    norm = KFAC.resolve({"ema_mode": "normalized", "curvature_ema": 0.95})
    # kfac-jax's WeightedMovingAverage: w_k = 0.95 w_{k-1} + 1, new-value weight 1 / w_k.
    w = 0.0
    for k in range(1, 6):
        w = 0.95 * w + 1.0
        assert kfac.ema_weight(k, norm) == pytest.approx(1.0 / w, rel=1e-14)


def test_factor_averages_and_the_inverse_schedule_over_three_steps() -> None:
    p, _ = problem_and_batch("tiny-ce")
    hp = KFAC.resolve({"inverse_update_period": 2, "inverse_warmup_steps": 0, "ema_mode": "normalized"})
    adapter = KFAC()
    state = adapter.init(p, hp)
    params = p.params0
    expected = None
    inverses = []
    for t in range(3):
        b = p.device_batch(t)
        new = _factors(p, params, b, hp.estimator)
        w = kfac.ema_weight(t + 1, hp)
        expected = (
            new
            if expected is None
            else [
                kf.LayerStats((1 - w) * e.A + w * n.A, (1 - w) * e.G + w * n.G, 1)
                for e, n in zip(expected, new, strict=True)
            ]
        )
        params, state, _ = adapter.step(p, params, state, b)
        assert state.factors is not None
        for got, exp in zip(state.factors, expected, strict=True):
            assert_close(got.A, exp.A, rtol=1e-12)
            assert_close(got.G, exp.G, rtol=1e-12)
        inverses.append(state.inverses)
    assert inverses[1] is inverses[0]  # t = 1: cached
    assert inverses[2] is not inverses[1]  # t = 2: refreshed
    assert kfac.refresh_inverses(0, hp) and not kfac.refresh_inverses(1, hp)
    paper = KFAC.resolve(preset="paper")
    assert [t for t in range(45) if kfac.refresh_inverses(t, paper)] == [0, 1, 2, 20, 40]


# --------------------------------------------------------------------------- the quadratic model


def test_first_step_size_and_second_step_coefficients_minimise_the_dense_model(tiny_suite: str) -> None:
    p, _ = problem_and_batch(tiny_suite)
    lam, eta = 0.1, 1e-3
    hp = KFAC.resolve({"damping": lam, "l2_reg": eta, "adaptive_damping": False})
    adapter = KFAC()
    state = adapter.init(p, hp)
    b0, b1 = p.device_batch(0), p.device_batch(1)

    # Step 1: delta = -alpha p with alpha = grad_h^T p / (p^T (G + (lam + eta) I) p).
    params0 = p.params0
    d0 = adapter.direction(p, params0, state, b0)
    params1, state, stats = adapter.step(p, params0, state, b0)
    G = dense_ggn(p, params0, b0)
    _, g = loss_and_grad(p, params0, b0)
    gh = g + eta * params0
    alpha = float(gh @ d0 / (d0 @ G @ d0 + (lam + eta) * d0 @ d0))
    assert float(stats["lr"]) == pytest.approx(alpha, rel=1e-9)
    assert_close(params1, params0 - alpha * d0, rtol=1e-12)

    # Step 2: (w1, w2) solve the dense 2x2 system over span{p, delta_prev}.
    p1 = adapter.direction(p, params1, state, b1)
    params2, state, stats = adapter.step(p, params1, state, b1)
    G = dense_ggn(p, params1, b1)
    _, g = loss_and_grad(p, params1, b1)
    gh = g + eta * params1
    V = torch.stack([p1, params1 - params0], 1)
    A = V.T @ (G + (lam + eta) * torch.eye(p.num_params, dtype=G.dtype)) @ V
    w = -torch.linalg.solve(A, V.T @ gh)
    assert float(-stats["lr"]) == pytest.approx(float(w[0]), rel=1e-8)
    assert float(stats["momentum"]) == pytest.approx(float(w[1]), rel=1e-8)
    assert_close(params2, params1 + V @ w, rtol=1e-10)
    # The paper's model change includes lam: M(delta) = grad_h^T delta + 1/2 w^T A w.
    assert float(stats["model_change"]) == pytest.approx(float(w @ V.T @ gh + 0.5 * w @ A @ w), rel=1e-8)


def test_lm_damping_rises_after_a_bad_step_and_falls_after_a_good_one() -> None:
    p, b = problem_and_batch("tiny-ce")
    adapter = KFAC()
    common = {"damping": 1.0, "damping_adaptation_interval": 1, "damping_adaptation_decay": 0.9}
    # A huge fixed step increases the batch loss: rho < 1/4, lambda / 0.9.
    bad = KFAC.resolve({**common, "adaptive_lr": False, "adaptive_momentum": False, "lr": 50.0})
    new, state, stats = adapter.step(p, p.params0, adapter.init(p, bad), b)
    assert batch_loss(p, new, b) > batch_loss(p, p.params0, b)
    assert float(stats["rho"]) < 0.25
    assert float(state.damping) == pytest.approx(1.0 / 0.9)
    # The quadratic-model step on the same batch is predicted well: rho > 3/4, lambda * 0.9.
    good = KFAC.resolve(common)
    new, state, stats = adapter.step(p, p.params0, adapter.init(p, good), b)
    assert batch_loss(p, new, b) < batch_loss(p, p.params0, b)
    assert float(stats["rho"]) > 0.75
    assert float(state.damping) == pytest.approx(0.9)
    # Off-interval steps do not adapt.
    quiet = KFAC.resolve({**common, "damping_adaptation_interval": 2})
    _, state, stats = adapter.step(p, p.params0, adapter.init(p, quiet), b)
    assert float(state.damping) == 1.0 and np.isnan(float(stats["rho"]))


# --------------------------------------------------------------------------- contract and training


def test_contract_shapes_dtypes_no_mutation_and_pickle() -> None:
    for dtype in ("float32", "float64"):
        p = custom_problem("tiny-ce", ModelSpec((13,), (Linear(13, 8), Tanh(), Linear(8, 3))), batch_size=8)
        if dtype == "float32":
            from backends.torch import build_problem

            p = build_problem(p.suite, seed=3, dtype="float32")
        adapter = KFAC()
        state = adapter.init(p, KFAC.resolve())
        params = p.params0
        before = params.clone()
        for t in range(3):
            b = p.device_batch(t)
            x_before = b.x.clone()
            d = adapter.direction(p, params, state, b)
            assert d.shape == params.shape and d.dtype == params.dtype
            new, state, stats = adapter.step(p, params, state, b)
            assert new.shape == params.shape and new.dtype == params.dtype
            assert torch.equal(b.x, x_before)
            assert {"loss", "lr", "momentum", "damping", "rho", "model_change"} <= set(stats)
            params = new
        assert torch.equal(p.params0, before)
        restored = pickle.loads(pickle.dumps(state))
        a = adapter.step(p, params, state, p.device_batch(3))[0]
        c = adapter.step(p, params, restored, p.device_batch(3))[0]
        assert torch.equal(a, c)


def test_pass_counts_per_step() -> None:
    """One forward serves loss, gradient, taps; one more backward for the sampled factor; one
    JVP at step 1 (no previous update), two after; one forward on LM steps (every 5th)."""
    p, _ = problem_and_batch("tiny-ce")
    adapter = KFAC()
    state = adapter.init(p, KFAC.resolve())
    params = p.params0
    counts = []
    for t in range(5):
        before = p.counters.snapshot()
        params, state, _ = adapter.step(p, params, state, p.device_batch(t))
        after = p.counters.snapshot()
        counts.append({k: after[k] - before[k] for k in after if after[k] != before[k]})
    assert counts[0] == {"forward": 1, "backward": 2, "jvp": 1}
    assert counts[1] == counts[3] == {"forward": 1, "backward": 2, "jvp": 2}
    assert counts[4] == {"forward": 2, "backward": 2, "jvp": 2}


@pytest.mark.parametrize("suite", ["digits-mlp", "diabetes-mlp"])
def test_default_kfac_trains(suite: str) -> None:
    r = api.run(suite, "kfac", steps=150, device="cpu", stop_at_target=False, eval_every=150)
    assert r.status in ("budget_exhausted", "target_reached", "done"), r.error
    assert r.final_train_loss is not None and r.initial_train_loss is not None
    assert r.final_train_loss < 0.6 * r.initial_train_loss


def test_presets_resolve_and_take_a_step() -> None:
    p, b = problem_and_batch("tiny-mse")
    for preset in KFAC.presets:
        hp = KFAC.resolve(preset=preset)
        new, _, stats = KFAC().step(p, p.params0, KFAC().init(p, hp), b)
        assert torch.isfinite(new).all() and float(stats["loss"]) > 0
    assert KFAC.resolve(preset="kfac-jax").damping_adaptation_decay == 0.9
    assert kfac.lm_rule(KFAC.resolve(preset="paper")).decrease == pytest.approx((19 / 20) ** 5)
