"""AdamQLR on PyTorch: the Adam direction against torch.optim.Adam and optax, the step size as
the minimiser of the dense damped quadratic model (Fisher and Hessian), the LM rule, training."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest
import torch

from backends import damping as lm
from backends.methods import adamqlr
from backends.torch.optimizers.adamqlr import AdamQLR, AdamQLRState, adam_direction
from harness import api
from tests.second_order_dense import assert_close, batch_loss, dense_ggn, loss_and_grad, problem_and_batch

RTOL = 1e-8


def test_adam_direction_matches_torch_adam_and_optax(rng: np.random.Generator) -> None:
    """d_t = m^_t / (sqrt(v^_t) + eps): torch.optim.Adam's step with lr = 1, optax scale_by_adam."""
    optax = pytest.importorskip("optax")
    jnp = pytest.importorskip("jax.numpy")
    hp = AdamQLR.resolve({"b1": 0.8, "b2": 0.95, "eps": 1e-3})
    grads = [torch.as_tensor(rng.normal(size=7)) for _ in range(4)]
    p = torch.zeros(7, dtype=torch.float64, requires_grad=True)
    ref = torch.optim.Adam([p], lr=1.0, betas=(0.8, 0.95), eps=1e-3)
    tx = optax.scale_by_adam(b1=0.8, b2=0.95, eps=1e-3)
    ostate = tx.init(jnp.zeros(7, dtype=jnp.float32))
    zeros = torch.zeros(7, dtype=torch.float64)
    state = AdamQLRState(hp, 0, zeros, zeros.clone(), torch.tensor(1.0))
    for g in grads:
        mu, nu, d = adam_direction(hp, state, g)
        state = state._replace(steps=state.steps + 1, mu=mu, nu=nu)
        before = p.detach().clone()
        p.grad = g.clone()
        ref.step()
        assert_close(d, before - p.detach(), rtol=1e-12)
        update, ostate = tx.update(jnp.asarray(g.numpy(), dtype=jnp.float32), ostate)
        np.testing.assert_allclose(np.asarray(update), d.numpy(), rtol=2e-5)


@pytest.mark.parametrize("curvature", ["fisher", "hessian"])
def test_step_minimises_the_dense_damped_quadratic_model(tiny_suite: str, curvature: str) -> None:
    p, b = problem_and_batch(tiny_suite)
    lam = 0.3
    adapter = AdamQLR()
    state = adapter.init(p, AdamQLR.resolve({"damping": lam, "curvature": curvature}))
    # A step from a state with history, so that d is not just g / (|g| + eps).
    params, state, _ = adapter.step(p, p.params0, state, p.device_batch(5))
    lam = float(state.damping)  # adapted by the first step
    d = adapter.direction(p, params, state, b)
    new, new_state, stats = adapter.step(p, params, state, b)

    loss, g = loss_and_grad(p, params, b)
    if curvature == "fisher":
        C = dense_ggn(p, params, b)
    else:
        C = torch.autograd.functional.hessian(
            lambda q: (
                torch.nn.functional.cross_entropy(p.fmodel(q, b.x), b.y)
                if p.likelihood == "softmax_ce"
                else 0.5 * (p.fmodel(q, b.x) - b.y).pow(2).sum(-1).mean()
            ),
            params,
        )
    damped = float(d @ C @ d + lam * d @ d)
    s = -float(g @ d) / damped
    assert float(stats["lr"]) == pytest.approx(-s, rel=RTOL)
    assert float(stats["curvature"]) == pytest.approx(float(d @ C @ d), rel=RTOL)
    assert_close(new, params + s * d, rtol=1e-12)
    # s is the stationary point of M(s) = s g^T d + 1/2 s^2 (d^T C d + lam |d|^2) ...
    assert float(g @ d) + s * damped == pytest.approx(0.0, abs=1e-12 * abs(float(g @ d)))
    # ... and rho compares the true change with M(s) (lambda included).
    model_change = s * float(g @ d) + 0.5 * s * s * damped
    assert float(stats["model_change"]) == pytest.approx(model_change, rel=RTOL)
    rho = (batch_loss(p, new, b) - float(loss)) / model_change
    assert float(stats["rho"]) == pytest.approx(rho, rel=1e-7)
    assert float(new_state.damping) == pytest.approx(float(lm.lm_update(lam, rho, adamqlr.lm_rule(state.hparams))))


def test_damping_doubles_after_a_loss_increase_and_halves_after_a_good_step() -> None:
    """The untuned rule over a short run: every step follows the LM rule with 2.0 / 0.5, a step
    that raised the batch loss (rho < 0, since M(s*) < 0) always doubles lambda, and both moves occur."""
    p, _ = problem_and_batch("digits-mlp")
    adapter = AdamQLR()
    state = adapter.init(p, AdamQLR.resolve(preset="untuned"))
    params = p.params0
    seen = set()
    for t in range(50):
        b = p.device_batch(t)
        lam = float(state.damping)
        new, state, stats = adapter.step(p, params, state, b)
        rho, lam_new = float(stats["rho"]), float(state.damping)
        increased = batch_loss(p, new, b) > batch_loss(p, params, b)
        if increased:
            assert rho < 0 and lam_new == pytest.approx(2.0 * lam)
        expected = lam * (0.5 if rho > 0.75 else 2.0 if rho < 0.25 else 1.0)
        assert lam_new == pytest.approx(max(expected, 1e-8))
        seen.add("up" if lam_new > lam else "down" if lam_new < lam else "keep")
        params = new
    assert {"up", "down"} <= seen


def test_nan_rho_keeps_the_damping_as_the_papers_code() -> None:
    rule = adamqlr.lm_rule(AdamQLR.resolve())
    assert lm.lm_update(0.1, math.nan, rule) == 0.1
    assert lm.lm_update(0.1, 0.9, rule) == pytest.approx(0.05)
    assert lm.lm_update(1e-8, 0.9, rule) == 1e-8  # the 1e-8 floor


def test_lr_clipping_and_presets() -> None:
    p, b = problem_and_batch("tiny-ce")
    free = AdamQLR().step(p, p.params0, AdamQLR().init(p, AdamQLR.resolve()), b)[2]
    assert float(free["lr"]) > 0.01
    clipped = AdamQLR().step(p, p.params0, AdamQLR().init(p, AdamQLR.resolve({"lr_clipping": 0.01})), b)[2]
    assert float(clipped["lr"]) == pytest.approx(0.01)
    tuned = AdamQLR.resolve(preset="tuned")
    assert (tuned.damping, tuned.damping_decrease, tuned.damping_increase) == (1.0, 0.95, 1.0526)
    assert AdamQLR.resolve(preset="untuned-lr-clipping").lr_clipping == 0.1


def test_fixed_damping_skips_the_extra_forward() -> None:
    p, b = problem_and_batch("tiny-mse")
    for adaptive, forwards in ((True, 2), (False, 1)):
        before = p.counters.snapshot()
        AdamQLR().step(p, p.params0, AdamQLR().init(p, AdamQLR.resolve({"adaptive_damping": adaptive})), b)
        after = p.counters.snapshot()
        assert after["forward"] - before["forward"] == forwards
        assert after["jvp"] - before["jvp"] == 1 and after["backward"] - before["backward"] == 1


def test_contract_shapes_dtypes_no_mutation_and_pickle() -> None:
    from backends.torch import build_problem
    from suites import get_suite

    for dtype in ("float32", "float64"):
        p = build_problem(get_suite("tiny-ce"), seed=1, dtype=dtype)
        adapter = AdamQLR()
        state = adapter.init(p, AdamQLR.resolve())
        params = p.params0
        before = params.clone()
        for t in range(3):
            b = p.device_batch(t)
            d = adapter.direction(p, params, state, b)
            assert d.shape == params.shape and d.dtype == params.dtype
            new, state, stats = adapter.step(p, params, state, b)
            assert new.dtype == params.dtype and {"loss", "lr", "damping", "rho", "curvature"} <= set(stats)
            # The update is along the direction with lr = -s (capabilities.step_along_direction).
            assert_close(new, params - stats["lr"].to(params.dtype) * d, rtol=1e-5 if dtype == "float32" else 1e-12)
            params = new
        assert torch.equal(p.params0, before)
        restored = pickle.loads(pickle.dumps(state))
        b = p.device_batch(3)
        assert torch.equal(adapter.step(p, params, state, b)[0], adapter.step(p, params, restored, b)[0])


@pytest.mark.parametrize("suite", ["digits-mlp", "diabetes-mlp"])
def test_default_adamqlr_trains(suite: str) -> None:
    r = api.run(suite, "adamqlr", steps=150, device="cpu", stop_at_target=False, eval_every=150)
    assert r.status in ("budget_exhausted", "target_reached", "done"), r.error
    assert r.final_train_loss is not None and r.initial_train_loss is not None
    assert r.final_train_loss < 0.6 * r.initial_train_loss
